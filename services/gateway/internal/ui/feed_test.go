package ui

import (
	"sync"
	"testing"

	"github.com/caravan-cd/caravan/pkg/state"
)

func TestKeyParts(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		b          state.Bucket
		key        string
		kind, name string
	}{
		{state.Resources, "demo.Stage.dev", "Stage", "dev"},
		{state.Resources, "demo.Warehouse.app_v2", "Warehouse", "app.v2"},
		{state.Resources, "_.Project.demo", "Project", "demo"},
		{state.Stages, "demo.prod", "", "prod"},
		{state.Freight, "demo.0a1b2c", "", "0a1b2c"},
		{state.Stages, "demo", "", ""},
		{state.Resources, "demo.Stage", "", ""},
	} {
		if kind, name := keyParts(c.b, c.key); kind != c.kind || name != c.name {
			t.Errorf("keyParts(%s, %q) = %q, %q; want %q, %q", c.b, c.key, kind, name, c.kind, c.name)
		}
	}
}

// TestFeedSince checks that a project's changes come back newest first
// after a position, that other projects' and cluster-scoped keys are not
// among them, and that a position older than what is kept says so.
func TestFeedSince(t *testing.T) {
	t.Parallel()
	f := &Feed{seen: map[state.Bucket]uint64{}, log: map[string]*projectLog{}}
	f.changed = sync.NewCond(&f.mu)
	f.apply(state.Stages, "demo.dev", 1)
	f.apply(state.Stages, "other.dev", 2)
	f.apply(state.Resources, "_.Project.demo", 3)
	f.apply(state.Freight, "demo.abc", 4)
	got, ok := f.since("demo", 0)
	if !ok || len(got) != 2 || got[0].key != "demo.abc" || got[1].key != "demo.dev" {
		t.Fatalf("since 0: %v %v", got, ok)
	}
	if got, ok := f.since("demo", got[0].seq); !ok || len(got) != 0 {
		t.Errorf("since the last: %v %v", got, ok)
	}
	if f.seen[state.Freight] != 4 || f.seen[state.Resources] != 3 {
		t.Errorf("seen: %v", f.seen)
	}
	for i := range feedKeep + 1 {
		f.apply(state.Stages, "demo.dev", uint64(5+i))
	}
	if _, ok := f.since("demo", 0); ok {
		t.Error("since 0 after more than feedKeep changes: ok, want a full read")
	}
	if got, ok := f.since("demo", f.seq-3); !ok || len(got) != 3 {
		t.Errorf("the last 3: %d %v", len(got), ok)
	}
}
