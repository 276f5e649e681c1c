package promoter

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/queue"
)

// 100 promotions requested at once on one stage, with two replicas: all
// run, one at a time, in creation order.
func TestPromotionsRunOneAtATimePerStage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", nil)
	f := h.freight("v1", time.Now())
	runner := newFakeRunner(2)
	gate := make(chan struct{})
	// A first promotion holds the stage while the others are requested,
	// so that they all wait in the queue.
	p0 := h.newPromotion(stage, f, "alice")
	first := p0.Name
	runner.Before = func(ctx context.Context, p *model.Promotion, step int) {
		if p.Name == first && step == 0 {
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
	}
	// A long lease: the held promotion must not be taken over because a
	// loaded test machine missed a renewal (takeovers are tested apart).
	longLease := func(c *Config) { c.LeaseTTL = 30 * time.Second }
	h.start("a", runner, longLease)
	h.start("b", runner, longLease)
	h.put(p0)
	h.request(p0)

	const n = 100
	ps := make([]*model.Promotion, n)
	for i := range ps {
		ps[i] = h.newPromotion(stage, f, "alice")
		h.put(ps[i])
	}
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { h.request(p) })
	}
	wg.Wait()
	eventually(t, 2*time.Minute, func() bool {
		r, _ := queue.Get(context.Background(), h.env.Store.KV(state.Promoter), project, "dev")
		return len(r.Pending) == n
	}, func() string { return "all promotions queued" })
	close(gate)
	for _, p := range ps {
		h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	}
	if got := runner.maxActiveOf("dev"); got != 1 {
		t.Fatalf("at most %d promotions ran at once on the stage, want 1", got)
	}
	names := make([]string, n)
	for i, p := range ps {
		names[i] = p.Name
	}
	runner.mu.Lock()
	order := slices.Clone(runner.order[1:])
	runner.mu.Unlock()
	if !slices.Equal(order, names) {
		t.Fatalf("run order differs from creation order:\n got %v\nwant %v", order[:min(5, len(order))], names[:5])
	}
	st := h.stageStatus("dev")
	if st.LastPromotion == nil || st.LastPromotion.Name != ps[n-1].Name || st.CurrentPromotion != nil {
		t.Fatalf("stage status: last %+v current %+v", st.LastPromotion, st.CurrentPromotion)
	}
	if len(st.FreightHistory) != model.MaxFreightHistory {
		t.Fatalf("freight history has %d entries, want %d", len(st.FreightHistory), model.MaxFreightHistory)
	}
	if got := h.getFreight(f.Name); !got.IsCurrentlyIn("dev") {
		t.Fatalf("freight not currently in dev: %+v", got.Status)
	}
	eventually(t, 10*time.Second, func() bool {
		st := h.stageStatus("dev")
		return st.Health != nil && st.Health.Status == model.HealthStateHealthy
	}, func() string { return "stage Healthy (no checks)" })
	eventually(t, 10*time.Second, func() bool {
		return len(h.events.of(events.TypePromotionSucceeded, "")) == n+1 && len(h.events.of(events.TypePromotionStarted, "")) == n+1 &&
			len(h.events.of(events.TypePromotionStepFinished, "")) == 2*(n+1)
	}, func() string {
		return fmt.Sprintf("events: %d succeeded, %d started, %d steps", len(h.events.of(events.TypePromotionSucceeded, "")),
			len(h.events.of(events.TypePromotionStarted, "")), len(h.events.of(events.TypePromotionStepFinished, "")))
	})
}

// Stages are independent: promotions of different stages run at once.
func TestStagesRunInParallel(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	f := h.freight("v1", time.Now())
	release := make(chan struct{})
	var mu sync.Mutex
	running := map[string]bool{}
	runner := newFakeRunner(1)
	runner.Before = func(ctx context.Context, p *model.Promotion, _ int) {
		mu.Lock()
		running[p.Spec.Stage] = true
		mu.Unlock()
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	h.start("a", runner, nil)
	var ps []*model.Promotion
	for i := range 3 {
		ps = append(ps, h.promote(h.stage(fmt.Sprintf("s%d", i), nil), f, "alice"))
	}
	eventually(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(running) == 3
	}, func() string { return fmt.Sprintf("running on %d stages at once, want 3", len(running)) })
	close(release)
	for _, p := range ps {
		h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	}
}

// A replica stopped mid-promotion: the other resumes at the saved step
// without repeating the steps already done.
func TestResumeOnOtherReplica(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", nil)
	f := h.freight("v1", time.Now())

	reached := make(chan struct{}, 1)
	first := newFakeRunner(3)
	first.Before = func(ctx context.Context, _ *model.Promotion, step int) {
		if step == 1 {
			reached <- struct{}{}
			<-ctx.Done() // hangs until the replica dies
		}
	}
	a := h.start("a", first, nil)
	p := h.promote(stage, f, "alice")
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("promotion did not reach step 1")
	}
	second := newFakeRunner(3)
	h.start("b", second, nil)
	a.stop(t)

	got := h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	if ran := first.ranSteps(p.Name); !slices.Equal(ran, []int{0}) {
		t.Fatalf("first replica ran steps %v, want [0]", ran)
	}
	if ran := second.ranSteps(p.Name); !slices.Equal(ran, []int{1, 2}) {
		t.Fatalf("second replica ran steps %v, want [1 2]", ran)
	}
	if got.Status.CurrentStep != 3 || len(got.Status.StepExecutionMetadata) != 3 {
		t.Fatalf("status %+v", got.Status)
	}
	if n := len(h.events.of(events.TypePromotionStarted, p.Name)); n != 1 {
		t.Fatalf("%d PromotionStarted events, want 1", n)
	}
}

// A replica that died without releasing its lease (a crash): a replica
// started later takes the stage over once the lease expires and resumes
// the running promotion at its saved step.
func TestTakeoverAfterLeaseExpiry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", nil)
	f := h.freight("v1", time.Now())
	p := h.newPromotion(stage, f, "alice")
	ref := f.Ref()
	p.Status.Phase, p.Status.Freight, p.Status.CurrentStep = model.PromotionPhaseRunning, &ref, 2
	p.Status.StepExecutionMetadata = []model.StepExecutionMetadata{{Status: model.PromotionStepStatusSucceeded}, {Status: model.PromotionStepStatusSucceeded}}
	h.put(p)
	ctx := context.Background()
	expires := time.Now().Add(1500 * time.Millisecond)
	if _, err := queue.Update(ctx, h.env.Store.KV(state.Promoter), project, "dev", func(r *queue.Record, _ bool) error {
		r.Running = &queue.Entry{Name: p.Name, Freight: f.Name}
		r.Holder, r.Expires = "dead", expires
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	runner := newFakeRunner(3)
	h.start("b", runner, nil)
	h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	if ran := runner.ranSteps(p.Name); !slices.Equal(ran, []int{2}) {
		t.Fatalf("ran steps %v, want [2]", ran)
	}
	if time.Now().Before(expires) {
		t.Fatal("the stage was taken before the lease expired")
	}
}

// On a superseding stage, pending promotions older than a newer pending
// one are aborted; the newest runs.
func TestSupersede(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", func(s *model.Stage) {
		s.Annotations = map[string]string{model.AnnotationSupersede: "true"}
	})
	f := h.freight("v1", time.Now())
	release := make(chan struct{})
	started := make(chan string, 10)
	runner := newFakeRunner(1)
	runner.Before = func(ctx context.Context, p *model.Promotion, _ int) {
		started <- p.Name
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	h.start("a", runner, nil)
	first := h.promote(stage, f, "alice")
	if got := <-started; got != first.Name {
		t.Fatalf("started %s, want %s", got, first.Name)
	}
	var later []*model.Promotion
	for range 3 {
		later = append(later, h.promote(stage, f, "alice"))
	}
	eventually(t, 10*time.Second, func() bool {
		r, _ := queue.Get(context.Background(), h.env.Store.KV(state.Promoter), project, "dev")
		return len(r.Pending) == 3
	}, func() string { return "3 promotions queued" })
	close(release)
	h.waitPhase(first.Name, model.PromotionPhaseSucceeded)
	for _, p := range later[:2] {
		got := h.waitPhase(p.Name, model.PromotionPhaseAborted)
		if !strings.Contains(got.Status.Message, "superseded by "+later[2].Name) {
			t.Fatalf("message %q", got.Status.Message)
		}
	}
	h.waitPhase(later[2].Name, model.PromotionPhaseSucceeded)
	if n := len(h.events.of(events.TypePromotionFailed, "")); n < 2 {
		eventually(t, 5*time.Second, func() bool { return len(h.events.of(events.TypePromotionFailed, "")) == 2 },
			func() string { return "2 PromotionFailed events" })
	}
}

// Abort: a pending promotion ends Aborted at once; a running one is
// canceled with the abort cause and ends Aborted.
func TestAbort(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", nil)
	f := h.freight("v1", time.Now())
	started := make(chan string, 10)
	runner := newFakeRunner(2)
	runner.Before = func(ctx context.Context, p *model.Promotion, step int) {
		if step == 0 {
			started <- p.Name
			<-ctx.Done() // runs until aborted
		}
	}
	h.start("a", runner, nil)
	h.start("b", runner, nil)
	running := h.promote(stage, f, "alice")
	if got := <-started; got != running.Name {
		t.Fatalf("started %s", got)
	}
	pending := h.promote(stage, f, "alice")
	eventually(t, 10*time.Second, func() bool {
		r, _ := queue.Get(context.Background(), h.env.Store.KV(state.Promoter), project, "dev")
		return len(r.Pending) == 1
	}, func() string { return "promotion queued" })

	h.publish(events.Ref{Kind: model.KindPromotion, Name: pending.Name}, events.PromotionAbortRequested{Promotion: pending.Name, Stage: "dev"})
	h.waitPhase(pending.Name, model.PromotionPhaseAborted)
	if p := h.promotion(running.Name); p.Status.Phase != model.PromotionPhaseRunning {
		t.Fatalf("running promotion is %s", p.Status.Phase)
	}
	h.publish(events.Ref{Kind: model.KindPromotion, Name: running.Name}, events.PromotionAbortRequested{Promotion: running.Name, Stage: "dev"})
	h.waitPhase(running.Name, model.PromotionPhaseAborted)
	eventually(t, 10*time.Second, func() bool {
		evs := h.events.of(events.TypePromotionFailed, "")
		return len(evs) == 2
	}, func() string { return "2 PromotionFailed events" })
	if st := h.stageStatus("dev"); st.CurrentPromotion != nil || st.LastPromotion == nil || st.LastPromotion.Name != running.Name {
		t.Fatalf("stage status %+v", st)
	}
}

// A stage verifying its current freight holds its next promotion until
// StageVerified.
func TestVerifyingStageBlocksNextPromotion(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", func(s *model.Stage) { s.Spec.Verification = &model.Verification{} })
	f1 := h.freight("v1", time.Now())
	f2 := h.freight("v2", time.Now())
	h.start("a", newFakeRunner(1), nil)
	p1 := h.promote(stage, f1, "alice")
	h.waitPhase(p1.Name, model.PromotionPhaseSucceeded)
	p2 := h.promote(stage, f2, "alice")
	eventually(t, 10*time.Second, func() bool {
		r, _ := queue.Get(context.Background(), h.env.Store.KV(state.Promoter), project, "dev")
		return r.Blocked != ""
	}, func() string { return "queue blocked" })
	if p := h.promotion(p2.Name); p.Status.Phase != model.PromotionPhasePending {
		t.Fatalf("second promotion is %s while the stage verifies", p.Status.Phase)
	}
	// The verifier records the verification, then announces it.
	if _, _, err := state.Update(context.Background(), h.env.Store.KV(state.Stages), state.Key(project, "dev"), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
		s.FreightHistory[0].VerificationHistory = []model.VerificationInfo{{ID: "v", Phase: model.VerificationPhaseSuccessful}}
		return s, nil
	}); err != nil {
		t.Fatal(err)
	}
	h.publish(events.Ref{Kind: model.KindStage, Name: "dev"}, events.StageVerified{Stage: "dev", Freight: f1.Name, Phase: "Successful"})
	h.waitPhase(p2.Name, model.PromotionPhaseSucceeded)
	eventually(t, 10*time.Second, func() bool {
		f1, f2 := h.getFreight(f1.Name), h.getFreight(f2.Name)
		return !f1.IsCurrentlyIn("dev") && f2.IsCurrentlyIn("dev")
	}, func() string { return "freight moved from v1 to v2" })
}

// A failing runner ends the promotion Errored with PromotionFailed.
func TestRunnerError(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	stage := h.stage("dev", nil)
	f := h.freight("v1", time.Now())
	h.start("a", errRunner{}, nil)
	p := h.promote(stage, f, "alice")
	got := h.waitPhase(p.Name, model.PromotionPhaseFailed)
	if got.Status.Message != "step failed" {
		t.Fatalf("message %q", got.Status.Message)
	}
	eventually(t, 10*time.Second, func() bool { return len(h.events.of(events.TypePromotionFailed, p.Name)) == 1 },
		func() string { return "PromotionFailed" })
	if st := h.stageStatus("dev"); st.Phase != model.StagePhaseFailed || len(st.FreightHistory) != 0 {
		t.Fatalf("stage status %+v", st)
	}
}

type errRunner struct{}

func (errRunner) Run(context.Context, *model.Promotion, func(context.Context, *model.Promotion) error) (Result, error) {
	return Result{Phase: model.PromotionPhaseFailed, Message: "step failed"}, nil
}

func (errRunner) Health(context.Context, string, []model.HealthCheckStep) model.Health {
	return model.Health{Status: model.HealthStateHealthy}
}
