package steps

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/model"
)

// allowLoopback is the policy of tests whose servers listen on loopback,
// which the default policy refuses.
func allowLoopback(t *testing.T, cfg egress.Config) *egress.Policy {
	t.Helper()
	cfg.Allow = "127.0.0.0/8,::1"
	p, err := egress.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHTTPStepEgress(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok": true}`)
	}))
	t.Cleanup(srv.Close)

	for _, tt := range []struct {
		name, url, want string
	}{
		{"loopback", srv.URL, "loopback"},
		{"metadata", "http://169.254.169.254/latest/meta-data/", "cloud metadata"},
		{"nats monitoring", "http://192.0.2.1:8222/varz", "NATS port"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newContext(t, map[string]any{"url": tt.url})
			_, err := run(t, "http", sc)
			if !errors.Is(err, egress.ErrRefused) || !IsTerminal(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want a terminal egress refusal saying %q", err, tt.want)
			}
		})
	}

	sc := newContext(t, map[string]any{"url": srv.URL, "outputs": []any{map[string]any{"name": "ok", "fromExpression": "response.body.ok"}}})
	sc.Egress = allowLoopback(t, egress.Config{})
	res, err := run(t, "http", sc)
	if err != nil || res.Output["ok"] != true {
		t.Fatalf("allowed loopback: %+v %v", res, err)
	}

	// The server's own listen address stays refused in an allowed CIDR.
	sc.Egress = sc.Egress.Protect(srv.Listener.Addr().String())
	if _, err := run(t, "http", sc); !errors.Is(err, egress.ErrRefused) || !strings.Contains(err.Error(), "own listen address") {
		t.Fatalf("own address: %v", err)
	}
}

func TestHTTPDownloadLimits(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/small":
			_, _ = io.WriteString(w, "0123456789")
		case "/big":
			w.(http.Flusher).Flush() // chunked: no Content-Length to refuse at once
			for range 64 {
				_, _ = io.WriteString(w, strings.Repeat("x", 1024))
			}
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
		}
	}))
	t.Cleanup(srv.Close)
	policy := allowLoopback(t, egress.Config{MaxBytes: 4096})

	sc := newContext(t, map[string]any{"url": srv.URL + "/small", "outPath": "small.txt"})
	sc.Egress = policy
	if _, err := run(t, "http-download", sc); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(sc.Workspace.Dir.Path(), "small.txt")); err != nil || string(b) != "0123456789" {
		t.Fatalf("downloaded %q %v", b, err)
	}

	sc.Config = map[string]any{"url": srv.URL + "/big", "outPath": "big.bin"}
	_, err := run(t, "http-download", sc)
	if !errors.Is(err, egress.ErrTooLarge) || !IsTerminal(err) || !strings.Contains(err.Error(), "CARAVAN_EGRESS_MAX_BYTES") {
		t.Fatalf("a download over the limit: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sc.Workspace.Dir.Path(), "big.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a partial file is left: %v", err)
	}

	sc.Config = map[string]any{"url": srv.URL + "/slow", "outPath": "slow.bin", "timeout": "200ms"}
	if _, err := run(t, "http-download", sc); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the step's timeout: %v", err)
	}

	sc = newContext(t, map[string]any{"url": srv.URL + "/small", "outPath": "refused.txt"})
	if _, err := run(t, "http-download", sc); !errors.Is(err, egress.ErrRefused) {
		t.Fatalf("default policy: %v", err)
	}
}

// TestRepoURLsAtUseTime: URLs that come from expressions are checked when
// the step runs, with the same policy as at apply.
func TestRepoURLsAtUseTime(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		uses string
		cfg  map[string]any
	}{
		{"git-clone file", "git-clone", map[string]any{"repoURL": "file:///var/lib/caravan/promoter/git/abc", "checkout": []any{map[string]any{"branch": "main", "path": "src"}}}},
		{"git-clone path", "git-clone", map[string]any{"repoURL": "../../discovery/git/abc", "checkout": []any{map[string]any{"branch": "main", "path": "src"}}}},
		{"oci-push", "oci-push", map[string]any{"srcRef": "ghcr.io/acme/app:1", "destRef": "file:///tmp/x"}},
		{"oci-download", "oci-download", map[string]any{"imageRef": "/var/lib/images/app:1", "outPath": "x"}},
		{"helm-update-chart", "helm-update-chart", map[string]any{"path": "chart", "charts": []any{map[string]any{"repository": "file:///etc", "name": "x", "version": "1.0.0"}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newContext(t, tt.cfg)
			write(t, sc, "chart/Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\ndependencies:\n  - name: x\n    version: 0.1.0\n    repository: file://../../..\n")
			_, err := run(t, tt.uses, sc)
			if !errors.Is(err, model.ErrRepoURL) || !IsTerminal(err) {
				t.Fatalf("got %v, want a terminal repository URL refusal", err)
			}
		})
	}
}
