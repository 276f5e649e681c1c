package promoter

import (
	"context"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// verifiedIn records freight as verified in stage and publishes
// StageVerified, as the verifier does after a verification.
func (h *harness) verifiedIn(f *model.Freight, stage string) {
	h.t.Helper()
	h.setFreightStatus(f.Name, func(s *model.FreightStatus) {
		if s.VerifiedIn == nil {
			s.VerifiedIn = map[string]model.VerifiedStage{}
		}
		s.VerifiedIn[stage] = model.VerifiedStage{VerifiedAt: model.NewTime(time.Now().UTC().Truncate(time.Second))}
	})
	h.publish(events.Ref{Kind: model.KindStage, Name: stage}, events.StageVerified{Stage: stage, Freight: f.Name, Phase: "Successful"})
}

// gate adds a control-flow stage (no promotion steps) taking freight of
// origin app from upstream under strategy.
func (h *harness) gate(name string, strategy model.AvailabilityStrategy, upstream ...string) {
	h.t.Helper()
	h.stage(name, func(s *model.Stage) {
		s.Spec.PromotionTemplate = nil
		s.Spec.RequestedFreight[0].Sources = model.FreightSources{Stages: upstream, AvailabilityStrategy: strategy}
	})
}

// TestControlFlowFanInGate is Kargo's fan-in gate (its advanced example):
// two regional stages feed a control-flow stage that requests their
// freight with availabilityStrategy All, and prod, downstream of the gate,
// auto-promotes. The gate takes no promotion: freight verified in every
// region is verified in it at once and flows on to prod; a OneOf gate
// passes freight verified in either region. Real embedded NATS, the
// promoter's own consumers and timers.
func TestControlFlowFanInGate(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.policies(model.PromotionPolicy{StageSelector: &model.PromotionPolicySelector{Name: "glob:*"}, AutoPromotionEnabled: true})
	for _, region := range []string{"eu", "us"} {
		h.stage(region, func(s *model.Stage) {
			s.Spec.RequestedFreight[0].Sources = model.FreightSources{Direct: true}
		})
	}
	h.gate("all-regions", model.AvailabilityStrategyAll, "eu", "us")
	h.gate("any-region", model.AvailabilityStrategyOneOf, "eu", "us")
	h.stage("prod", func(s *model.Stage) {
		s.Spec.RequestedFreight[0].Sources = model.FreightSources{Stages: []string{"all-regions"}}
	})
	h.start("a", newFakeRunner(1), func(c *Config) { c.ControlFlowInterval = time.Hour })

	f1 := h.freight("v1", time.Now().Add(-time.Minute))
	h.verifiedIn(f1, "eu")
	eventually(t, 30*time.Second, func() bool { f := h.getFreight(f1.Name); return f.IsVerifiedIn("any-region") },
		func() string { return "the OneOf gate passes freight verified in one region" })
	if f := h.getFreight(f1.Name); f.IsVerifiedIn("all-regions") {
		t.Fatal("the All gate passed freight verified in one region only")
	}
	if ps := h.promotions("prod"); len(ps) != 0 {
		t.Fatalf("prod promoted %s through a closed gate", ps[0].Spec.Freight)
	}

	h.verifiedIn(f1, "us")
	p := h.waitAuto("prod", f1.Name, model.PromotionPhaseSucceeded)
	f := h.getFreight(f1.Name)
	if !f.IsVerifiedIn("all-regions") || f.IsCurrentlyIn("all-regions") {
		t.Fatalf("the gate holds freight or did not verify it: %+v", f.Status)
	}
	if f.Status.VerifiedIn["all-regions"].VerifiedAt.After(p.CreationTimestamp.Add(time.Second)) {
		t.Fatal("prod was promoted before the gate passed the freight")
	}
	for _, gate := range []string{"all-regions", "any-region"} {
		if ps := h.promotions(gate); len(ps) != 0 {
			t.Fatalf("a control-flow stage was promoted: %+v", ps[0])
		}
		st := h.stageStatus(gate)
		ready, _ := st.Condition(model.ConditionReady)
		if st.Phase != model.StagePhaseNotApplicable || st.FreightSummary != model.NotApplicable || st.AutoPromotionEnabled || ready.Status != model.ConditionTrue {
			t.Errorf("%s status: phase %s, summary %q, auto %v, ready %+v", gate, st.Phase, st.FreightSummary, st.AutoPromotionEnabled, ready)
		}
	}
	if n := len(h.events.of(events.TypeStageVerified, "all-regions")); n != 1 {
		t.Errorf("%d StageVerified of the gate, want 1", n)
	}
}

// Without any event, the periodic control-flow pass still moves freight
// through a gate (level-triggered).
func TestControlFlowWithoutEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.put(&model.Project{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindProject}, ObjectMeta: model.ObjectMeta{Name: project}})
	h.gate("gate", model.AvailabilityStrategyAll, "eu", "us")
	f1 := h.freight("v1", time.Now().Add(-time.Minute))
	h.setFreightStatus(f1.Name, func(s *model.FreightStatus) {
		at := model.NewTime(time.Now().UTC().Truncate(time.Second))
		s.VerifiedIn = map[string]model.VerifiedStage{"eu": {VerifiedAt: at}, "us": {VerifiedAt: at}}
	})
	h.start("a", newFakeRunner(1), func(c *Config) { c.ControlFlowInterval = 200 * time.Millisecond })
	eventually(t, 30*time.Second, func() bool { f := h.getFreight(f1.Name); return f.IsVerifiedIn("gate") },
		func() string { return "the periodic pass moves freight through the gate" })
}

// A regular stage's status carries Kargo's derived fields: conditions,
// freight summary, autoPromotionEnabled; a promotion records startedAt.
func TestStageStatusConditions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.policies(model.PromotionPolicy{Stage: "dev", AutoPromotionEnabled: true})
	stage := h.stage("dev", nil)
	h.stage("qa", nil)
	release := make(chan struct{})
	runner := newFakeRunner(1)
	runner.Before = func(ctx context.Context, p *model.Promotion, step int) {
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	h.start("a", runner, nil)
	// The gateway announces every applied stage.
	h.publish(events.Ref{Kind: model.KindStage, Name: "qa"}, events.ResourceApplied{Kind: model.KindStage, Name: "qa", Action: "created"})
	eventually(t, 30*time.Second, func() bool {
		r, ok := condOf(h.stageStatus("qa"), model.ConditionReady)
		return ok && r.Status == model.ConditionTrue
	}, func() string { return "a new stage is Ready" })
	if st := h.stageStatus("qa"); st.AutoPromotionEnabled || st.FreightSummary != model.NotApplicable {
		t.Errorf("qa: auto %v, summary %q", st.AutoPromotionEnabled, st.FreightSummary)
	}

	f1 := h.freight("v1", time.Now())
	p := h.promote(stage, f1, "alice")
	eventually(t, 30*time.Second, func() bool {
		c, ok := condOf(h.stageStatus("dev"), model.ConditionPromoting)
		return ok && c.Status == model.ConditionTrue
	}, func() string { return "dev shows Promoting while the promotion runs" })
	if r, _ := condOf(h.stageStatus("dev"), model.ConditionReady); r.Status != model.ConditionFalse {
		t.Errorf("Ready while promoting: %+v", r)
	}
	close(release)
	done := h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	if done.Status.StartedAt == nil || done.Status.StartedAt.After(done.Status.FinishedAt.Time) {
		t.Errorf("startedAt %v, finishedAt %v", done.Status.StartedAt, done.Status.FinishedAt)
	}
	eventually(t, 30*time.Second, func() bool {
		st := h.stageStatus("dev")
		r, _ := st.Condition(model.ConditionReady)
		_, promoting := st.Condition(model.ConditionPromoting)
		return r.Status == model.ConditionTrue && !promoting && st.FreightSummary == f1.Name && st.AutoPromotionEnabled
	}, func() string { return "dev Ready with its freight after the promotion" })
}

func condOf(st model.StageStatus, typ string) (model.Condition, bool) { return st.Condition(typ) }
