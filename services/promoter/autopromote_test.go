package promoter

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

func (h *harness) policies(p ...model.PromotionPolicy) {
	h.put(&model.ProjectConfig{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindProjectConfig},
		ObjectMeta: model.ObjectMeta{Name: project, Namespace: project},
		Spec:       model.ProjectConfigSpec{PromotionPolicies: p},
	})
}

func (h *harness) discovered(f *model.Freight) {
	h.publish(events.Ref{Kind: model.KindFreight, Name: f.Name}, events.FreightDiscovered{Freight: f.Name, Origin: events.FreightOrigin{Kind: string(f.Origin.Kind), Name: f.Origin.Name}})
}

// waitAuto waits until stage has an auto-promotion of freight in phase
// want and returns it.
func (h *harness) waitAuto(stage, freight string, want model.PromotionPhase) model.Promotion {
	h.t.Helper()
	var found model.Promotion
	eventually(h.t, 30*time.Second, func() bool {
		for _, p := range h.promotions(stage) {
			if p.Spec.Freight == freight && p.Annotations[model.AnnotationPromotionCreatedBy] == "auto" && p.Status.Phase == want {
				found = p
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("auto-promotion of %s to %s, %s", freight, stage, want) })
	return found
}

func (h *harness) setFreightStatus(name string, fn func(*model.FreightStatus)) {
	h.t.Helper()
	if _, _, err := state.Update(context.Background(), h.env.Store.KV(state.Freight), state.Key(project, name), func(f model.Freight, _ bool) (model.Freight, error) {
		fn(&f.Status)
		return f, nil
	}); err != nil {
		h.t.Fatal(err)
	}
}

// Direct stages auto-promote the newest freight when a policy enables it;
// a stage no policy enables does not.
func TestAutoPromotionDirect(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.policies(model.PromotionPolicy{StageSelector: &model.PromotionPolicySelector{Name: "glob:dev*"}, AutoPromotionEnabled: true})
	h.stage("dev", nil)
	h.stage("manual", nil)
	h.start("a", newFakeRunner(1), nil)
	h.start("b", newFakeRunner(1), nil)
	f1 := h.freight("v1", time.Now().Add(-time.Minute))
	h.discovered(f1)
	h.discovered(f1)
	h.waitAuto("dev", f1.Name, model.PromotionPhaseSucceeded)
	f2 := h.freight("v2", time.Now())
	h.discovered(f2)
	h.waitAuto("dev", f2.Name, model.PromotionPhaseSucceeded)
	time.Sleep(300 * time.Millisecond)
	if ps := h.promotions("dev"); len(ps) != 2 {
		t.Fatalf("%d promotions of dev, want 2", len(ps))
	}
	if ps := h.promotions("manual"); len(ps) != 0 {
		t.Fatalf("%d promotions of a stage without auto-promotion", len(ps))
	}
}

// The reconcile pass, which finds the stages in the stage index, is the
// backstop of lost events: a stage created while the promoter runs (its
// ResourceApplied lost) with freight discovered (its FreightDiscovered
// lost) is auto-promoted, and so is a stage that a policy selects only
// once an unannounced update gave it a label (the index follows it).
func TestAutoPromotionWithoutEvents(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.policies(model.PromotionPolicy{StageSelector: &model.PromotionPolicySelector{Name: "glob:dev*"}, AutoPromotionEnabled: true},
		model.PromotionPolicy{StageSelector: &model.PromotionPolicySelector{MatchLabels: map[string]string{"auto": "yes"}}, AutoPromotionEnabled: true})
	h.start("a", newFakeRunner(1), fastReconcile)
	h.stage("dev", nil)
	f1 := h.freight("v1", time.Now().Add(-time.Minute))
	h.waitAuto("dev", f1.Name, model.PromotionPhaseSucceeded)

	h.stage("labelled", nil)
	obj, rev, err := h.env.Store.GetObject(context.Background(), project, model.KindStage, "labelled")
	if err != nil {
		t.Fatal(err)
	}
	obj.GetObjectMeta().Labels = map[string]string{"auto": "yes"}
	if _, err := h.env.Store.PutObject(context.Background(), obj, rev); err != nil {
		t.Fatal(err)
	}
	h.waitAuto("labelled", f1.Name, model.PromotionPhaseSucceeded)
}

// Downstream stages: NewestFreight waits for the required soak time and
// fires when it ends; MatchUpstream takes what the upstream stage has.
func TestAutoPromotionDownstream(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.policies(model.PromotionPolicy{StageSelector: &model.PromotionPolicySelector{Name: "regex:^(staging|prod|qa)$"}, AutoPromotionEnabled: true})
	const soak = 2 * time.Second
	h.stage("staging", func(s *model.Stage) {
		s.Spec.RequestedFreight[0].Sources = model.FreightSources{Stages: []string{"dev"}, RequiredSoakTime: model.NewDuration(soak)}
	})
	h.stage("prod", func(s *model.Stage) {
		s.Spec.RequestedFreight[0].Sources = model.FreightSources{Stages: []string{"dev"},
			AutoPromotionOptions: &model.AutoPromotionOptions{SelectionPolicy: model.AutoPromotionSelectionPolicyMatchUpstream}}
	})
	h.stage("qa", func(s *model.Stage) {
		s.Spec.RequestedFreight[0].Sources = model.FreightSources{Stages: []string{"dev"}, RequiredSoakTime: model.NewDuration(soak),
			AutoPromotionOptions: &model.AutoPromotionOptions{SelectionPolicy: model.AutoPromotionSelectionPolicyMatchUpstream}}
	})
	h.start("a", newFakeRunner(1), nil)
	h.start("b", newFakeRunner(1), nil)

	// f2 is newer and verified in dev, but dev runs f1 again now (a
	// rollback): MatchUpstream takes f1.
	since := model.NewTime(time.Now().UTC().Truncate(time.Second))
	f1 := h.freight("v1", time.Now().Add(-2*time.Minute))
	f2 := h.freight("v2", time.Now().Add(-time.Minute))
	h.setFreightStatus(f2.Name, func(s *model.FreightStatus) {
		s.VerifiedIn = map[string]model.VerifiedStage{"dev": {VerifiedAt: since, LongestSoak: model.NewDuration(time.Second)}}
	})
	h.setFreightStatus(f1.Name, func(s *model.FreightStatus) {
		s.VerifiedIn = map[string]model.VerifiedStage{"dev": {VerifiedAt: since}}
		s.CurrentlyIn = map[string]model.CurrentStage{"dev": {Since: since}}
	})
	availableAt := since.Add(soak)
	h.publish(events.Ref{Kind: model.KindStage, Name: "dev"}, events.StageVerified{Stage: "dev", Freight: f1.Name, Phase: "Successful"})

	h.waitAuto("prod", f1.Name, model.PromotionPhaseSucceeded)
	if time.Now().Before(availableAt) {
		if ps := h.promotions("staging"); len(ps) != 0 {
			t.Fatalf("staging promoted %s before its soak ended", ps[0].Spec.Freight)
		}
	}
	p := h.waitAuto("staging", f1.Name, model.PromotionPhaseSucceeded)
	late := p.CreationTimestamp.Sub(availableAt)
	t.Logf("soak ended at %s, auto-promotion created at %s (%s later; creation times have 1s resolution)", availableAt.Format(time.RFC3339), p.CreationTimestamp.Format(time.RFC3339), late)
	if late < 0 {
		t.Fatalf("auto-promoted %s before the soak ended", -late)
	}
	if late > 5*time.Second {
		t.Fatalf("auto-promotion came %s after the soak ended", late)
	}
	// MatchUpstream with a soak time waits for it too.
	if p := h.waitAuto("qa", f1.Name, model.PromotionPhaseSucceeded); p.CreationTimestamp.Before(availableAt) {
		t.Fatalf("qa auto-promoted at %s, before the soak ended at %s", p.CreationTimestamp, availableAt)
	}
}

// A manual promotion of older freight holds auto-promotion of its origin
// until AutoPromotionResumeRequested.
func TestAutoPromotionHold(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.policies(model.PromotionPolicy{Stage: "dev", AutoPromotionEnabled: true})
	stage := h.stage("dev", nil)
	h.start("a", newFakeRunner(1), nil)
	f1 := h.freight("v1", time.Now().Add(-2*time.Minute))
	f2 := h.freight("v2", time.Now().Add(-time.Minute))
	h.discovered(f2)
	h.waitAuto("dev", f2.Name, model.PromotionPhaseSucceeded)

	manual := h.promote(stage, f1, "alice")
	h.waitPhase(manual.Name, model.PromotionPhaseSucceeded)
	st := h.stageStatus("dev")
	if !st.Held(origin("app")) {
		t.Fatalf("no hold after promoting older freight by hand: %+v", st.AutoPromotionHolds)
	}
	// The promotion that placed it shows it, and it is announced.
	if hold := h.promotion(manual.Name).Status.AutoPromotionHold; hold == nil || hold.FreightName != f1.Name || hold.Origin != origin("app") || !strings.Contains(hold.Reason, "promoted by hand") {
		t.Errorf("promotion's hold: %+v", hold)
	}
	var held events.AutoPromotionHeld
	if envs := h.events.of(events.TypeAutoPromotionHeld, "dev"); len(envs) != 1 || json.Unmarshal(envs[0].Payload, &held) != nil || held.Promotion != manual.Name || held.Freight != f1.Name {
		t.Errorf("AutoPromotionHeld: %+v", envs)
	}
	f3 := h.freight("v3", time.Now())
	h.discovered(f3)
	time.Sleep(500 * time.Millisecond)
	for _, p := range h.promotions("dev") {
		if p.Spec.Freight == f3.Name {
			t.Fatal("auto-promoted while held")
		}
	}
	h.publish(events.Ref{Kind: model.KindStage, Name: "dev"}, events.AutoPromotionResumeRequested{Stage: "dev"})
	h.waitAuto("dev", f3.Name, model.PromotionPhaseSucceeded)
	if st := h.stageStatus("dev"); len(st.AutoPromotionHolds) != 0 {
		t.Fatalf("holds after resume: %+v", st.AutoPromotionHolds)
	}
}

// Freight approved for a stage becomes available there: FreightApproved
// auto-promotes it.
func TestAutoPromotionApproved(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.policies(model.PromotionPolicy{Stage: "prod", AutoPromotionEnabled: true})
	h.stage("prod", func(s *model.Stage) {
		s.Spec.RequestedFreight[0].Sources = model.FreightSources{Stages: []string{"staging"}}
	})
	h.start("a", newFakeRunner(1), nil)
	f := h.freight("v1", time.Now())
	h.discovered(f)
	time.Sleep(300 * time.Millisecond)
	if ps := h.promotions("prod"); len(ps) != 0 {
		t.Fatal("auto-promoted freight that is not available")
	}
	h.setFreightStatus(f.Name, func(s *model.FreightStatus) {
		s.ApprovedFor = map[string]model.ApprovedStage{"prod": {ApprovedAt: model.NewTime(time.Now())}}
	})
	h.publish(events.Ref{Kind: model.KindFreight, Name: f.Name}, events.FreightApproved{Freight: f.Name, Stage: "prod"})
	h.waitAuto("prod", f.Name, model.PromotionPhaseSucceeded)
}

// Kargo's hold and resume intents: a promotion annotated
// kargo.akuity.io/auto-promotion-hold holds its origin when it ends, one
// annotated kargo.akuity.io/auto-promotion-resume lifts the hold; an
// aborted promotion's intent does nothing.
func TestAutoPromotionHoldAnnotations(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.policies(model.PromotionPolicy{Stage: "dev", AutoPromotionEnabled: true})
	stage := h.stage("dev", nil)
	h.start("a", newFakeRunner(1), nil)
	f1 := h.freight("v1", time.Now().Add(-time.Minute))
	h.discovered(f1)
	h.waitAuto("dev", f1.Name, model.PromotionPhaseSucceeded)

	// The newest freight again, by hand, with the hold intent.
	hold := h.newPromotion(stage, f1, "alice")
	hold.Annotations[model.AnnotationAutoPromotionHold] = "Warehouse/app"
	hold.Annotations[model.AnnotationCreateActor] = "email:alice@example.com"
	h.put(hold)
	h.request(hold)
	h.waitPhase(hold.Name, model.PromotionPhaseSucceeded)
	st := h.stageStatus("dev")
	got, ok := st.AutoPromotionHolds["Warehouse/app"]
	if !ok || got.PromotionName != hold.Name || got.FreightName != f1.Name || got.Actor != "email:alice@example.com" || got.CreatedAt == nil {
		t.Fatalf("hold %+v (present %v)", got, ok)
	}
	f2 := h.freight("v2", time.Now())
	h.discovered(f2)
	time.Sleep(500 * time.Millisecond)
	for _, p := range h.promotions("dev") {
		if p.Spec.Freight == f2.Name {
			t.Fatal("auto-promoted while held")
		}
	}

	resume := h.newPromotion(stage, f1, "alice")
	resume.Annotations[model.AnnotationAutoPromotionResume] = "Warehouse/app"
	h.put(resume)
	h.request(resume)
	h.waitPhase(resume.Name, model.PromotionPhaseSucceeded)
	if st := h.stageStatus("dev"); len(st.AutoPromotionHolds) != 0 {
		t.Fatalf("holds after a resume intent: %+v", st.AutoPromotionHolds)
	}
	// The lifted hold lets the newer freight in (any trigger re-evaluates).
	h.discovered(f2)
	h.waitAuto("dev", f2.Name, model.PromotionPhaseSucceeded)
}

// Of two Freight created in the same second, the later one is the newest
// whatever their names: it is the one auto-promoted, and evaluating the
// stage again does not pick the earlier one.
func TestAutoPromotionSameSecond(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.policies(model.PromotionPolicy{Stage: "dev", AutoPromotionEnabled: true})
	h.stage("dev", nil)
	second := time.Now().UTC().Truncate(time.Second)
	mk := func(tag string) *model.Freight {
		f := &model.Freight{
			TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
			ObjectMeta: model.ObjectMeta{Namespace: project},
			Origin:     origin("app"),
			Images:     []model.Image{{RepoURL: "example.com/app", Tag: tag}},
		}
		f.Name = f.GenerateID()
		return f
	}
	// The later Freight gets the smaller name, so ordering by name within
	// the second would pick the earlier one.
	older, newer := mk("v1"), mk("v2")
	if newer.Name > older.Name {
		older, newer = newer, older
	}
	older.CreationTimestamp = model.NewTime(second.Add(100 * time.Millisecond))
	newer.CreationTimestamp = model.NewTime(second.Add(101 * time.Millisecond))
	h.put(older)
	h.put(newer)
	h.start("a", newFakeRunner(1), nil)
	h.discovered(older)
	h.discovered(newer)
	h.waitAuto("dev", newer.Name, model.PromotionPhaseSucceeded)
	h.discovered(newer) // evaluates dev again
	time.Sleep(300 * time.Millisecond)
	for _, p := range h.promotions("dev") {
		if p.Spec.Freight != newer.Name {
			t.Fatalf("dev auto-promoted to the earlier freight %s (promotion %s)", p.Spec.Freight, p.Name)
		}
	}
}
