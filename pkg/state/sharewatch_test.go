package state_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/state"
)

// seen reads w until the nil marker (unless initial < 0: read already)
// and then until it has updates changes,
// returning "key=value" (or "key deleted") in order.
func seen(t *testing.T, w jetstream.KeyWatcher, initial, updates int) (before, after []string) {
	t.Helper()
	marker := initial < 0 // the marker was already read
	for len(before) < initial || !marker || len(after) < updates {
		e, ok := <-w.Updates()
		if !ok {
			t.Fatalf("watch closed after %v, %v", before, after)
		}
		if e == nil {
			marker = true
			continue
		}
		s := e.Key() + "=" + string(e.Value())
		if e.Operation() != jetstream.KeyValuePut {
			s = e.Key() + " deleted"
		}
		if marker {
			after = append(after, s)
		} else {
			before = append(before, s)
		}
	}
	return before, after
}

// Watches sharing one watch each see what a watch of their own sees: the
// values, the nil marker, the changes in order; watches made after the
// shared one started, and watches with options, are the bucket's own; a
// watcher stopping leaves the others watching, and its channel closes.
func TestShareWatch(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := open(t)
	kv := s.KV(state.Freight)
	for i := range 3 {
		if _, err := kv.Put(ctx, fmt.Sprintf("p.f%d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	s.ShareWatch(state.Freight, 3)
	shared := s.KV(state.Freight)
	var ws []jetstream.KeyWatcher
	for range 3 {
		w, err := shared.WatchAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	own, err := shared.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := shared.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "p.f3", []byte("3")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "p.f0"); err != nil {
		t.Fatal(err)
	}
	wantBefore := []string{"p.f0=0", "p.f1=1", "p.f2=2"}
	wantAfter := []string{"p.f3=3", "p.f0 deleted"}
	for i, w := range append(slices.Clone(ws), own) {
		before, after := seen(t, w, 3, 2)
		if !slices.Equal(before, wantBefore) || !slices.Equal(after, wantAfter) {
			t.Errorf("watcher %d: %v then %v, want %v then %v", i, before, after, wantBefore, wantAfter)
		}
	}
	if before, _ := seen(t, meta, 3, 2); before[0] != "p.f0=" {
		t.Errorf("the MetaOnly watch got values: %v", before)
	}
	// One stops: its channel closes; the others go on.
	if err := ws[0].Stop(); err != nil {
		t.Fatal(err)
	}
	for range ws[0].Updates() {
	}
	if _, err := kv.Put(ctx, "p.f4", []byte("4")); err != nil {
		t.Fatal(err)
	}
	for i, w := range ws[1:] {
		if _, after := seen(t, w, -1, 1); !slices.Equal(after, []string{"p.f4=4"}) {
			t.Errorf("watcher %d after one stopped: %v", i+1, after)
		}
	}
	_ = own.Stop()
	_ = meta.Stop()
}

// A shared watch whose watches do not all come starts with those that did
// (after state.ShareWatchJoin), and ends for them all once they stop.
func TestShareWatchStartsWithoutLatecomers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := open(t)
	if _, err := s.KV(state.Freight).Put(ctx, "p.a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	s.ShareWatch(state.Freight, 5)
	w, err := s.KV(state.Freight).WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before, _ := seen(t, w, 1, 0); !slices.Equal(before, []string{"p.a=a"}) {
		t.Errorf("got %v", before)
	}
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	for range w.Updates() {
	}
}
