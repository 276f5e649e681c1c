package discovery_test

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery"
)

// A Git subscription over SSH: the sshPrivateKey Secret's key opens the
// repository of a host in CARAVAN_SSH_KNOWN_HOSTS; a host not in it is
// refused with a condition saying so, and the key never shows.
func TestSSHGitWarehouse(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	g := testenv.GitServer(t)
	g.CreateRepo(t, "config")
	head := g.Seed(t, "config", map[string]string{"env/values.yaml": "1"}, "first")
	pemKey, pub := testenv.NewSSHKey(t)
	known := testenv.SSHGitServer(t, g, pub)
	unknown := testenv.SSHGitServer(t, g, pub)
	khFile := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(khFile, []byte(known.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	startReplica(t, srv, "r1", func(c *discovery.Config) { c.SSHKnownHosts = khFile })
	gw.apply(t, &model.Secret{
		TypeMeta:   model.TypeMeta{Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "deploy-key", Labels: map[string]string{model.LabelCredType: model.CredTypeGit}},
		StringData: map[string]string{"repoURL": `^ssh://git@127\.0\.0\.1:\d+/config\.git$`, "repoURLIsRegex": "true", "sshPrivateKey": string(pemKey)},
	})
	for name, url := range map[string]string{"known": known.URL("config"), "unknown": unknown.URL("config")} {
		w := &model.Warehouse{TypeMeta: model.TypeMeta{Kind: model.KindWarehouse}, ObjectMeta: model.ObjectMeta{Name: name}}
		w.Spec.Subscriptions = []model.RepoSubscription{{Git: &model.GitSubscription{RepoURL: url, Branch: "main"}}}
		gw.apply(t, w)
	}
	eventually(t, "freight over SSH", func() bool { return fw.count() == 1 })
	if f := gw.freight(t, fw.events()[0].Event.Freight); len(f.Commits) != 1 || f.Commits[0].ID != head {
		t.Fatalf("freight %+v", f)
	}
	var msg string
	eventually(t, "the unknown host's condition", func() bool {
		msg = condition(gw.status(t, "unknown")).Message
		return strings.Contains(msg, "is not in the known hosts")
	})
	if strings.Contains(msg, "PRIVATE KEY") || strings.Contains(msg, string(pemKey[40:80])) {
		t.Fatalf("condition shows the key: %s", msg)
	}
}

// Image credentials from a Docker config JSON Secret (.dockerconfigjson).
func TestDockerConfigCredentials(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	host := pushPrivate(t, "bot", "s3cret", "private/app", "v1.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	startReplica(t, srv, "r1", nil)
	auth := base64.StdEncoding.EncodeToString([]byte("bot:s3cret"))
	gw.apply(t, &model.Secret{
		TypeMeta:   model.TypeMeta{Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "pull-secret", Labels: map[string]string{model.LabelCredType: model.CredTypeImage}},
		StringData: map[string]string{"repoURL": host + "/private/app", ".dockerconfigjson": fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)},
	})
	gw.apply(t, imageWarehouse("private", model.ImageSubscription{RepoURL: host + "/private/app"}))
	eventually(t, "freight with the Docker config's credentials", func() bool { return fw.count() == 1 })
}
