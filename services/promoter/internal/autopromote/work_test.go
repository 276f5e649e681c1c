package autopromote

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// A project whose task blocks does not hold up another project's; tasks
// of one key waiting twice run once; a failed task is tried again.
func TestWorkPartitionsByProject(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	w := NewWork(2, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { cancel(); w.Wait() })

	release := make(chan struct{})
	busyStarted := make(chan struct{})
	w.Add(ctx, "busy", "block", func(context.Context) error {
		close(busyStarted)
		<-release
		return nil
	})
	<-busyStarted
	var busyRuns atomic.Int32
	for range 5 {
		w.Add(ctx, "busy", "same", func(context.Context) error { busyRuns.Add(1); return nil })
	}
	other := make(chan struct{})
	w.Add(ctx, "other", "one", func(context.Context) error { close(other); return nil })
	select {
	case <-other:
	case <-time.After(30 * time.Second):
		t.Fatal("another project's task waited for the busy project")
	}
	close(release)

	var tries atomic.Int32
	failed := make(chan struct{})
	w.Add(ctx, "flaky", "t", func(context.Context) error {
		if tries.Add(1) < 2 {
			return errors.New("transient")
		}
		close(failed)
		return nil
	})
	select {
	case <-failed:
	case <-time.After(30 * time.Second):
		t.Fatal("a failed task was not tried again")
	}
	deadline := time.Now().Add(30 * time.Second)
	for busyRuns.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := busyRuns.Load(); n != 1 {
		t.Errorf("a task queued 5 times while waiting ran %d times, want 1", n)
	}
}
