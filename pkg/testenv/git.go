package testenv

import (
	"bytes"
	"crypto/subtle"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// gitBinary is the git CLI used both as the CGI backend and for seeding.
const gitBinary = "/usr/bin/git"

// maxBufferedBody bounds request bodies buffered for the CGI backend, which
// cannot read chunked bodies.
const maxBufferedBody = 256 << 20

// Identity of commits made by Seed.
const (
	gitUserName  = "Caravan Test"
	gitUserEmail = "test@caravan.invalid"
)

// Git is a real git server over smart HTTP (git http-backend behind
// net/http/cgi) holding bare repositories in a temporary directory. It is
// safe for concurrent use.
type Git struct {
	root     string
	home     string
	user     string
	password string
	srv      *httptest.Server
	requests atomic.Int64
	api      http.Handler
	seedMu   sync.Mutex // Seed clones, commits and pushes one at a time
}

// GitOption configures GitServer.
type GitOption func(*Git)

// WithBasicAuth makes the server require HTTP basic auth: a request without
// credentials gets 401 and one with wrong credentials 403.
func WithBasicAuth(user, password string) GitOption {
	return func(g *Git) { g.user, g.password = user, password }
}

// WithAPI serves h for requests below /api/ (without the git server's
// authentication): a host's REST API beside its repositories, as GitHub
// Enterprise Server serves /api/v3.
func WithAPI(h http.Handler) GitOption {
	return func(g *Git) { g.api = h }
}

// GitServer starts a git HTTP server on loopback with no repositories and
// stops it at test cleanup. It needs the git CLI at /usr/bin/git.
func GitServer(t testing.TB, opts ...GitOption) *Git {
	t.Helper()
	if _, err := os.Stat(gitBinary); err != nil {
		t.Fatalf("testenv: git CLI not available (apt-get install git): %v", err)
	}
	g := &Git{root: t.TempDir(), home: t.TempDir()}
	for _, opt := range opts {
		opt(g)
	}
	remoteUser := g.user
	if remoteUser == "" {
		// http-backend refuses pushes without an authenticated user.
		remoteUser = "anonymous"
	}
	backend := &cgi.Handler{
		Path: gitBinary,
		Args: []string{"http-backend"},
		Env: []string{
			"GIT_PROJECT_ROOT=" + g.root,
			"GIT_HTTP_EXPORT_ALL=1",
			"REMOTE_USER=" + remoteUser,
			"GIT_CONFIG_NOSYSTEM=1",
			"HOME=" + g.home,
		},
		Logger: log.New(io.Discard, "", 0),
		Stderr: io.Discard,
	}
	g.srv = httptest.NewServer(g.handler(backend))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *Git) handler(backend http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.requests.Add(1)
		if g.api != nil && strings.HasPrefix(r.URL.Path, "/api/") {
			g.api.ServeHTTP(w, r)
			return
		}
		if g.user != "" {
			user, password, ok := r.BasicAuth()
			if !ok {
				w.Header().Set("WWW-Authenticate", `Basic realm="testenv"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
			userOK := subtle.ConstantTimeCompare([]byte(user), []byte(g.user))
			passwordOK := subtle.ConstantTimeCompare([]byte(password), []byte(g.password))
			if userOK&passwordOK != 1 {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
		}
		// The git CLI sends large pushes chunked, which CGI cannot pass on:
		// buffer them so the backend sees a Content-Length.
		if r.ContentLength < 0 {
			body, err := io.ReadAll(io.LimitReader(r.Body, maxBufferedBody+1))
			if err != nil || len(body) > maxBufferedBody {
				http.Error(w, "request body unreadable or too large", http.StatusRequestEntityTooLarge)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.TransferEncoding = nil
		}
		backend.ServeHTTP(w, r)
	})
}

// URL is the clone URL of repo, e.g. http://127.0.0.1:41234/demo.git. A
// missing ".git" suffix is added.
func (g *Git) URL(repo string) string {
	return g.srv.URL + "/" + repoDir(repo)
}

// AuthURL is URL with the basic-auth credentials embedded, for the git CLI.
// Without WithBasicAuth it equals URL.
func (g *Git) AuthURL(repo string) string {
	if g.user == "" {
		return g.URL(repo)
	}
	host := strings.TrimPrefix(g.srv.URL, "http://")
	return fmt.Sprintf("http://%s:%s@%s/%s", g.user, g.password, host, repoDir(repo))
}

// Credentials are the basic-auth user and password, empty without
// WithBasicAuth.
func (g *Git) Credentials() (user, password string) {
	return g.user, g.password
}

// Root is the directory holding the bare repositories.
func (g *Git) Root() string { return g.root }

// Path is the directory of repo's bare repository.
func (g *Git) Path(repo string) string {
	return filepath.Join(g.root, repoDir(repo))
}

// Requests is the number of HTTP requests served so far, rejected ones
// included. Seed, Tag and Run do not go through HTTP and are not counted.
func (g *Git) Requests() int { return int(g.requests.Load()) }

// CreateRepo creates an empty bare repository whose default branch is main,
// open to pushes over HTTP, and returns its URL.
func (g *Git) CreateRepo(t testing.TB, name string) string {
	t.Helper()
	dir := g.Path(name)
	g.Run(t, "", "init", "--quiet", "--bare", "-b", "main", dir)
	g.Run(t, dir, "config", "http.receivepack", "true")
	return g.URL(name)
}

// Seed commits files (path → content, paths with slashes allowed) on top
// of main in repo, creating main if the repository is empty, pushes, and
// returns the commit's SHA. Files not named are left as they are.
func (g *Git) Seed(t testing.TB, repo string, files map[string]string, message string) string {
	t.Helper()
	g.seedMu.Lock()
	defer g.seedMu.Unlock()
	work := t.TempDir()
	g.Run(t, "", "clone", "--quiet", g.Path(repo), work)
	// An empty repository clones without a branch: commit on main whatever
	// the clone chose.
	g.Run(t, work, "symbolic-ref", "HEAD", "refs/heads/main")
	for name, content := range files {
		path := filepath.Join(work, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("testenv: seed %s: %v", name, err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatalf("testenv: seed %s: %v", name, err)
		}
	}
	g.Run(t, work, "add", "--all")
	g.Run(t, work, "commit", "--quiet", "--allow-empty", "-m", message)
	g.Run(t, work, "push", "--quiet", "origin", "main")
	return g.Run(t, work, "rev-parse", "HEAD")
}

// Tag creates (or moves) the lightweight tag in repo to point at sha.
func (g *Git) Tag(t testing.TB, repo, tag, sha string) {
	t.Helper()
	g.Run(t, g.Path(repo), "tag", "--force", tag, sha)
}

// Head returns the SHA main points at in repo.
func (g *Git) Head(t testing.TB, repo string) string {
	t.Helper()
	return g.Run(t, g.Path(repo), "rev-parse", "refs/heads/main")
}

// Show returns the content of path at rev (a SHA, branch or tag) in repo.
func (g *Git) Show(t testing.TB, repo, rev, path string) string {
	t.Helper()
	return g.Run(t, g.Path(repo), "show", rev+":"+path)
}

// Run runs the git CLI in dir ("" for the current directory) isolated from
// the machine's git configuration, with a commit identity and no prompts,
// and returns its standard output without surrounding white space. It fails
// the test if git fails.
func (g *Git) Run(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := g.run(dir, args...)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return out
}

func (g *Git) run(dir string, args ...string) (string, error) {
	all := append([]string{"-c", "user.name=" + gitUserName, "-c", "user.email=" + gitUserEmail}, args...)
	cmd := exec.Command(gitBinary, all...)
	cmd.Dir = dir
	cmd.Env = GitEnv(g.home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// GitEnv is an environment for running the git CLI in tests: the process
// environment without GIT_* variables, plus HOME set to home, the system
// configuration ignored, terminal prompts off and a fixed commit identity.
func GitEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME="+gitUserName,
		"GIT_AUTHOR_EMAIL="+gitUserEmail,
		"GIT_COMMITTER_NAME="+gitUserName,
		"GIT_COMMITTER_EMAIL="+gitUserEmail,
	)
}

// repoDir is the directory name of repo under the server root.
func repoDir(repo string) string {
	repo = strings.Trim(repo, "/")
	if !strings.HasSuffix(repo, ".git") {
		repo += ".git"
	}
	return repo
}
