package cli

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/services/gateway"
)

// srv is the real `caravan server` every test of this package talks to,
// started in-process by TestMain with its own data dir.
var srv struct {
	url     string
	token   string
	dataDir string
	store   *state.Store
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dataDir, err := os.MkdirTemp("", "caravan-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dataDir) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := server.Config{
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan server.Info, 1)
	go func() {
		done <- server.Run(ctx, cfg, server.Options{
			Logger:   slog.New(slog.DiscardHandler),
			Listener: ln,
			Started:  func(i server.Info) { started <- i },
		})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintln(os.Stderr, "server stopped with:", err)
			}
		case <-time.After(60 * time.Second):
			fmt.Fprintln(os.Stderr, "server did not stop")
		}
	}()
	var info server.Info
	select {
	case info = <-started:
	case err := <-done:
		fmt.Fprintln(os.Stderr, "server stopped:", err)
		return 1
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "server did not start")
		return 1
	}
	b, err := os.ReadFile(info.AdminTokenFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv.url = "http://" + ln.Addr().String()
	srv.token = strings.TrimSpace(string(b))
	srv.dataDir = dataDir
	if err := waitReady(srv.url); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	nc, err := info.ConnectNATS()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if srv.store, err = state.Open(ctx, js, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func waitReady(url string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// result is one run of the command.
type result struct {
	code   int
	stdout string
	stderr string
}

// run runs the command line against the test server with an isolated
// config file; env adds or overrides variables.
func run(t *testing.T, stdin string, env map[string]string, argv ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return runCtx(ctx, t, stdin, env, argv...)
}

// runCtx is run with a context of the caller's.
func runCtx(ctx context.Context, t *testing.T, stdin string, env map[string]string, argv ...string) result {
	t.Helper()
	vars := map[string]string{
		"CARAVAN_SERVER": srv.url,
		"CARAVAN_TOKEN":  srv.token,
		"CARAVAN_CONFIG": t.TempDir() + "/config.yaml",
	}
	for k, v := range env {
		vars[k] = v
	}
	var out, errOut bytes.Buffer
	code := execute(ctx, argv, streams{
		in: strings.NewReader(stdin), out: &out, errOut: &errOut,
		getenv: func(k string) string { return vars[k] },
	})
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// must fails the test unless the command succeeded.
func must(t *testing.T, r result) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r
}

var projects atomic.Int64

// uniqueProject names a project of its own for each run of a test (the
// server outlives -count runs).
func uniqueProject(base string) string {
	return fmt.Sprintf("%s-%d", base, projects.Add(1))
}

// seedFreight stores freight as discovery would (discovery is another
// service; the test writes the record itself).
func seedFreight(t *testing.T, f *model.Freight) {
	t.Helper()
	f.TypeMeta = model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight}
	if f.Name == "" {
		f.Name = f.GenerateID()
	}
	if f.CreationTimestamp == nil {
		f.CreationTimestamp = model.NewTime(time.Now().Add(-10 * 24 * time.Hour))
	}
	if _, err := srv.store.PutObject(context.Background(), f, 0); err != nil {
		t.Fatal(err)
	}
}
