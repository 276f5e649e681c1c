package service_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

func common(t *testing.T) service.Common {
	return service.Common{
		DataDir:      t.TempDir(),
		AuditMaxAge:  time.Hour,
		StreamConfig: events.DefaultStreamConfig(),
		LogConfig:    telemetry.LogConfig{Level: "info", Format: "text"},
	}
}

// TestConnectChecksLayout: a service declares nothing; on a NATS where
// caravan setup has not run it names the missing stream and caravan setup;
// after Setup (which declares the audit stream too) it connects; with
// other replicas than setup used it refuses with ErrLayoutMismatch.
func TestConnectChecksLayout(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	c := common(t)
	_, err := service.Connect(t.Context(), srv.Conn(t), "test", c, nil)
	if err == nil || !strings.Contains(err.Error(), "stream CARAVAN_EVENTS not found: run caravan setup") || errors.Is(err, service.ErrLayoutMismatch) {
		t.Fatalf("before setup: err = %v, want the missing stream and caravan setup named", err)
	}
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(t.Context(), audit.Stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("Connect declared %s: %v", audit.Stream, err)
	}
	if err := service.Setup(t.Context(), js, c); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), audit.Stream)
	if err != nil {
		t.Fatalf("setup did not declare %s: %v", audit.Stream, err)
	}
	if s.CachedInfo().Config.MaxAge != c.AuditMaxAge {
		t.Errorf("%s max age %s, want %s", audit.Stream, s.CachedInfo().Config.MaxAge, c.AuditMaxAge)
	}
	if _, err := service.Connect(t.Context(), srv.Conn(t), "test", c, nil); err != nil {
		t.Fatalf("after setup: %v", err)
	}
	c.Replicas = 3
	_, err = service.Connect(t.Context(), srv.Conn(t), "test", c, nil)
	if !errors.Is(err, service.ErrLayoutMismatch) || !strings.Contains(err.Error(), "has 1 replica(s), CARAVAN_JS_REPLICAS is 3") {
		t.Fatalf("other replicas: err = %v, want ErrLayoutMismatch naming both counts", err)
	}
}

func TestProvisionDeclaresBackbone(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	c := common(t)
	reg := prometheus.NewRegistry()
	env, err := service.Provision(t.Context(), srv.Conn(t), "test", c, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Ready(t.Context()); err != nil {
		t.Fatalf("not ready: %v", err)
	}
	if env.Bus.Source() != "test" || env.Registry != reg {
		t.Error("env not wired as asked")
	}
	// The generated secret key lands in the data dir with mode 0600, and a
	// second service on the same data dir reads the same key.
	info, err := os.Stat(filepath.Join(c.DataDir, "secret.key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("secret.key: %v, %v", info, err)
	}
	if _, err := service.Connect(t.Context(), srv.Conn(t), "again", c, nil); err != nil {
		t.Fatalf("second Connect: %v", err)
	}
}

func TestConnectRejectsBadSecretKey(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	c := common(t)
	c.SecretKey = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 16))
	_, err := service.Provision(t.Context(), srv.Conn(t), "test", c, nil)
	if err == nil || !strings.Contains(err.Error(), "CARAVAN_SECRET_KEY") {
		t.Fatalf("err = %v, want one naming CARAVAN_SECRET_KEY", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	c := common(t)
	c.DataDir = ""
	c.Replicas = 0
	c.AmbientCredentials = "ecr,azure"
	err := c.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"CARAVAN_DATA_DIR", "CARAVAN_JS_REPLICAS", `CARAVAN_AMBIENT_CREDENTIALS: unknown cloud "azure"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %s", err, want)
		}
	}
}
