package dispatch

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// The reconcile pass works projects side by side: while it is stuck in
// project a's work (queueing a promotion nobody queued, held in the
// Queued hook), it queues project b's. Project a is stored first, so a
// pass that worked projects one after another would not reach b until a
// is released.
func TestReconcileWorksProjectsSideBySide(t *testing.T) {
	t.Parallel()
	env := newHoldEnv(t)
	ctx := t.Context()
	for _, project := range []string{"a", "b"} {
		p := &model.Promotion{TypeMeta: kargo(model.KindPromotion), ObjectMeta: model.ObjectMeta{Name: "dev.1", Namespace: project},
			Spec: model.PromotionSpec{Stage: "dev", Freight: "f1"}}
		if _, err := env.store.PutObject(ctx, p, 0); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	var once sync.Once
	releaseOnce := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseOnce)
	queued := map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}
	d := New(Options{Store: env.store, Logger: slog.New(slog.DiscardHandler), PassWorkers: 2,
		Queued: func(ctx context.Context, project string, _ *model.Promotion) error {
			close(queued[project])
			if project == "a" {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		}})
	done := make(chan error, 1)
	go func() { done <- d.Reconcile(ctx) }()
	for _, project := range []string{"a", "b"} {
		select {
		case <-queued[project]:
		case err := <-done:
			t.Fatalf("the pass ended (%v) before queueing project %s's promotion", err, project)
		case <-time.After(60 * time.Second):
			t.Fatalf("project %s's promotion was not queued while project a was held", project)
		}
	}
	releaseOnce()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the pass did not end once released")
	}
}
