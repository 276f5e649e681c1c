package lease_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/lease"
)

// join starts a ring member until the test ends.
func join(t *testing.T, kv jetstream.KeyValue, id string, ttl time.Duration) (*lease.Ring, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := lease.NewRing(kv, id, ttl)
	if err := r.Join(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return r, cancel
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Rendezvous hashing spreads keys evenly and moves only a leaving member's
// keys.
func TestRendezvous(t *testing.T) {
	t.Parallel()
	members := []string{"a", "b", "c"}
	count := map[string]int{}
	owner := map[string]string{}
	for i := range 3000 {
		k := fmt.Sprintf("demo.w-%d", i)
		owner[k] = lease.Rendezvous(members, k)
		count[owner[k]]++
	}
	for _, m := range members {
		if count[m] < 800 || count[m] > 1200 {
			t.Fatalf("uneven spread: %v", count)
		}
	}
	for k, o := range owner {
		now := lease.Rendezvous([]string{"a", "c"}, k)
		if o != "b" && now != o {
			t.Fatalf("%s moved from %s to %s when b left", k, o, now)
		}
	}
	if lease.Rendezvous(nil, "k") != "" {
		t.Fatal("an owner without members")
	}
}

// Replicas see each other join and leave; a lease lives with its holder's
// heartbeat: held while it beats, taken over with a higher token once it
// stopped, at once after a release.
func TestRingLeases(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	ctx := t.Context()
	const ttl = 600 * time.Millisecond
	a, stopA := join(t, kv, "a", ttl)
	b, _ := join(t, kv, "b", ttl)
	waitFor(t, "both replicas live", func() bool {
		return slices.Equal(a.Live(), []string{"a", "b"}) && slices.Equal(b.Live(), []string{"a", "b"})
	})
	if err := a.Healthy(); err != nil {
		t.Fatal(err)
	}
	ga, err := a.Acquire(ctx, "demo.w")
	if err != nil {
		t.Fatal(err)
	}
	// Held for longer than the ttl without a write to the lease.
	time.Sleep(2 * ttl)
	if _, err := b.Acquire(ctx, "demo.w"); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("b took a live lease: %v", err)
	}
	if g, ok := a.Grant("demo.w"); !ok || g.Token != ga.Token {
		t.Fatalf("a's grant %+v %v", g, ok)
	}
	if h, _ := lease.NewRing(kv, "observer", 0).Current(ctx, "demo.w"); h != "a" {
		t.Fatalf("current holder %q", h)
	}
	// a releases: b takes it at once, with a higher token.
	if err := a.Release(ctx, "demo.w"); err != nil {
		t.Fatal(err)
	}
	gb, err := b.Acquire(ctx, "demo.w")
	if err != nil || gb.Token <= ga.Token {
		t.Fatalf("after release: %+v %v", gb, err)
	}
	// a takes another, then dies (no release, no leave): b takes it once
	// a's heartbeat expired, and a's token is fenced off.
	ga, err = a.Acquire(ctx, "demo.x")
	if err != nil {
		t.Fatal(err)
	}
	stopA()
	<-a.Left()
	waitFor(t, "a gone", func() bool { return slices.Equal(b.Live(), []string{"b"}) })
	gx, err := b.Acquire(ctx, "demo.x")
	if err != nil || gx.Token <= ga.Token {
		t.Fatalf("take over: %+v %v", gx, err)
	}
	var fence uint64
	if err := lease.Admit(&fence, gx); err != nil {
		t.Fatal(err)
	}
	if err := lease.Admit(&fence, ga); !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("the dead holder admitted: %v", err)
	}
	// a stopped renewing: its grants lapse, and it says so.
	waitFor(t, "a unhealthy", func() bool { return a.Healthy() != nil })
	if _, ok := a.Grant("demo.x"); ok {
		t.Fatal("a acts on a lapsed grant")
	}
}

// Leave makes the others see the replica gone at once.
func TestRingLeave(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	a, _ := join(t, kv, "a", time.Hour)
	b, _ := join(t, kv, "b", time.Hour)
	waitFor(t, "both live", func() bool { return len(a.Live()) == 2 })
	if err := b.Leave(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Changes():
	case <-time.After(20 * time.Second):
		t.Fatal("no change signalled")
	}
	waitFor(t, "b gone", func() bool { return slices.Equal(a.Live(), []string{"a"}) })
	if a.Owner("demo.w") != "a" {
		t.Fatal("a does not own every key alone")
	}
	if err := lease.NewRing(kv, "c", time.Hour).Healthy(); err == nil {
		t.Fatal("a ring that never joined is healthy")
	}
}
