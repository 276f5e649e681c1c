package testenv_test

import (
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

func TestGitServerAuth(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t, testenv.WithBasicAuth("bot", "s3cret"))
	url := g.CreateRepo(t, "demo")
	if want := g.URL("demo.git"); url != want {
		t.Fatalf("CreateRepo returned %s, want %s", url, want)
	}
	sha := g.Seed(t, "demo", map[string]string{"README.md": "hello\n", "env/prod/values.yaml": "tag: v1\n"}, "initial")
	g.Tag(t, "demo", "v1.0.0", sha)
	if got := g.Head(t, "demo"); got != sha {
		t.Fatalf("head %s, want %s", got, sha)
	}

	// The status codes tell a missing password from a wrong one.
	for _, c := range []struct {
		user, password string
		want           int
	}{{"", "", http.StatusUnauthorized}, {"bot", "wrong", http.StatusForbidden}, {"bot", "s3cret", http.StatusOK}} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/info/refs?service=git-upload-pack", nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.user != "" {
			req.SetBasicAuth(c.user, c.password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("user %q password %q: status %d, want %d", c.user, c.password, resp.StatusCode, c.want)
		}
	}

	tests := []struct {
		name    string
		url     string
		wantErr string
	}{
		{name: "credentials", url: g.AuthURL("demo")},
		{name: "no credentials", url: g.URL("demo"), wantErr: "could not read Username"},
		{name: "wrong password", url: strings.Replace(g.AuthURL("demo"), "s3cret", "wrong", 1), wantErr: "403"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "clone")
			before := g.Requests()
			_, err := run(t, "", "git", "clone", "--quiet", tt.url, dir)
			if g.Requests() == before {
				t.Error("clone made no HTTP request")
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("clone: got %v, want an error mentioning %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "env", "prod", "values.yaml"))
			if err != nil || string(got) != "tag: v1\n" {
				t.Fatalf("cloned values.yaml = %q, %v", got, err)
			}
			if out, _ := run(t, dir, "git", "rev-parse", "v1.0.0"); out != sha {
				t.Fatalf("tag v1.0.0 at %s, want %s", out, sha)
			}
		})
	}
}

func TestGitServerPushAndSeedAgain(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t)
	g.CreateRepo(t, "org/app")
	first := g.Seed(t, "org/app", map[string]string{"a.txt": "1"}, "first")

	// A client pushes over HTTP; the next Seed builds on its commit.
	dir := filepath.Join(t.TempDir(), "clone")
	g.Run(t, "", "clone", "--quiet", g.URL("org/app"), dir)
	if err := os.WriteFile(filepath.Join(dir, "b.txt"), []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	g.Run(t, dir, "add", "b.txt")
	g.Run(t, dir, "commit", "--quiet", "-m", "second")
	g.Run(t, dir, "push", "--quiet", "origin", "main")

	third := g.Seed(t, "org/app", map[string]string{"a.txt": "3"}, "third")
	if third == first {
		t.Fatal("Seed did not make a new commit")
	}
	if got := g.Show(t, "org/app", third, "b.txt"); got != "2" {
		t.Fatalf("b.txt at third commit = %q, want %q", got, "2")
	}
	if got := g.Show(t, "org/app", "main", "a.txt"); got != "3" {
		t.Fatalf("a.txt on main = %q, want %q", got, "3")
	}
}

// run runs a command outside testenv's helpers, with only the isolation
// a test of the server needs.
func run(t *testing.T, dir string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = testenv.GitEnv(t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// The git CLI sends pushes over its 1 MiB post buffer chunked, which CGI
// cannot read: the server buffers them.
func TestGitServerLargePush(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t, testenv.WithBasicAuth("bot", "pw"))
	g.CreateRepo(t, "big")
	g.Seed(t, "big", map[string]string{"README.md": "big\n"}, "initial")

	dir := filepath.Join(t.TempDir(), "clone")
	g.Run(t, "", "clone", "--quiet", g.AuthURL("big"), dir)
	blob := make([]byte, 2<<20)
	_, _ = rand.Read(blob)
	if err := os.WriteFile(filepath.Join(dir, "blob.bin"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	g.Run(t, dir, "add", "blob.bin")
	g.Run(t, dir, "commit", "--quiet", "-m", "blob")
	g.Run(t, dir, "push", "--quiet", "origin", "main")
	if got, want := g.Head(t, "big"), g.Run(t, dir, "rev-parse", "HEAD"); got != want {
		t.Fatalf("head %s, want %s", got, want)
	}
}
