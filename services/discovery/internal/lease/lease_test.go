package lease_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery/internal/lease"
)

func TestLeaseTakeover(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "leases"})
	if err != nil {
		t.Fatal(err)
	}
	ttl := 300 * time.Millisecond
	a, b := lease.New(kv, "a", ttl), lease.New(kv, "b", ttl)
	if ok, _, err := a.Acquire(t.Context(), "demo.w"); !ok || err != nil {
		t.Fatalf("a: %t, %v", ok, err)
	}
	if ok, holder, err := b.Acquire(t.Context(), "demo.w"); ok || holder != "a" || err != nil {
		t.Fatalf("b while a holds: %t %q %v", ok, holder, err)
	}
	if ok, _, _ := a.Acquire(t.Context(), "demo.w"); !ok {
		t.Fatal("a could not renew")
	}
	// a stops renewing (it died): b takes over once the lease expires.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, _, err := b.Acquire(t.Context(), "demo.w")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b never took over")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h, _ := a.Current(t.Context(), "demo.w"); h != "b" {
		t.Fatalf("holder %q, want b", h)
	}
	// Release by a non-holder does nothing; by the holder frees the lease.
	if err := a.Release(t.Context(), "demo.w"); err != nil {
		t.Fatal(err)
	}
	if h, _ := a.Current(t.Context(), "demo.w"); h != "b" {
		t.Fatalf("holder %q after a's release, want b", h)
	}
	if err := b.Release(t.Context(), "demo.w"); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := a.Acquire(t.Context(), "demo.w"); !ok {
		t.Fatal("a could not take a released lease")
	}
}
