package discovery_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery"
)

// failing lists the failing readiness checks, by name.
func failing(t *testing.T, h *service.Health) string {
	t.Helper()
	var names []string
	for _, f := range h.Failing(t.Context()) {
		names = append(names, f.Check+": "+f.Reason)
	}
	return strings.Join(names, "; ")
}

// Discovery is ready once its consumers are bound and its lease heartbeat
// runs; a deleted durable consumer and a lost NATS connection (no
// heartbeat) make it unready, naming the check.
func TestReadiness(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	nc := srv.Conn(t)
	c := common(t)
	c.ReplicaID = "ready"
	env, err := service.Provision(t.Context(), nc, "discovery", c, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := service.NewHealth()
	env.Health = h
	h.Add("nats", env.Ready)
	if failing(t, h) == "" {
		t.Fatal("ready before it started")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- discovery.Run(ctx, discovery.Deps{Config: discovery.Config{Common: c, LeaseTTL: 900 * time.Millisecond, MinInterval: time.Hour}, Logger: slog.New(slog.DiscardHandler), Env: env})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Logf("stopped after losing NATS: %v", err)
		}
	})
	eventually(t, "ready", func() bool { return failing(t, h) == "" })

	admin := srv.Conn(t)
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(t.Context(), events.StreamEvents, events.DiscoveryRefresh.Durable); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted consumer named", func() bool {
		return strings.Contains(failing(t, h), "consumer "+events.DiscoveryRefresh.Durable)
	})

	nc.Close()
	eventually(t, "the lease heartbeat named", func() bool {
		f := failing(t, h)
		return strings.Contains(f, "nats: ") && strings.Contains(f, "discovery leases: ")
	})
}
