package state_test

import (
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/state"
)

func TestWatch(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	kv := s.KV(state.Stages)
	if _, err := state.Put(ctx, kv, state.Key("demo", "dev"), stageStatus{Promotions: 1}); err != nil {
		t.Fatal(err)
	}
	changes, ready, err := state.Watch[stageStatus](ctx, kv, state.Prefix("demo"), false)
	if err != nil {
		t.Fatal(err)
	}
	next := func() state.Change[stageStatus] {
		t.Helper()
		select {
		case c := <-changes:
			return c
		case <-time.After(20 * time.Second):
			t.Fatal("no change seen")
		}
		return state.Change[stageStatus]{}
	}
	if c := next(); c.Key != "demo.dev" || c.Value.Promotions != 1 || !c.Initial {
		t.Errorf("initial = %+v", c)
	}
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("initial values never marked ready")
	}
	if _, _, err := state.Update(ctx, kv, state.Key("demo", "dev"), func(cur stageStatus, _ bool) (stageStatus, error) {
		cur.Promotions++
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	if c := next(); c.Value.Promotions != 2 || c.Deleted || c.Initial {
		t.Errorf("update = %+v", c)
	}
	if err := state.Delete(ctx, kv, state.Key("demo", "dev"), 0); err != nil {
		t.Fatal(err)
	}
	if c := next(); !c.Deleted {
		t.Errorf("delete = %+v", c)
	}
}

// TestWatchKeysOnly: keys and revisions, no values (a value that would not
// decode is still seen), initial ones marked.
func TestWatchKeysOnly(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	kv := s.KV(state.Stages)
	rev, err := kv.Put(ctx, state.Key("demo", "dev"), []byte("not json"))
	if err != nil {
		t.Fatal(err)
	}
	changes, ready, err := state.Watch[stageStatus](ctx, kv, state.Prefix("demo"), false, state.KeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("initial values never marked ready")
	}
	// Once ready, the initial change is in the channel.
	select {
	case c := <-changes:
		if c.Key != "demo.dev" || c.Revision != rev || !c.Initial || c.Deleted || c.Value.Promotions != 0 || c.Value.Writers != nil {
			t.Errorf("initial = %+v", c)
		}
	default:
		t.Fatal("ready closed before the initial change was sent")
	}
	if err := state.Delete(ctx, kv, state.Key("demo", "dev"), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-changes:
		if !c.Deleted || c.Initial {
			t.Errorf("delete = %+v", c)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no change seen")
	}
}
