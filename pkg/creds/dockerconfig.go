package creds

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
)

// dockerHubHosts are the names Docker Hub goes by in Docker configs.
var dockerHubHosts = map[string]bool{"docker.io": true, "index.docker.io": true, "registry-1.docker.io": true}

// dockerConfig reads the entry of repoURL's registry from a Docker config
// (.dockerconfigjson, as a kubernetes.io/dockerconfigjson Secret holds it):
// "auths" by registry host, each with username and password or auth
// (base64 of user:password).
func dockerConfig(s *model.Secret, repoURL string) (*Credentials, error) {
	raw, _ := s.Value(KeyDockerConfigJSON)
	var cfg struct {
		Auths map[string]struct {
			Username string `json:"username"`
			Password string `json:"password"`
			Auth     string `json:"auth"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("field %s: not a Docker config JSON: %w", KeyDockerConfigJSON, err)
	}
	want := registryHost(repoURL)
	if !strings.Contains(want, ".") && !strings.Contains(want, ":") && want != "localhost" {
		want = "docker.io" // a Docker Hub short name
	}
	for k, a := range cfg.Auths {
		h := registryHost(k)
		if h != want && (!dockerHubHosts[h] || !dockerHubHosts[want]) {
			continue
		}
		c := &Credentials{Username: a.Username, Password: a.Password, Secret: s.Namespace + "/" + s.Name}
		if a.Auth != "" {
			b, err := base64.StdEncoding.DecodeString(a.Auth)
			user, pass, ok := strings.Cut(string(b), ":")
			if err != nil || !ok {
				return nil, fmt.Errorf("field %s: auths[%q].auth is not base64 of user:password", KeyDockerConfigJSON, k)
			}
			c.Username, c.Password = user, pass
		}
		return c, nil
	}
	return nil, fmt.Errorf("field %s: no entry in auths for registry %q", KeyDockerConfigJSON, want)
}
