package creds

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/storage/memory"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// TestSSHKnownHosts clones over SSH (a real SSH server running git
// upload-pack) with an sshPrivateKey Secret: it works when the host key
// is in the configured known hosts, and fails with a clear error when no
// known hosts are configured, when the host is not in them, or when its
// key differs.
func TestSSHKnownHosts(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t)
	g.CreateRepo(t, "app")
	g.Seed(t, "app", map[string]string{"a.txt": "a"}, "first")
	pemKey, pub := testenv.NewSSHKey(t)
	srv := testenv.SSHGitServer(t, g, pub)
	other := testenv.SSHGitServer(t, g, pub)
	url := srv.URL("app")

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", srv.KnownHostsLine())
	// The other server's key under this server's address.
	wrong := write("wrong", knownhosts.Line([]string{knownhosts.Normalize(strings.TrimPrefix(strings.TrimSuffix(url, "/app.git"), "ssh://git@"))}, other.HostKey()))
	elsewhere := write("elsewhere", other.KnownHostsLine())

	for _, tc := range []struct {
		name, file, want string
	}{
		{"known", good, ""},
		{"none configured", "", "CARAVAN_SSH_KNOWN_HOSTS"},
		{"unknown host", elsewhere, "is not in the known hosts"},
		{"changed key", wrong, "differs from the known hosts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kh, err := KnownHosts(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			l := lister{"demo": {secret("deploy-key", model.CredTypeGit, map[string]string{"repoURL": url, "sshPrivateKey": string(pemKey)})}}
			c, err := NewFinder(l, Options{KnownHosts: kh}).Find(t.Context(), "demo", model.CredTypeGit, url)
			if err != nil {
				t.Fatal(err)
			}
			auth, err := GitAuth(c, url)
			if err != nil {
				t.Fatal(err)
			}
			_, err = git.CloneContext(t.Context(), memory.NewStorage(), nil, &git.CloneOptions{URL: url, Auth: auth})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("clone: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrUnknownHost) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("clone error %v, want ErrUnknownHost with %q", err, tc.want)
			}
		})
	}
}

func TestSSHWrongKey(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t)
	g.CreateRepo(t, "app")
	g.Seed(t, "app", map[string]string{"a.txt": "a"}, "first")
	_, pub := testenv.NewSSHKey(t)
	stranger, _ := testenv.NewSSHKey(t)
	srv := testenv.SSHGitServer(t, g, pub)
	kh, err := KnownHosts(writeFile(t, srv.KnownHostsLine()))
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL("app")
	auth, err := GitAuth(&Credentials{SSHPrivateKey: stranger, HostKeyCallback: kh, Secret: "demo/x"}, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := git.CloneContext(t.Context(), memory.NewStorage(), nil, &git.CloneOptions{URL: url, Auth: auth}); err == nil {
		t.Fatal("clone with an unauthorised key succeeded")
	}
	if srv.Sessions() != 0 {
		t.Errorf("%d git commands ran for an unauthorised key", srv.Sessions())
	}
}

// TestGitAuthMismatch: an SSH key for an https URL and a password for an
// SSH URL are errors naming the Secret.
func TestGitAuthMismatch(t *testing.T) {
	t.Parallel()
	if _, err := GitAuth(&Credentials{SSHPrivateKey: []byte("k"), Secret: "demo/key"}, "https://example.com/a.git"); err == nil || !strings.Contains(err.Error(), "demo/key") {
		t.Errorf("ssh key for https: %v", err)
	}
	if _, err := GitAuth(&Credentials{Username: "u", Password: "p", Secret: "demo/pw"}, "git@example.com:a/b.git"); err == nil || !strings.Contains(err.Error(), "demo/pw") {
		t.Errorf("password for ssh: %v", err)
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
