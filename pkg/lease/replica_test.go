package lease_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

func TestClaimRefusesDuplicates(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	ctx := t.Context()
	r, err := lease.Claim(ctx, srv.Conn(t), "promoter", "p-0", 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// Another process with the same ID is refused.
	if _, err := lease.Claim(ctx, srv.Conn(t), "promoter", "p-0", 100*time.Millisecond); !errors.Is(err, lease.ErrDuplicate) {
		t.Fatalf("duplicate claimed: %v", err)
	}
	// Another service, or another ID, is fine.
	if _, err := lease.Claim(ctx, srv.Conn(t), "verifier", "p-0", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Once the first process is gone (a restart), its ID is free.
	r.Close()
	if _, err := lease.Claim(ctx, srv.Conn(t), "promoter", "p-0", 100*time.Millisecond); err != nil {
		t.Fatalf("restarted replica refused: %v", err)
	}
}

// Processes starting at the same time with one ID: exactly one goes on.
func TestClaimConcurrentStart(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	ctx := t.Context()
	var mu sync.Mutex
	ok, dup := 0, 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			_, err := lease.Claim(ctx, srv.Conn(t), "discovery", "d", 300*time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, lease.ErrDuplicate):
				dup++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok != 1 || dup != 3 {
		t.Fatalf("%d claimed, %d refused", ok, dup)
	}
}
