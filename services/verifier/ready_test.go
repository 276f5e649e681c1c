package verifier

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
)

// The verifier is ready once its consumers are bound; a deleted durable
// consumer and a lost NATS connection make it unready, naming the check.
func TestReadiness(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	nc := h.srv.Conn(t)
	c := h.common
	c.ReplicaID = "ready"
	env, err := service.Provision(t.Context(), nc, "verifier", c, nil)
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
		done <- Run(ctx, Deps{Config: Config{Common: c, LeaseTTL: 900 * time.Millisecond}, Logger: slog.New(slog.DiscardHandler), Env: env})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Logf("stopped after losing NATS: %v", err)
		}
	})
	waitUntil(t, "ready", failing, func(f string) bool { return f == "" })
	if err := h.env.JS.DeleteConsumer(t.Context(), events.StreamEvents, events.VerifierVerificationAbort.Durable); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the deleted consumer named", failing, func(f string) bool {
		return strings.Contains(f, "consumer "+events.VerifierVerificationAbort.Durable)
	})
	nc.Close()
	waitUntil(t, "nats named", failing, func(f string) bool { return strings.Contains(f, "nats: ") })
}

func waitUntil(t *testing.T, what string, failing func() string, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for f := failing(); !ok(f); f = failing() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s; failing: %s", what, f)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
