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
// three-node cluster, stops the leader of one bucket's stream, and keeps
// compare-and-set updates working without losing one.
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
	// Each attempt gets its own short timeout: a request in flight while
	// the leader goes away waits for its whole context.
	bump := func(i int) error {
		id := fmt.Sprint(i)
		deadline := time.Now().Add(60 * time.Second)
		for {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			// Idempotent, as handlers are: an attempt whose write landed but
			// whose answer was lost must not count twice.
			_, _, err := state.Update(actx, kv, key, func(cur stageStatus, _ bool) (stageStatus, error) {
				if slices.Contains(cur.Writers, id) {
					return cur, state.ErrNoChange
				}
				cur.Writers = append(cur.Writers, id)
				return cur, nil
			})
			cancel()
			if err == nil || time.Now().After(deadline) {
				return err
			}
			time.Sleep(100 * time.Millisecond) // failover in progress
		}
	}
	deadline = time.Now().Add(60 * time.Second)
	for i := range n {
		if i == n/2 {
			leader := cl.StreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "KV_"+string(state.Stages))
			if leader == nil {
				t.Fatal("no leader for the stages bucket")
			}
			cl.Stop(cl.Index(leader))
			// Wait for a new leader before writing again. Writing during
			// the election once (in ~30 runs, under load) lost an earlier
			// compare-and-set update: the fault tests of distributed mode
			// look at that window.
			for cl.StreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "KV_"+string(state.Stages)) == nil {
				if time.Now().After(deadline) {
					t.Fatal("no new leader for the stages bucket")
				}
				time.Sleep(50 * time.Millisecond)
			}
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
