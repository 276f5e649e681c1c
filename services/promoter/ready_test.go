package promoter

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
)

// The promoter is ready once its consumers are bound; a deleted durable
// consumer and a lost NATS connection make it unready, naming the check.
func TestReadiness(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	nc := h.srv.Conn(t)
	c := h.common
	c.ReplicaID = "ready"
	env, err := service.Provision(t.Context(), nc, "promoter", c, nil)
	if err != nil {
		t.Fatal(err)
	}
	health := service.NewHealth()
	env.Health = health
	health.Add("nats", env.Ready)
	failing := func() string {
		var out []string
		for _, f := range health.Failing(t.Context()) {
			out = append(out, f.Check+": "+f.Reason)
		}
		return strings.Join(out, "; ")
	}
	if failing() == "" {
		t.Fatal("ready before it started")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Deps{Config: Config{Common: c, LeaseTTL: 900 * time.Millisecond, HealthInterval: time.Hour, GCInterval: time.Hour}, Logger: slog.New(slog.DiscardHandler), Env: env})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Logf("stopped after losing NATS: %v", err)
		}
	})
	eventually(t, 30*time.Second, func() bool { return failing() == "" }, func() string { return "ready: " + failing() })
	if err := h.env.JS.DeleteConsumer(t.Context(), events.StreamEvents, events.PromoterPromotionAbort.Durable); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() bool {
		return strings.Contains(failing(), "consumer "+events.PromoterPromotionAbort.Durable)
	}, func() string { return "the deleted consumer named: " + failing() })
	nc.Close()
	eventually(t, 30*time.Second, func() bool { return strings.Contains(failing(), "nats: ") }, func() string { return "nats named: " + failing() })
}
