package autopromote

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
)

// The few freight relevant picks decide as all of a project's freight do:
// the same selection, the same next soak deadline, the same freight
// passed by a control-flow stage, for every kind of request.
func TestRelevantDecidesAsAll(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	app := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}
	lib := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "lib"}
	steps := &model.PromotionTemplate{Spec: model.PromotionTemplateSpec{Steps: []model.PromotionStep{{Uses: "fake"}}}}
	soak := &model.Duration{Duration: 30 * time.Minute}
	stage := func(name string, tmpl *model.PromotionTemplate, reqs ...model.FreightRequest) *model.Stage {
		return &model.Stage{ObjectMeta: model.ObjectMeta{Name: name, Namespace: "demo"}, Spec: model.StageSpec{RequestedFreight: reqs, PromotionTemplate: tmpl}}
	}
	stages := []*model.Stage{
		stage("direct", steps, model.FreightRequest{Origin: app, Sources: model.FreightSources{Direct: true}}),
		stage("after-dev", steps, model.FreightRequest{Origin: app, Sources: model.FreightSources{Stages: []string{"dev"}}}),
		stage("soaked", steps, model.FreightRequest{Origin: app, Sources: model.FreightSources{Stages: []string{"dev", "qa"}, RequiredSoakTime: soak}}),
		stage("all", steps, model.FreightRequest{Origin: app, Sources: model.FreightSources{Stages: []string{"dev", "qa"}, AvailabilityStrategy: model.AvailabilityStrategyAll}}),
		stage("match", steps, model.FreightRequest{Origin: app, Sources: model.FreightSources{Stages: []string{"dev"},
			AutoPromotionOptions: &model.AutoPromotionOptions{SelectionPolicy: model.AutoPromotionSelectionPolicyMatchUpstream}}}),
		stage("two-origins", steps, model.FreightRequest{Origin: app, Sources: model.FreightSources{Stages: []string{"qa"}}},
			model.FreightRequest{Origin: lib, Sources: model.FreightSources{Direct: true}}),
		stage("gate", nil, model.FreightRequest{Origin: app, Sources: model.FreightSources{Stages: []string{"dev"}, RequiredSoakTime: soak}}),
		stage("direct-gate", nil, model.FreightRequest{Origin: lib, Sources: model.FreightSources{Direct: true}}),
	}
	for seed := range uint64(20) {
		rnd := rand.New(rand.NewPCG(seed, 1))
		var all []*model.Freight
		sets := freightindex.NewSets()
		for i := range 60 {
			f := &model.Freight{ObjectMeta: model.ObjectMeta{Name: fmt.Sprintf("f%02d", i), Namespace: "demo",
				CreationTimestamp: model.NewTime(now.Add(-time.Duration(rnd.IntN(600)) * time.Minute))}, Origin: app}
			if rnd.IntN(4) == 0 {
				f.Origin = lib
			}
			for _, st := range []string{"dev", "qa", "gate", "direct-gate"} {
				if rnd.IntN(3) == 0 {
					if f.Status.VerifiedIn == nil {
						f.Status.VerifiedIn = map[string]model.VerifiedStage{}
					}
					v := model.VerifiedStage{VerifiedAt: model.NewTime(now.Add(-time.Duration(rnd.IntN(60)) * time.Minute))}
					if rnd.IntN(2) == 0 {
						v.LongestSoak = &model.Duration{Duration: time.Duration(rnd.IntN(60)) * time.Minute}
					}
					f.Status.VerifiedIn[st] = v
				}
				if rnd.IntN(8) == 0 {
					if f.Status.CurrentlyIn == nil {
						f.Status.CurrentlyIn = map[string]model.CurrentStage{}
					}
					f.Status.CurrentlyIn[st] = model.CurrentStage{Since: model.NewTime(now.Add(-time.Duration(rnd.IntN(60)) * time.Minute))}
				}
			}
			if rnd.IntN(10) == 0 {
				f.Status.ApprovedFor = map[string]model.ApprovedStage{"after-dev": {}, "soaked": {}, "gate": {}}
			}
			all = append(all, f)
			sets.Put("demo", f)
		}
		for _, st := range stages {
			sub := relevant(sets, "demo", st, now)
			if st.IsControlFlow() {
				if a, b := names(model.ControlFlowFreight(all, st, now)), names(model.ControlFlowFreight(sub, st, now)); a != b {
					t.Errorf("seed %d, %s: control flow passes %s from all, %s from relevant", seed, st.Name, a, b)
				}
			}
			for _, req := range st.Spec.RequestedFreight {
				if st.IsControlFlow() {
					// Never promoted: only what it passes and when it
					// looks again matter.
					atAll, okAll := model.NextSoakDeadline(all, st, req.Origin, nil, now)
					atSub, okSub := model.NextSoakDeadline(sub, st, req.Origin, nil, now)
					if okAll != okSub || !atAll.Equal(atSub) {
						t.Errorf("seed %d, %s %s: control flow wakes at %v %v from all, %v %v from relevant", seed, st.Name, req.Origin, atAll, okAll, atSub, okSub)
					}
					continue
				}
				selAll, _ := model.SelectAutoPromotion(all, st, req.Origin, now)
				selSub, _ := model.SelectAutoPromotion(sub, st, req.Origin, now)
				if names([]*model.Freight{selAll}) != names([]*model.Freight{selSub}) {
					t.Errorf("seed %d, %s %s: selects %s from all, %s from relevant", seed, st.Name, req.Origin, names([]*model.Freight{selAll}), names([]*model.Freight{selSub}))
				}
				atAll, okAll := soakDeadline(all, st, req, selAll, now)
				atSub, okSub := soakDeadline(sub, st, req, selSub, now)
				if okAll != okSub || !atAll.Equal(atSub) {
					t.Errorf("seed %d, %s %s: wakes at %v %v from all, %v %v from relevant", seed, st.Name, req.Origin, atAll, okAll, atSub, okSub)
				}
			}
		}
	}
}

func names(fs []*model.Freight) string {
	s := ""
	for _, f := range fs {
		if f == nil {
			s += "<nil> "
			continue
		}
		s += f.Name + " "
	}
	return s
}
