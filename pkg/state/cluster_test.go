package state_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// TestClusterR3Buckets declares every bucket with three replicas on a
// three-node cluster, stops the leader of one bucket's stream while
// compare-and-set updates go on, and loses none of them.
func TestClusterR3Buckets(t *testing.T) {
	t.Parallel()
	cl := testenv.Cluster(t, 3)
	js, err := jetstream.New(cl.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// A fresh cluster may still be placing its first R3 assets: retry.
	deadline := time.Now().Add(30 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = state.Setup(sctx, js, 3)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s, err := state.Open(ctx, js, nil)
	if err != nil {
		t.Fatal(err)
	}
	kv := s.KV(state.Stages)
	key := state.Key("demo", "prod")
	const n = 40
	// No retry here: Update itself rides through the leader election
	// (a write whose answer is lost is checked against a leader read and
	// fn called again on what is there), and writes go on while the
	// election runs. fn is idempotent, as handlers are.
	bump := func(i int) error {
		id := fmt.Sprint(i)
		actx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		_, _, err := state.Update(actx, kv, key, func(cur stageStatus, _ bool) (stageStatus, error) {
			if slices.Contains(cur.Writers, id) {
				return cur, state.ErrNoChange
			}
			cur.Writers = append(cur.Writers, id)
			return cur, nil
		})
		return err
	}
	for i := range n {
		if i == n/2 {
			leader := cl.StreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "KV_"+string(state.Stages))
			if leader == nil {
				t.Fatal("no leader for the stages bucket")
			}
			// Stop the leader and write at once, during the election.
			go cl.Stop(cl.Index(leader))
		}
		if err := bump(i); err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	got, _, err := state.Get[stageStatus](ctx, kv, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Writers) != n {
		t.Errorf("%d updates kept, want %d: %v", len(got.Writers), n, got.Writers)
	}
}
