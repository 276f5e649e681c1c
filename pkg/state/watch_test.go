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
	if c := next(); c.Key != "demo.dev" || c.Value.Promotions != 1 {
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
	if c := next(); c.Value.Promotions != 2 || c.Deleted {
		t.Errorf("update = %+v", c)
	}
	if err := state.Delete(ctx, kv, state.Key("demo", "dev"), 0); err != nil {
		t.Fatal(err)
	}
	if c := next(); !c.Deleted {
		t.Errorf("delete = %+v", c)
	}
}
