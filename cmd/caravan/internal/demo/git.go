package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// RepoName is the demo's deployment repository.
const RepoName = "deploy.git"

// maxPushBody bounds a push buffered for git http-backend.
const maxPushBody = 64 << 20

// gitServer serves the bare repositories under root over smart HTTP with
// git http-backend (the git CLI), open to pushes from the promoter, and
// the demo application's /healthz.
func gitServer(gitPath, root, addr string) (*http.Server, net.Listener, error) {
	ln, err := listen(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("demo git server: %w", err)
	}
	backend := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Env: []string{
			"GIT_PROJECT_ROOT=" + root,
			"GIT_HTTP_EXPORT_ALL=1",
			// http-backend refuses pushes without an authenticated user.
			"REMOTE_USER=caravan-demo",
			"GIT_CONFIG_NOSYSTEM=1",
			"HOME=" + root,
		},
		Logger: log.New(io.Discard, "", 0),
		Stderr: io.Discard,
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The demo application's health, which the smoke test measures.
		if r.URL.Path == "/healthz" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"status":"ok"}`)
			return
		}
		// CGI cannot pass on a chunked body: buffer it.
		if r.ContentLength < 0 {
			body, err := io.ReadAll(io.LimitReader(r.Body, maxPushBody+1))
			if err != nil || len(body) > maxPushBody {
				http.Error(w, "request body unreadable or too large", http.StatusRequestEntityTooLarge)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.TransferEncoding = nil
		}
		backend.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, ln, nil
}

// git runs the git CLI isolated from the user's configuration.
type git struct {
	path string
	home string
}

func (g git) run(ctx context.Context, dir string, args ...string) (string, error) {
	all := append([]string{"-c", "user.name=Caravan Demo", "-c", "user.email=demo@caravan.invalid", "-c", "init.defaultBranch=main"}, args...)
	cmd := exec.CommandContext(ctx, g.path, all...)
	cmd.Dir = dir
	env := []string{"HOME=" + g.home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// initRepo creates the bare repository bare (default branch main, open to
// pushes over HTTP) with one commit holding the files of seed, where
// replace is applied to every file. An existing repository is left alone.
func initRepo(ctx context.Context, g git, bare, seed string, replace *strings.Replacer) (created bool, err error) {
	if _, err := os.Stat(filepath.Join(bare, "HEAD")); err == nil {
		return false, nil
	}
	if _, err := os.Stat(seed); err != nil {
		return false, fmt.Errorf("demo repository content: %w", err)
	}
	tmpBare := bare + ".tmp"
	_ = os.RemoveAll(tmpBare)
	if _, err := g.run(ctx, "", "init", "--quiet", "--bare", "-b", "main", tmpBare); err != nil {
		return false, err
	}
	if _, err := g.run(ctx, tmpBare, "config", "http.receivepack", "true"); err != nil {
		return false, err
	}
	work, err := os.MkdirTemp(filepath.Dir(bare), ".seed-")
	if err != nil {
		return false, err
	}
	defer func() { _ = os.RemoveAll(work) }()
	if _, err := g.run(ctx, work, "init", "--quiet", "-b", "main", "."); err != nil {
		return false, err
	}
	err = filepath.WalkDir(seed, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(seed, path)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(work, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, []byte(replace.Replace(string(b))), 0o644)
	})
	if err != nil {
		return false, fmt.Errorf("copy demo repository content: %w", err)
	}
	for _, args := range [][]string{
		{"add", "--all"},
		{"commit", "--quiet", "-m", "Demo deployment repository: kustomize base and one overlay per stage"},
		{"push", "--quiet", tmpBare, "main"},
	} {
		if _, err := g.run(ctx, work, args...); err != nil {
			return false, err
		}
	}
	if err := os.Rename(tmpBare, bare); err != nil {
		return false, errors.Join(err, os.RemoveAll(tmpBare))
	}
	return true, nil
}
