package reconcile_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/reconcile"
)

// A pass runs at start, on every interval and when woken; an error does
// not stop the loop.
func TestLoop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		interval time.Duration
		wake     bool
	}{
		{"interval", 20 * time.Millisecond, false},
		{"wake", time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			l := reconcile.New(tt.interval)
			var passes, failures atomic.Int32
			done := make(chan struct{})
			go func() {
				defer close(done)
				l.Run(ctx, func(context.Context) error {
					if passes.Add(1)%2 == 0 {
						return errors.New("boom")
					}
					return nil
				}, func(error) { failures.Add(1) })
			}()
			deadline := time.Now().Add(10 * time.Second)
			for passes.Load() < 4 && time.Now().Before(deadline) {
				if tt.wake {
					l.Wake()
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			<-done
			if passes.Load() < 4 || failures.Load() < 1 {
				t.Fatalf("%d passes, %d failures", passes.Load(), failures.Load())
			}
		})
	}
}

func TestJitter(t *testing.T) {
	t.Parallel()
	for range 100 {
		if d := reconcile.Jitter(time.Second); d < 800*time.Millisecond || d > time.Second {
			t.Fatalf("jitter %s", d)
		}
	}
	if reconcile.New(0).Interval() != reconcile.DefaultInterval {
		t.Fatal("default interval")
	}
}
