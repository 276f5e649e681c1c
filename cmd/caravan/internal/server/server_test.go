package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/services/gateway"
)

const pipeline = `apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: demo
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: app
  namespace: demo
spec:
  subscriptions:
  - image:
      repoURL: ghcr.io/example/app
      constraint: ^1.0.0
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: dev
  namespace: demo
spec:
  requestedFreight:
  - origin:
      kind: Warehouse
      name: app
    sources:
      direct: true
`

type running struct {
	url    string
	token  string
	info   server.Info
	cancel context.CancelFunc
	done   chan error
}

// testConfig is the configuration the tests run caravan server with: its
// data in dataDir, its API on ln, defaults for the rest.
func testConfig(dataDir string, ln net.Listener) server.Config {
	return server.Config{
		Config: gateway.Config{
			Common: service.Common{
				DataDir:      dataDir,
				StreamConfig: events.DefaultStreamConfig(),
				LogConfig:    telemetry.LogConfig{Level: "info", Format: "text"},
			},
			HTTPAddr:        ln.Addr().String(),
			MaxBodyBytes:    10 << 20,
			ShutdownTimeout: 5 * time.Second,
		},
	}
}

func start(t testing.TB, dataDir string, mutate ...func(*server.Config)) *running {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(dataDir, ln)
	for _, m := range mutate {
		m(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	started := make(chan server.Info, 1)
	go func() {
		r.done <- server.Run(ctx, cfg, server.Options{
			Logger:   slog.New(slog.DiscardHandler),
			Listener: ln,
			Started:  func(i server.Info) { started <- i },
		})
	}()
	select {
	case info := <-started:
		r.info = info
		b, err := os.ReadFile(info.AdminTokenFile)
		if err != nil {
			t.Fatal(err)
		}
		r.token = strings.TrimSpace(string(b))
	case err := <-r.done:
		t.Fatalf("server stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server did not start")
	}
	waitReady(t, r.url)
	return r
}

func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("server stopped with: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("server did not stop")
	}
}

func waitReady(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *running) do(t testing.TB, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, r.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/yaml")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestRestartKeepsApplied applies a pipeline, restarts the all-in-one
// server on the same data dir, and reads it back.
func TestRestartKeepsApplied(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	if code, body := r.do(t, http.MethodPost, "/v1/resources", pipeline); code != http.StatusOK {
		t.Fatalf("apply: %d %v", code, body)
	}
	token := r.token
	r.stop(t)

	for _, f := range []string{"admin-token", "secret.key"} {
		info, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, info.Mode().Perm())
		}
	}
	for _, d := range []string{"nats", "discovery", "promoter", "verifier"} {
		if _, err := os.Stat(filepath.Join(dir, d)); err != nil {
			t.Errorf("data dir layout: %v", err)
		}
	}

	r = start(t, dir)
	defer r.stop(t)
	if r.token != token {
		t.Error("admin token changed across a restart")
	}
	for _, path := range []string{"/v1/projects/demo", "/v1/projects/demo/warehouses/app", "/v1/projects/demo/stages/dev"} {
		if code, body := r.do(t, http.MethodGet, path, ""); code != http.StatusOK {
			t.Errorf("GET %s after restart: %d %v", path, code, body)
		}
	}
	code, body := r.do(t, http.MethodPost, "/v1/resources", pipeline)
	if code != http.StatusOK {
		t.Fatalf("re-apply: %d %v", code, body)
	}
	for _, res := range body["results"].([]any) {
		if a := res.(map[string]any)["action"]; a != "unchanged" {
			t.Errorf("re-apply after restart: %v", res)
		}
	}
}

func TestRejectsBadConfig(t *testing.T) {
	t.Parallel()
	cfg := server.Config{EmbeddedNATSAddr: "nope"}
	cfg.StreamConfig = events.DefaultStreamConfig()
	cfg.LogConfig = telemetry.LogConfig{Level: "loud", Format: "text"}
	cfg.DataDir = t.TempDir()
	err := cfg.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"CARAVAN_EMBEDDED_NATS_ADDR", "CARAVAN_LOG_LEVEL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}
