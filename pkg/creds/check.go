package creds

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Problem is a field of a credentials Secret that cannot work. Messages
// never quote the field's value.
type Problem struct {
	Field   string // the data key, e.g. sshPrivateKey
	Message string
}

// Check finds, without any request, what makes a Secret labelled as git,
// image or helm credentials unusable: a repoURL expression that does not
// compile, a key that does not parse, a missing companion field, a kind
// for the wrong repository type. Other Secrets have no problems.
func Check(s *model.Secret) []Problem {
	typ := s.Labels[model.LabelCredType]
	if typ != model.CredTypeGit && typ != model.CredTypeImage && typ != model.CredTypeHelm {
		return nil
	}
	var out []Problem
	add := func(field, format string, args ...any) {
		out = append(out, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if isRegex(s) {
		if _, err := regexp.Compile(value(s, KeyRepoURL)); err != nil {
			add(KeyRepoURL, "not a regular expression (repoURLIsRegex is true): %v", err)
		}
	}
	onlyFor := func(field string, git bool) bool {
		if (typ == model.CredTypeGit) != git {
			want := "git"
			if !git {
				want = "image and helm"
			}
			add(field, "is for %s credentials, not %s", want, typ)
			return false
		}
		return true
	}
	if k, ok := s.Value(KeySSHPrivateKey); ok && strings.TrimSpace(string(k)) != "" && onlyFor(KeySSHPrivateKey, true) {
		if _, err := ssh.ParseRawPrivateKey(k); err != nil {
			add(KeySSHPrivateKey, "not a PEM-encoded SSH private key without passphrase")
		}
	}
	if value(s, KeyGitHubAppPrivateKey) != "" || value(s, KeyGitHubAppID) != "" || value(s, KeyGitHubAppClientID) != "" {
		if onlyFor(KeyGitHubAppPrivateKey, true) {
			if value(s, KeyGitHubAppClientID) == "" && value(s, KeyGitHubAppID) == "" {
				add(KeyGitHubAppClientID, "missing (or %s)", KeyGitHubAppID)
			}
			if id := value(s, KeyGitHubAppInstallationID); id == "" || strings.Trim(id, "0123456789") != "" {
				add(KeyGitHubAppInstallationID, "must be the installation's number")
			}
			k, _ := s.Value(KeyGitHubAppPrivateKey)
			if _, err := parseRSAKey(k); err != nil {
				add(KeyGitHubAppPrivateKey, "%v", err)
			}
		}
	}
	if value(s, KeyAWSAccessKeyID) != "" || value(s, KeyAWSSecretAccessKey) != "" {
		if onlyFor(KeyAWSAccessKeyID, false) {
			for _, k := range []string{KeyAWSAccessKeyID, KeyAWSSecretAccessKey} {
				if value(s, k) == "" {
					add(k, "missing")
				}
			}
		}
	}
	if value(s, KeyGCPServiceAccountKey) != "" && onlyFor(KeyGCPServiceAccountKey, false) {
		if _, err := garConfig(s); err != nil {
			add(KeyGCPServiceAccountKey, "not base64 of a service account key (JSON with client_email and private_key)")
		}
	}
	if raw, ok := s.Value(KeyDockerConfigJSON); ok && strings.TrimSpace(string(raw)) != "" && onlyFor(KeyDockerConfigJSON, false) {
		var cfg struct {
			Auths map[string]json.RawMessage `json:"auths"`
		}
		if err := json.Unmarshal(raw, &cfg); err != nil || cfg.Auths == nil {
			add(KeyDockerConfigJSON, `not a Docker config JSON ({"auths": {...}})`)
		}
	}
	return out
}
