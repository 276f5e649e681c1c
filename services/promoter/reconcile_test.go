package promoter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/dispatch"
	"github.com/caravan-cd/caravan/services/promoter/internal/queue"
)

// fastReconcile makes a replica reconcile every 200ms.
func fastReconcile(c *Config) { c.ReconcileInterval = 200 * time.Millisecond }

// A Promotion stored without PromotionRequested (applied as a manifest)
// runs: the promoter sees it stored.
func TestAppliedPromotionRuns(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", nil)
	f := h.freight("v1", time.Now())
	h.start("a", newFakeRunner(1), nil) // the default interval: the watch queues it
	p := h.newPromotion(stage, f, "alice")
	h.put(p) // no event
	h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	eventually(t, 10*time.Second, func() bool { return len(h.events.of(events.TypePromotionSucceeded, p.Name)) == 1 },
		func() string { return "PromotionSucceeded" })
}

// A promotion that finished without its outcome event (the replica died
// between the two) gets the event from the reconciler; a queue blocked for
// a verification whose StageVerified was lost is unblocked.
func TestReconcileRepairsLostEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", func(s *model.Stage) { s.Spec.Verification = &model.Verification{} })
	f1 := h.freight("v1", time.Now())
	f2 := h.freight("v2", time.Now())

	// Finished, recorded, never announced.
	done := h.newPromotion(stage, f1, "alice")
	done.Status.Phase = model.PromotionPhaseSucceeded
	done.Status.FinishedAt = model.NewTime(time.Now())
	h.put(done)
	h.start("a", newFakeRunner(1), fastReconcile)
	eventually(t, 30*time.Second, func() bool { return len(h.events.of(events.TypePromotionSucceeded, done.Name)) == 1 },
		func() string { return "PromotionSucceeded of the finished promotion" })
	eventually(t, 10*time.Second, func() bool { return h.promotion(done.Name).Annotations[dispatch.AnnotationAnnounced] != "" },
		func() string { return "the promotion marked announced" })

	// A promotion, then one that waits for dev's verification.
	p1 := h.promote(stage, f1, "alice")
	h.waitPhase(p1.Name, model.PromotionPhaseSucceeded)
	p2 := h.promote(stage, f2, "alice")
	eventually(t, 10*time.Second, func() bool {
		r, _ := queue.Get(context.Background(), h.env.Store.KV(state.Promoter), project, "dev")
		return r.Blocked != ""
	}, func() string { return "queue blocked" })
	// The verifier records the outcome; its StageVerified is lost.
	if _, _, err := state.Update(context.Background(), h.env.Store.KV(state.Stages), state.Key(project, "dev"), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
		s.FreightHistory[0].VerificationHistory = []model.VerificationInfo{{ID: "v", Phase: model.VerificationPhaseSuccessful}}
		return s, nil
	}); err != nil {
		t.Fatal(err)
	}
	h.waitPhase(p2.Name, model.PromotionPhaseSucceeded)
}

// An auto-promotion that failed, or was aborted, is not tried again however
// often its stage is evaluated (events and reconciler passes), until a
// person asks; then it is tried once more.
func TestFailedAndAbortedAutoPromotionsStaySingle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.policies(model.PromotionPolicy{Stage: "dev", AutoPromotionEnabled: true})
	h.stage("dev", nil)
	failing := true
	var mu sync.Mutex
	runner := newFakeRunner(2)
	runner.Before = func(ctx context.Context, p *model.Promotion, step int) {
		mu.Lock()
		fail := failing
		mu.Unlock()
		switch {
		case p.Spec.Freight != "" && fail && step == 0 && p.Status.CurrentStep == 0 && p.Spec.Freight == firstFreight(h):
			panic(errBoom) // turned into an error by the runner wrapper below
		case step == 1:
			<-ctx.Done() // the second freight runs until aborted
		}
	}
	h.start("a", failOnPanic{runner}, fastReconcile)
	h.start("b", failOnPanic{runner}, fastReconcile)

	f1 := h.freight("v1", time.Now().Add(-time.Minute))
	h.discovered(f1)
	failed := h.waitAuto("dev", f1.Name, model.PromotionPhaseErrored)
	for range 10 {
		h.discovered(f1)
		h.publish(events.Ref{Kind: model.KindStage, Name: "dev"}, events.ResourceApplied{Kind: model.KindStage, Name: "dev"})
	}
	time.Sleep(time.Second) // several reconciler passes on both replicas
	if n := count(h.promotions("dev"), f1.Name); n != 1 {
		t.Fatalf("%d promotions of the failed freight, want 1", n)
	}

	// The newer freight's auto-promotion hangs in step 1 and is aborted,
	// by the annotation alone (its event lost).
	f2 := h.freight("v2", time.Now())
	h.discovered(f2)
	running := h.waitAuto("dev", f2.Name, model.PromotionPhaseRunning)
	eventually(t, 10*time.Second, func() bool { return h.promotion(running.Name).Status.CurrentStep == 1 },
		func() string { return "the auto-promotion at step 1" })
	if err := dispatch.MarkAbort(context.Background(), h.env.Store, project, running.Name, "test"); err != nil {
		t.Fatal(err)
	}
	h.waitPhase(running.Name, model.PromotionPhaseAborted)
	if got := runner.ranSteps(running.Name); len(got) != 1 || got[0] != 0 {
		t.Fatalf("steps run %v, want [0]: the abort stops at the step boundary", got)
	}
	for range 10 {
		h.discovered(f2)
	}
	time.Sleep(time.Second)
	if n := count(h.promotions("dev"), f2.Name); n != 1 {
		t.Fatalf("%d promotions of the aborted freight, want 1", n)
	}

	// A person asks: the newest freight is tried again, once.
	mu.Lock()
	failing = false
	mu.Unlock()
	runner.Before = nil
	h.publish(events.Ref{Kind: model.KindStage, Name: "dev"}, events.AutoPromotionResumeRequested{Stage: "dev"})
	eventually(t, 30*time.Second, func() bool {
		for _, p := range h.promotions("dev") {
			if p.Spec.Freight == f2.Name && p.Name != running.Name && p.Status.Phase == model.PromotionPhaseSucceeded {
				return true
			}
		}
		return false
	}, func() string { return "a second attempt of the aborted freight" })
	time.Sleep(time.Second)
	if n := count(h.promotions("dev"), f2.Name); n != 2 {
		t.Fatalf("%d promotions of the retried freight, want 2", n)
	}
	if failed.Name == "" {
		t.Fatal("no failed promotion")
	}
}

var errBoom = errors.New("boom")

func firstFreight(h *harness) string {
	var oldest model.Freight
	items, _, _ := state.List[model.Freight](context.Background(), h.env.Store.KV(state.Freight), state.Prefix(project), 0, "")
	for i, it := range items {
		if i == 0 || it.Value.CreationTimestamp.Before(oldest.CreationTimestamp.Time) {
			oldest = it.Value
		}
	}
	return oldest.Name
}

func count(ps []model.Promotion, freight string) int {
	n := 0
	for _, p := range ps {
		if p.Spec.Freight == freight {
			n++
		}
	}
	return n
}

// failOnPanic turns a panic of errBoom in the fake runner into a step
// error, so a promotion ends Errored.
type failOnPanic struct{ *fakeRunner }

func (f failOnPanic) Run(ctx context.Context, p *model.Promotion, save func(context.Context, *model.Promotion) error) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); !ok || !errors.Is(e, errBoom) {
				panic(r)
			}
			res, err = Result{Phase: model.PromotionPhaseErrored, Message: "boom"}, nil
		}
	}()
	return f.fakeRunner.Run(ctx, p, save)
}

// A replica whose stage lease passed on while it was paused cannot write
// the promotion any more: its save is fenced off, and the new holder's
// record stands.
func TestPausedHolderIsFencedOff(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", nil)
	f := h.freight("v1", time.Now())
	paused := make(chan struct{})
	resume := make(chan struct{})
	runner := newFakeRunner(2)
	runner.Before = func(ctx context.Context, p *model.Promotion, step int) {
		if step == 1 {
			close(paused)
			<-resume // a paused process: deaf to its context
		}
	}
	h.start("a", runner, nil)
	p := h.promote(stage, f, "alice")
	<-paused
	// Meanwhile the lease lapsed and replica b took the stage and wrote
	// the promotion under its token.
	kv := h.env.Store.KV(state.Promoter)
	var taken lease.Grant
	if _, err := queue.UpdateRev(context.Background(), kv, project, "dev", func(r *queue.Record, rev uint64) error {
		r.Expires = time.Now().Add(-time.Second)
		var err error
		taken, err = r.Take("b", rev, time.Hour, time.Now())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := state.Update(context.Background(), h.env.Store.KV(state.Promotions), state.Key(project, p.Name), func(cur model.Promotion, _ bool) (model.Promotion, error) {
		cur.Status.Message = "resumed by b"
		return cur, lease.Admit(&cur.Status.Fence, taken)
	}); err != nil {
		t.Fatal(err)
	}
	close(resume)
	time.Sleep(time.Second) // a's step 1 ends and tries to save
	got := h.promotion(p.Name)
	if got.Status.Message != "resumed by b" || got.Status.CurrentStep != 1 || got.Status.Fence != taken.Token {
		t.Fatalf("the paused holder wrote: message %q, step %d, fence %d (b's %d)", got.Status.Message, got.Status.CurrentStep, got.Status.Fence, taken.Token)
	}
	if steps := runner.ranSteps(p.Name); fmt.Sprint(steps) != "[0 1]" {
		t.Logf("steps run by a: %v", steps)
	}
}
