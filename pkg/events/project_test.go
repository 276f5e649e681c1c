package events_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
)

// TestPurgeProject: a deleted project's events and dead letters go; other
// projects' stay.
func TestPurgeProject(t *testing.T) {
	t.Parallel()
	bus, js := setup(t)
	ctx := t.Context()
	for _, p := range []string{"gone", "gone.too", "live"} {
		for range 3 {
			if _, err := bus.Publish(ctx, p, events.Ref{Kind: "Freight", Name: "f"}, events.FreightDiscovered{Freight: "f"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	dead, err := js.KeyValue(ctx, events.BucketDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	for id, p := range map[string]string{"c.1": "gone", "c.2": "live"} {
		b, _ := json.Marshal(events.DeadLetter{ID: id, Project: p})
		if _, err := dead.Put(ctx, id, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := bus.PurgeProject(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	count := func(project string) uint64 {
		s, err := js.Stream(ctx, events.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.ProjectFilter(project)))
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		return n
	}
	if n := count("gone"); n != 0 {
		t.Errorf("%d events of the deleted project left", n)
	}
	for _, p := range []string{"gone.too", "live"} {
		if n := count(p); n != 3 {
			t.Errorf("project %s: %d events, want 3", p, n)
		}
	}
	if _, err := dead.Get(ctx, "c.1"); err == nil {
		t.Error("the deleted project's dead letter is left")
	}
	if _, err := dead.Get(context.Background(), "c.2"); err != nil {
		t.Errorf("another project's dead letter went: %v", err)
	}
	if err := bus.PurgeProject(ctx, ""); err == nil {
		t.Error("an empty project purged")
	}
}
