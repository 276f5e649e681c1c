package promoter

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

func (h *harness) projectConfig(spec model.ProjectConfigSpec) {
	h.put(&model.ProjectConfig{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindProjectConfig},
		ObjectMeta: model.ObjectMeta{Name: project, Namespace: project},
		Spec:       spec,
	})
}

func (h *harness) auditRecords(action string) []audit.Record {
	h.t.Helper()
	log, err := audit.Setup(context.Background(), h.env.JS, audit.DefaultMaxAge, 1)
	if err != nil {
		h.t.Fatal(err)
	}
	recs, err := log.List(context.Background(), project, audit.Filter{Action: action})
	if err != nil {
		h.t.Fatal(err)
	}
	return recs
}

// An allow window that opens in a few seconds: auto-promotion waits and
// happens at the opening, a manual promotion waits at the head of its
// queue and runs at the opening, one a project admin overrode runs at
// once; the stage's status shows the window.
func TestPromotionWindowHoldsUntilOpening(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// Far enough ahead for a loaded machine to see the window closed.
	opening := time.Now().UTC().Add(30 * time.Second).Truncate(time.Second)
	h.projectConfig(model.ProjectConfigSpec{
		PromotionPolicies: []model.PromotionPolicy{{Stage: "dev", AutoPromotionEnabled: true}},
		PromotionWindows: []model.PromotionWindow{{Name: "office", Kind: model.PromotionWindowAllow,
			DTStart: opening.Format("20060102T150405Z"), DTEnd: opening.Add(time.Hour).Format("20060102T150405Z")}},
	})
	dev := h.stage("dev", nil)
	manual := h.stage("manual", nil)
	urgent := h.stage("urgent", nil)
	h.start("a", newFakeRunner(1), nil)
	f := h.freight("v1", time.Now().Add(-time.Minute))
	h.discovered(f)
	waiting := h.promote(manual, f, "alice")
	over := h.newPromotion(urgent, f, "admin")
	over.Annotations[model.AnnotationWindowOverride] = "admin: hotfix"
	h.put(over)
	h.request(over)

	eventually(t, 30*time.Second, func() bool {
		p := h.promotion(waiting.Name)
		return strings.Contains(p.Status.Message, "waiting for a promotion window") || p.Status.StartedAt != nil
	}, func() string {
		return "manual promotion waits with a message: " + h.promotion(waiting.Name).Status.Message
	})
	h.waitPhase(over.Name, model.PromotionPhaseSucceeded)
	closed := func(ws *model.PromotionWindowStatus) bool {
		return ws != nil && ws.Closed && ws.NextOpen != nil && ws.NextOpen.Equal(opening)
	}
	eventually(t, time.Until(opening), func() bool { return closed(h.stageStatus(dev.Name).PromotionWindowStatus) }, func() string {
		return fmt.Sprintf("window status %+v, want closed until %v", h.stageStatus(dev.Name).PromotionWindowStatus, opening)
	})
	if time.Now().Before(opening) {
		if ps := h.promotions(dev.Name); len(ps) != 0 {
			t.Fatalf("auto-promoted before the window opened: %s", ps[0].Name)
		}
	}
	auto := h.waitAuto(dev.Name, f.Name, model.PromotionPhaseSucceeded)
	if auto.CreationTimestamp.Before(opening) {
		t.Errorf("auto-promotion created at %v, before the opening %v", auto.CreationTimestamp.Time, opening)
	}
	p := h.waitPhase(waiting.Name, model.PromotionPhaseSucceeded)
	if p.Status.StartedAt.Before(opening) {
		t.Errorf("manual promotion started at %v, before the opening %v", p.Status.StartedAt.Time, opening)
	}
	eventually(t, 10*time.Second, func() bool {
		ws := h.stageStatus(dev.Name).PromotionWindowStatus
		return ws != nil && !ws.Closed && ws.NextClose != nil
	}, func() string { return "window status open" })
	if recs := h.auditRecords(audit.ActionWindowWait); len(recs) != 1 {
		t.Errorf("%d window-wait audit records, want 1", len(recs))
	}
}

// failingRunner fails the promotions whose freight fails says.
type failingRunner struct {
	*fakeRunner
	fails func(p *model.Promotion) bool
}

func (f failingRunner) Run(ctx context.Context, p *model.Promotion, save func(context.Context, *model.Promotion) error) (Result, error) {
	if f.fails(p) {
		return Result{Phase: model.PromotionPhaseFailed, Message: "failed on purpose"}, nil
	}
	return f.fakeRunner.Run(ctx, p, save)
}

// Auto-rollback: a failed verification of new freight rolls the stage
// back once to the freight it held and verified before, marked as a
// rollback, and holds auto-promotion; a failure of the rolled-back freight
// does not roll back again. A failed promotion (onPromotion) rolls back
// too.
func TestAutoRollback(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.projectConfig(model.ProjectConfigSpec{PromotionPolicies: []model.PromotionPolicy{
		{Stage: "prod", AutoRollback: &model.AutoRollback{OnVerification: []model.VerificationPhase{model.VerificationPhaseFailed}}},
		{Stage: "edge", AutoRollback: &model.AutoRollback{OnPromotion: []model.PromotionPhase{model.PromotionPhaseFailed}}},
	}})
	prod := h.stage("prod", nil)
	edge := h.stage("edge", nil)
	f1 := h.freight("v1", time.Now().Add(-2*time.Minute))
	f2 := h.freight("v2", time.Now().Add(-time.Minute))
	h.start("a", failingRunner{newFakeRunner(1), func(p *model.Promotion) bool {
		return p.Spec.Stage == "edge" && p.Spec.Freight == f2.Name
	}}, nil)

	// The verifier (not running here) marks freight verified.
	verified := func(f *model.Freight, stage string) {
		h.setFreightStatus(f.Name, func(s *model.FreightStatus) {
			if s.VerifiedIn == nil {
				s.VerifiedIn = map[string]model.VerifiedStage{}
			}
			s.VerifiedIn[stage] = model.VerifiedStage{VerifiedAt: model.NewTime(time.Now())}
		})
	}
	h.waitPhase(h.promote(prod, f1, "alice").Name, model.PromotionPhaseSucceeded)
	verified(f1, prod.Name)
	h.waitPhase(h.promote(prod, f2, "alice").Name, model.PromotionPhaseSucceeded)
	fail := func(freight, id string) {
		t.Helper()
		if _, _, err := state.Update(context.Background(), h.env.Store.KV(state.Stages), state.Key(project, prod.Name), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
			s.FreightHistory[0].VerificationHistory = append([]model.VerificationInfo{{ID: id, Phase: model.VerificationPhaseFailed}}, s.FreightHistory[0].VerificationHistory...)
			return s, nil
		}); err != nil {
			t.Fatal(err)
		}
		h.publish(events.Ref{Kind: model.KindStage, Name: prod.Name}, events.StageVerified{Stage: prod.Name, Freight: freight, Verification: id, Phase: "Failed"})
	}
	fail(f2.Name, "v-f2")
	rollbacks := func(stage string) []model.Promotion {
		var out []model.Promotion
		for _, p := range h.promotions(stage) {
			if p.Annotations[model.AnnotationRollback] != "" {
				out = append(out, p)
			}
		}
		return out
	}
	eventually(t, 30*time.Second, func() bool {
		rs := rollbacks(prod.Name)
		return len(rs) == 1 && rs[0].Status.Phase == model.PromotionPhaseSucceeded
	}, func() string { return fmt.Sprintf("one rollback of prod: %d", len(rollbacks(prod.Name))) })
	rb := rollbacks(prod.Name)[0]
	if rb.Spec.Freight != f1.Name || rb.Annotations[model.AnnotationPromotionCreatedBy] != "auto-rollback" {
		t.Fatalf("rollback to %s by %s, want %s by auto-rollback", rb.Spec.Freight, rb.Annotations[model.AnnotationPromotionCreatedBy], f1.Name)
	}
	if st := h.stageStatus(prod.Name); !st.Held(f1.Origin) {
		t.Error("auto-promotion not held after the rollback")
	}
	// The rolled-back freight fails too: no loop.
	fail(f1.Name, "v-f1")
	time.Sleep(time.Second)
	if n := len(rollbacks(prod.Name)); n != 1 {
		t.Fatalf("%d rollbacks after a second failure, want 1", n)
	}

	// onPromotion: f2's promotion into edge fails; edge goes back to f1.
	h.waitPhase(h.promote(edge, f1, "alice").Name, model.PromotionPhaseSucceeded)
	verified(f1, edge.Name)
	h.waitPhase(h.promote(edge, f2, "alice").Name, model.PromotionPhaseFailed)
	eventually(t, 30*time.Second, func() bool {
		rs := rollbacks(edge.Name)
		return len(rs) == 1 && rs[0].Spec.Freight == f1.Name && rs[0].Status.Phase == model.PromotionPhaseSucceeded
	}, func() string { return fmt.Sprintf("one rollback of edge: %d", len(rollbacks(edge.Name))) })
	if recs := h.auditRecords(audit.ActionRollback); len(recs) != 2 {
		t.Errorf("%d rollback audit records, want 2", len(recs))
	}
}

// Approval policies: a promotion waits until two distinct approvers of
// the named group approved it; the requester's own approval and one from
// outside the group do not count.
func TestApprovalPolicyHoldsPromotion(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.projectConfig(model.ProjectConfigSpec{ApprovalPolicies: []model.ApprovalPolicy{{Stage: "prod", Approvers: 2, Groups: []string{"release"}}}})
	prod := h.stage("prod", nil)
	h.start("a", newFakeRunner(1), nil)
	f := h.freight("v1", time.Now())
	p := h.promote(prod, f, "alice")
	approve := func(who string, groups ...string) {
		t.Helper()
		if _, _, err := state.Update(context.Background(), h.env.Store.KV(state.Promotions), state.Key(project, p.Name), func(cur model.Promotion, _ bool) (model.Promotion, error) {
			cur.Status.Approvals = append(cur.Status.Approvals, model.PromotionApproval{Approver: who, Groups: groups, Reason: "ok", At: model.NewTime(time.Now())})
			return cur, nil
		}); err != nil {
			t.Fatal(err)
		}
		h.publish(events.Ref{Kind: model.KindPromotion, Name: p.Name}, events.PromotionApproved{Promotion: p.Name, Stage: prod.Name, Approver: who})
	}
	waits := func(msg string) {
		t.Helper()
		eventually(t, 10*time.Second, func() bool {
			return strings.Contains(h.promotion(p.Name).Status.Message, msg)
		}, func() string { return "message: " + h.promotion(p.Name).Status.Message })
	}
	waits("waiting for 2 more approval(s) of 2")
	approve("alice", "release") // self
	approve("mallory", "dev")   // not in the group
	approve("bob", "release")
	waits("waiting for 1 more approval(s) of 2")
	if ph := h.promotion(p.Name).Status.Phase; ph != model.PromotionPhasePending {
		t.Fatalf("phase %s with one approval, want Pending", ph)
	}
	approve("carol", "release")
	h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
}
