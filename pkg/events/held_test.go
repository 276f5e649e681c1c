package events_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
)

// records is a slog handler keeping every record, for assertions on what
// the consumer reports.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs(attrs []slog.Attr) slog.Handler { return &withAttrs{r, attrs} }
func (r *records) WithGroup(string) slog.Handler            { return r }

type withAttrs struct {
	*records
	attrs []slog.Attr
}

func (w *withAttrs) Handle(ctx context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(w.attrs...)
	return w.records.Handle(ctx, rec)
}
func (w *withAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &withAttrs{w.records, append(append([]slog.Attr{}, w.attrs...), attrs...)}
}

// find returns the attributes of the first record with msg.
func (r *records) find(msg string) (map[string]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		if rec.Message != msg {
			continue
		}
		attrs := map[string]string{}
		rec.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		return attrs, true
	}
	return nil, false
}

// A slow handler does not get the messages fetched behind it redelivered:
// the consumer extends the ack deadline of every message it holds.
func TestHeldMessagesAreNotRedelivered(t *testing.T) {
	t.Parallel()
	bus, _ := setup(t)
	ctx := t.Context()
	s := spec("held", 5)
	s.AckWait = time.Second
	var mu sync.Mutex
	deliveries := map[string]int{}
	done := make(chan struct{}, 4)
	c, err := events.Consume(ctx, bus, s, func(ctx context.Context, ev events.FreightDiscovered) error {
		mu.Lock()
		deliveries[ev.Freight]++
		mu.Unlock()
		time.Sleep(1500 * time.Millisecond) // longer than the ack wait
		done <- struct{}{}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	for _, f := range []string{"a", "b", "c"} {
		if _, err := bus.Publish(ctx, "demo", events.Ref{Kind: "Freight", Name: f}, events.FreightDiscovered{Freight: f}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		receive(t, done)
	}
	time.Sleep(1500 * time.Millisecond) // a redelivery would show now
	mu.Lock()
	defer mu.Unlock()
	for _, f := range []string{"a", "b", "c"} {
		if deliveries[f] != 1 {
			t.Errorf("%s handled %d times: %v", f, deliveries[f], deliveries)
		}
	}
}

// Handler errors and dead letters are logged with the event's type,
// subject and delivery count; a dead letter that cannot be written is not
// dropped: the event is delivered again until one can be.
func TestFailuresAreLoggedAndDeadLettersNotDropped(t *testing.T) {
	t.Parallel()
	logs := &records{}
	bus, js := setup(t, events.WithLogger(slog.New(logs)))
	ctx := t.Context()
	calls := make(chan struct{}, 100)
	c, err := events.Consume(ctx, bus, spec("fails", 2), func(ctx context.Context, ev events.FreightDiscovered) error {
		calls <- struct{}{}
		return errors.New("registry unavailable")
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	// The dead-letter bucket goes away: its records cannot be written.
	if err := js.DeleteKeyValue(ctx, events.BucketDeadLetters); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Publish(ctx, "demo", events.Ref{Kind: "Freight", Name: "x"}, events.FreightDiscovered{Freight: "x"}); err != nil {
		t.Fatal(err)
	}
	for range 3 { // MaxDeliver 2, and still delivered
		receive(t, calls)
	}
	attrs, ok := logs.find("handler failed; the event will be delivered again")
	if !ok || attrs["type"] != string(events.TypeFreightDiscovered) || attrs["delivery"] != "1" ||
		attrs["subject"] != events.Subject("demo", events.TypeFreightDiscovered, events.Ref{Kind: "Freight", Name: "x"}) || attrs["consumer"] != "fails" {
		t.Fatalf("retry log %v (found %v)", attrs, ok)
	}
	if _, ok := logs.find("dead letter not written; the event will be delivered again"); !ok {
		t.Fatal("no log of the failed dead letter")
	}
	// The bucket is back: the next delivery is dead-lettered.
	if err := events.Setup(ctx, js, events.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	dls, err := events.NewDeadLetters(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		list, _, err := dls.List(ctx, 0, "")
		if err == nil && len(list) == 1 {
			if list[0].Deliveries < 3 {
				t.Fatalf("dead letter after %d deliveries", list[0].Deliveries)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter: %v %v", list, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, ok := logs.find("event moved to the dead letters"); !ok {
		t.Fatal("no log of the dead letter")
	}
}
