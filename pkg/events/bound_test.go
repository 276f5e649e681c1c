package events_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
)

// A consumer is bound while it runs and its durable consumer exists; a
// deleted durable consumer or a stopped one says so, by name.
func TestConsumerBound(t *testing.T) {
	t.Parallel()
	bus, js := setup(t)
	ctx := t.Context()
	c, err := events.Consume(ctx, bus, spec("bound", 3), func(context.Context, events.FreightDiscovered) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Bound(ctx); err != nil {
		t.Fatalf("a running consumer: %v", err)
	}
	if err := js.DeleteConsumer(ctx, events.StreamEvents, "bound"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := c.Bound(ctx)
		if err != nil && strings.Contains(err.Error(), "consumer bound") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a deleted consumer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Stop()
	<-c.Closed()
	if err := c.Bound(ctx); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("a stopped consumer: %v", err)
	}
}
