package state_test

import (
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
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

// TestWatchWaitsForJetStream: a watch asked for while JetStream does not
// answer (here the server is down for longer than a request's timeout; a
// cluster electing a stream leader answers the same way) starts once it
// answers again instead of failing, so a service restarted during an
// election waits for it rather than exiting.
func TestWatchWaitsForJetStream(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	s := openOn(t, srv)
	ctx := t.Context()
	kv := s.KV(state.Stages)
	if _, err := state.Put(ctx, kv, state.Key("demo", "dev"), stageStatus{Promotions: 1}); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	type started struct {
		changes <-chan state.Change[stageStatus]
		err     error
	}
	done := make(chan started, 1)
	go func() {
		changes, _, err := state.Watch[stageStatus](ctx, kv, state.Prefix("demo"), false)
		done <- started{changes, err}
	}()
	// Longer than jetstream's default request timeout (5 s): one attempt
	// alone fails.
	time.Sleep(6 * time.Second)
	srv.Restart(t)
	var w started
	select {
	case w = <-done:
	case <-time.After(state.TransientPatience + 30*time.Second):
		t.Fatal("watch never started")
	}
	if w.err != nil {
		t.Fatalf("watch while JetStream was down: %v", w.err)
	}
	select {
	case c := <-w.changes:
		if c.Key != "demo.dev" || c.Value.Promotions != 1 {
			t.Errorf("first change = %+v", c)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no value seen")
	}
}
