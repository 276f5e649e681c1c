package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Gitea is a real Gitea server (built by scripts/tool.sh gitea from
// tools/gitea) on loopback, with its SQLite database, repositories and
// queues in a temporary directory, and one admin user with an access token
// of every scope. Its REST API is at URL + "/api/v1" and its repositories
// at URL + "/<owner>/<name>.git".
type Gitea struct {
	// URL is the server's root URL, http://127.0.0.1:<port> (no slash).
	URL string
	// User and Password are the admin user's; Token is an access token of
	// theirs with every scope (it also works as the password for git over
	// HTTP).
	User, Password, Token string

	git *Git // runs the git CLI isolated from the machine's configuration
}

// GiteaServer starts Gitea and stops it at test cleanup. The binary comes
// from $GITEA or from scripts/tool.sh gitea, whose output directory also
// holds the templates and options a build without bindata reads (its
// STATIC_ROOT_PATH); a missing binary is built there (about 10 minutes on
// 2 cores: run make tools first).
//
// How it runs: the test writes app.ini (INSTALL_LOCK, SQLite, no SSH,
// offline, no mailer, no Actions, memory cache and sessions), runs
// `gitea migrate`, `gitea admin user create --admin` and `gitea admin user
// generate-access-token`, then `gitea web` on a free port, ready when GET
// /api/healthz answers 200. Gitea refuses to run as root unless told it
// may: as root the helper sets GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT.
func GiteaServer(t testing.TB) *Gitea {
	t.Helper()
	bin := giteaBinary(t)
	dir := t.TempDir()
	port := freePort(t)
	g := &Gitea{
		URL:      fmt.Sprintf("http://127.0.0.1:%d", port),
		User:     "caravan",
		Password: "pw-" + randomHex(12),
		git:      &Git{home: filepath.Join(dir, "githome")},
	}
	if err := os.MkdirAll(g.git.home, 0o755); err != nil {
		t.Fatal(err)
	}
	ini := filepath.Join(dir, "app.ini")
	write(t, ini, fmt.Appendf(nil, giteaINI, g.URL+"/", port, filepath.Dir(bin), dir, randomHex(32), randomHex(32)))

	env := append(GitEnv(filepath.Join(dir, "home")), "GITEA_WORK_DIR="+dir)
	if os.Geteuid() == 0 {
		env = append(env, "GITEA_I_AM_BEING_UNSAFE_RUNNING_AS_ROOT=true")
	}
	gitea := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"--config", ini, "--work-path", dir}, args...)...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			// Never the password or token: args[1] names the command only.
			t.Fatalf("testenv: gitea %s: %v\n%s%s", strings.Join(args[:min(len(args), 3)], " "), err, stdout.String(), stderr.String())
		}
		return strings.TrimSpace(stdout.String())
	}
	gitea("migrate")
	gitea("admin", "user", "create", "--admin", "--username", g.User, "--password", g.Password,
		"--email", g.User+"@caravan.invalid", "--must-change-password=false")
	g.Token = gitea("admin", "user", "generate-access-token", "--username", g.User, "--token-name", "e2e", "--scopes", "all", "--raw")
	if g.Token == "" {
		t.Fatal("testenv: gitea admin user generate-access-token printed no token")
	}

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	web := start(ctx, t, env, bin, "--config", ini, "--work-path", dir, "web")

	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := hc.Get(g.URL + "/api/healthz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return g
			}
		}
		select {
		case <-web.done:
			out, _ := os.ReadFile(web.log)
			t.Fatalf("testenv: gitea web exited before it was ready:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(web.log)
			t.Fatalf("testenv: gitea not ready in 2m (last: %v):\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// giteaINI is the app.ini of GiteaServer: root URL, port, static root
// path (templates and options), work dir, secret key, internal token.
const giteaINI = `APP_NAME = caravan-e2e
RUN_MODE = prod

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
ROOT_URL = %[1]s
HTTP_PORT = %[2]d
STATIC_ROOT_PATH = %[3]s
APP_DATA_PATH = %[4]s/data
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false

[database]
DB_TYPE = sqlite3
PATH = %[4]s/data/gitea.db

[repository]
ROOT = %[4]s/repositories
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = %[5]s
INTERNAL_TOKEN = %[6]s

[oauth2]
ENABLED = false

[service]
DISABLE_REGISTRATION = true

[mailer]
ENABLED = false

[actions]
ENABLED = false

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[cache]
ADAPTER = memory

[session]
PROVIDER = memory

[picture]
DISABLE_GRAVATAR = true
ENABLE_FEDERATED_AVATAR = false

[cron.update_checker]
ENABLED = false

[log]
MODE = console
LEVEL = warn
ROOT_PATH = %[4]s/log
`

// giteaBinary is $GITEA, or the binary scripts/tool.sh gitea prints
// (building it when its cache holds none).
func giteaBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("GITEA"); bin != "" {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("testenv: GITEA=%s is not an executable: %v (unset it to use the one `make tools` builds)", bin, err)
		}
		return bin
	}
	out, err := exec.Command("bash", filepath.Join(repoRoot(t), "scripts", "tool.sh"), "gitea").Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("testenv: no gitea binary: run `make tools` (or scripts/tool.sh gitea), or set GITEA to one: %v\n%s", err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// RepoURL is the clone URL of owner/name.
func (g *Gitea) RepoURL(repo string) string { return g.URL + "/" + repo + ".git" }

// CreateRepo creates the empty repository name owned by the admin user
// and returns its owner/name.
func (g *Gitea) CreateRepo(t testing.TB, name string) string {
	t.Helper()
	g.API(t, http.MethodPost, "/user/repos", map[string]any{"name": name, "default_branch": "main", "private": false}, nil, http.StatusCreated)
	return g.User + "/" + name
}

// Push commits files (path → content) with message on top of branch of
// repo (from base when branch does not exist yet, or as its first commit
// when base is ""), pushes it and returns the commit's SHA.
func (g *Gitea) Push(t testing.TB, repo, base, branch string, files map[string]string, message string) string {
	t.Helper()
	u, err := url.Parse(g.RepoURL(repo))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(g.User, g.Token)
	work := t.TempDir()
	g.git.Run(t, work, "init", "--quiet", "-b", branch)
	if base != "" {
		g.git.Run(t, work, "fetch", "--quiet", u.String(), base)
		g.git.Run(t, work, "reset", "--quiet", "--hard", "FETCH_HEAD")
	}
	for name, content := range files {
		path := filepath.Join(work, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g.git.Run(t, work, "add", "--all")
	g.git.Run(t, work, "commit", "--quiet", "-m", message)
	if _, err := g.git.run(work, "push", "--quiet", u.String(), "HEAD:refs/heads/"+branch); err != nil {
		// The URL carries the token: never print it.
		t.Fatalf("testenv: push %s to %s: %v", branch, repo, strings.ReplaceAll(err.Error(), g.Token, "***"))
	}
	sha := g.git.Run(t, work, "rev-parse", "HEAD")
	g.waitForPush(t, repo, branch, sha)
	return sha
}

// waitForPush waits until Gitea's API shows branch of repo at sha and the
// repository as not empty. Gitea records a push in a background queue, so
// for a moment after it its API may not know the branch, or answer 404 for
// the pull requests of a repository it still takes for empty (seen about
// once in five runs under -race).
func (g *Gitea) waitForPush(t testing.TB, repo, branch, sha string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // generous: readiness, not speed
	for {
		var b struct {
			Commit struct {
				ID string `json:"id"`
			} `json:"commit"`
		}
		var r struct {
			Empty bool `json:"empty"`
		}
		// The repository first: Gitea 1.27 answers a branch of a
		// repository it takes for empty with a 500 (a nil dereference).
		if g.API(t, http.MethodGet, "/repos/"+repo, nil, &r) == http.StatusOK && !r.Empty &&
			g.API(t, http.MethodGet, "/repos/"+repo+"/branches/"+branch, nil, &b, http.StatusOK, http.StatusNotFound) == http.StatusOK && b.Commit.ID == sha {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: gitea does not show %s of %s at %s a minute after the push", branch, repo, sha)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// API sends a JSON request to Gitea's REST API (path below /api/v1) with
// the admin's token, fails the test unless it answers one of want (any 2xx
// when none is given), decodes the answer into out when out is not nil and
// returns the status.
func (g *Gitea) API(t testing.TB, method, path string, in, out any, want ...int) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, g.URL+"/api/v1"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "token "+g.Token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("testenv: gitea %s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	ok := len(want) == 0 && resp.StatusCode/100 == 2
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		t.Fatalf("testenv: gitea %s %s: %s: %s", method, path, resp.Status, data)
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("testenv: gitea %s %s: decode %s: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}
