//go:build e2e

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

// TestSSHCredentialsE2E runs the shipped binary with CARAVAN_SSH_KNOWN_HOSTS:
// a Warehouse subscribed over SSH with an sshPrivateKey Secret gets its
// freight from the host the known_hosts file lists, and one on a host it
// does not list reports a condition saying so.
func TestSSHCredentialsE2E(t *testing.T) {
	bin, root := buildCaravan(t)
	g := testenv.GitServer(t)
	g.CreateRepo(t, "config")
	g.Seed(t, "config", map[string]string{"env/values.yaml": "1"}, "first")
	pemKey, pub := testenv.NewSSHKey(t)
	known := testenv.SSHGitServer(t, g, pub)
	unknown := testenv.SSHGitServer(t, g, pub)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(known.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startDemo(t, bin, root, "CARAVAN_SSH_KNOWN_HOSTS="+kh)
	indent := "    " + strings.ReplaceAll(strings.TrimSpace(string(pemKey)), "\n", "\n    ")
	manifests := `apiVersion: v1
kind: Secret
metadata:
  name: deploy-key
  namespace: demo
  labels:
    kargo.akuity.io/cred-type: git
stringData:
  repoURL: ^ssh://git@127\.0\.0\.1:[0-9]+/config\.git$
  repoURLIsRegex: "true"
  sshPrivateKey: |
` + indent + `
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: over-ssh
  namespace: demo
spec:
  subscriptions:
  - git:
      repoURL: ` + known.URL("config") + `
      branch: main
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: unknown-host
  namespace: demo
spec:
  subscriptions:
  - git:
      repoURL: ` + unknown.URL("config") + `
      branch: main
`
	f := filepath.Join(t.TempDir(), "ssh.yaml")
	if err := os.WriteFile(f, []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := s.cli("apply", "-f", f); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		found := false
		for _, fr := range s.freight("demo") {
			found = found || fr.Origin.Name == "over-ssh" && len(fr.Commits) == 1
		}
		whs, _ := s.cli("get", "warehouses", "-p", "demo", "-o", "yaml")
		if found && strings.Contains(whs, "is not in the known hosts") {
			if strings.Contains(whs, "PRIVATE KEY") || strings.Contains(s.logs.String(), string(pemKey[40:80])) {
				t.Fatal("the private key shows in the warehouses or the log")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no freight over SSH and unknown-host condition within 2 min:\n%s", whs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
