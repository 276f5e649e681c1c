package lease_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(testenv.NATS(t).Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "leases", Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// Two replicas share a key: one holds it, the other takes over only after
// it expired, with a higher token, and the first one's grant is gone.
func TestLeasesTakeOver(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	ctx := t.Context()
	a := lease.New(kv, "a", 300*time.Millisecond)
	b := lease.New(kv, "b", 300*time.Millisecond)
	ga, err := a.Acquire(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Acquire(ctx, "w"); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("b took a held lease: %v", err)
	}
	if h, _ := b.Current(ctx, "w"); h != "a" {
		t.Fatalf("current holder %q", h)
	}
	// a renews: same token.
	if g, err := a.Acquire(ctx, "w"); err != nil || g.Token != ga.Token {
		t.Fatalf("renew: %+v %v", g, err)
	}
	time.Sleep(400 * time.Millisecond)
	gb, err := b.Acquire(ctx, "w")
	if err != nil || gb.Token <= ga.Token {
		t.Fatalf("take over: %+v %v (a's token %d)", gb, err, ga.Token)
	}
	// a's grant is stale: renewing it fails, and a cannot take it back.
	if _, err := a.Acquire(ctx, "w"); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("a took a live lease back: %v", err)
	}
	if _, ok := a.Grant("w"); ok {
		t.Fatal("a still remembers its grant")
	}
	// b releases: a takes it at once, with a higher token still.
	if err := b.Release(ctx, "w"); err != nil {
		t.Fatal(err)
	}
	g, err := a.Acquire(ctx, "w")
	if err != nil || g.Token <= gb.Token {
		t.Fatalf("after release: %+v %v", g, err)
	}
}

// A restarted replica (same ID, new Leases) takes its lease at once with a
// new token: its predecessor's writes are fenced off.
func TestLeasesRestartedHolder(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	ctx := t.Context()
	g1, err := lease.New(kv, "a", time.Hour).Acquire(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	g2, err := lease.New(kv, "a", time.Hour).Acquire(ctx, "w")
	if err != nil || g2.Token <= g1.Token {
		t.Fatalf("restart: %+v %v", g2, err)
	}
	var fence uint64
	if err := lease.Admit(&fence, g2); err != nil {
		t.Fatal(err)
	}
	if err := lease.Admit(&fence, g1); !errors.Is(err, lease.ErrFenced) {
		t.Fatalf("predecessor admitted: %v", err)
	}
}

// Many replicas race for one lease: exactly one holds it at a time.
func TestLeasesOneHolder(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	ctx := t.Context()
	var won atomic.Int32
	done := make(chan struct{})
	for i := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			l := lease.New(kv, string(rune('a'+i)), time.Hour)
			if _, err := l.Acquire(ctx, "w"); err == nil {
				won.Add(1)
			} else if !errors.Is(err, lease.ErrHeld) {
				t.Error(err)
			}
		}()
	}
	for range 8 {
		<-done
	}
	if won.Load() != 1 {
		t.Fatalf("%d holders", won.Load())
	}
}

// Every runs a job on one replica at a time.
func TestEvery(t *testing.T) {
	t.Parallel()
	kv := bucket(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var runs [2]atomic.Int32
	for i, id := range []string{"a", "b"} {
		l := lease.New(kv, id, time.Minute)
		go lease.Every(ctx, l, "job.gc", 50*time.Millisecond, nil, func(context.Context) error {
			runs[i].Add(1)
			return nil
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for runs[0].Load()+runs[1].Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if runs[0].Load() > 0 && runs[1].Load() > 0 {
		t.Fatalf("both replicas ran the job: %d and %d", runs[0].Load(), runs[1].Load())
	}
	if runs[0].Load()+runs[1].Load() < 5 {
		t.Fatal("the job did not run")
	}
}
