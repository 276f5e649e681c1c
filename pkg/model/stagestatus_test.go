package model

import (
	"testing"
	"time"
)

func TestFreightSummary(t *testing.T) {
	t.Parallel()
	a := FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "a"}
	b := FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "b"}
	stage := func(origins ...FreightOrigin) *Stage {
		s := &Stage{Spec: StageSpec{PromotionTemplate: &PromotionTemplate{Spec: PromotionTemplateSpec{Steps: []PromotionStep{{Uses: "fail"}}}}}}
		for _, o := range origins {
			s.Spec.RequestedFreight = append(s.Spec.RequestedFreight, FreightRequest{Origin: o, Sources: FreightSources{Direct: true}})
		}
		return s
	}
	var with StageStatus
	with.FreightHistory = with.PushFreight(FreightReference{Name: "f1", Origin: a})
	cf := stage(a)
	cf.Spec.PromotionTemplate = nil
	for _, tt := range []struct {
		name   string
		stage  *Stage
		status StageStatus
		want   string
	}{
		{"one origin, none yet", stage(a), StageStatus{}, "N/A"},
		{"one origin", stage(a), with, "f1"},
		{"two origins", stage(a, b), with, "1/2 Fulfilled"},
		{"control flow", cf, with, "N/A"},
	} {
		if got := FreightSummary(tt.stage, &tt.status); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestSyncStageStatus(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	origin := FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "shop"}
	stage := &Stage{ObjectMeta: ObjectMeta{Name: "prod", Generation: 3}, Spec: StageSpec{
		RequestedFreight:  []FreightRequest{{Origin: origin, Sources: FreightSources{Direct: true}}},
		PromotionTemplate: &PromotionTemplate{Spec: PromotionTemplateSpec{Steps: []PromotionStep{{Uses: "fail"}}}},
	}}
	withHistory := func(phase VerificationPhase) StageStatus {
		var s StageStatus
		s.Phase = StagePhaseSteady
		s.FreightHistory = s.PushFreight(FreightReference{Name: "f1", Origin: origin})
		if phase != "" {
			s.FreightHistory[0].VerificationHistory = []VerificationInfo{{ID: "v1", Phase: phase, Message: "m"}}
		}
		return s
	}
	tests := []struct {
		name   string
		status StageStatus
		stage  *Stage
		ready  string
		reason string
		want   map[string]string // other conditions
	}{
		{"new stage", StageStatus{}, stage, ConditionTrue, "Ready", map[string]string{}},
		{"promoting", StageStatus{CurrentPromotion: &PromotionReference{Name: "p1"}, Phase: StagePhasePromoting}, stage, ConditionFalse, "Promoting",
			map[string]string{ConditionPromoting: ConditionTrue}},
		{"failed", StageStatus{Phase: StagePhaseFailed, LastPromotion: &PromotionReference{Name: "p1", Status: &PromotionStatus{Message: "boom"}}}, stage,
			ConditionFalse, "LastPromotionFailed", map[string]string{}},
		{"verifying", withHistory(VerificationPhaseRunning), stage, ConditionFalse, "Verifying", map[string]string{ConditionVerified: ConditionUnknown}},
		{"verified", withHistory(VerificationPhaseSuccessful), stage, ConditionTrue, "Ready", map[string]string{ConditionVerified: ConditionTrue}},
		{"verification failed", withHistory(VerificationPhaseFailed), stage, ConditionFalse, "VerificationFailed", map[string]string{ConditionVerified: ConditionFalse}},
		{"unhealthy", StageStatus{Health: &Health{Status: HealthStateUnhealthy, Issues: []string{"app degraded"}}}, stage, ConditionFalse, "Unhealthy",
			map[string]string{ConditionHealthy: ConditionFalse}},
		{"healthy", StageStatus{Health: &Health{Status: HealthStateHealthy}}, stage, ConditionTrue, "Ready", map[string]string{ConditionHealthy: ConditionTrue}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := tt.status
			if !SyncStageStatus(tt.stage, &s, true, t0) {
				t.Fatal("no change reported")
			}
			if SyncStageStatus(tt.stage, &s, true, t0.Add(time.Minute)) {
				t.Error("a second sync changed something")
			}
			r, ok := s.Condition(ConditionReady)
			if !ok || r.Status != tt.ready || r.Reason != tt.reason || r.ObservedGeneration != 3 || !r.LastTransitionTime.Equal(t0) {
				t.Errorf("Ready = %+v, want %s %s", r, tt.ready, tt.reason)
			}
			if len(s.Conditions) != len(tt.want)+1 {
				t.Errorf("conditions %+v, want Ready and %v", s.Conditions, tt.want)
			}
			for typ, st := range tt.want {
				if c, ok := s.Condition(typ); !ok || c.Status != st {
					t.Errorf("%s = %+v, want %s", typ, c, st)
				}
			}
			if !s.AutoPromotionEnabled || s.ObservedGeneration != 3 {
				t.Errorf("autoPromotionEnabled %v, observedGeneration %d", s.AutoPromotionEnabled, s.ObservedGeneration)
			}
		})
	}

	t.Run("transition time moves with the status only", func(t *testing.T) {
		t.Parallel()
		s := StageStatus{CurrentPromotion: &PromotionReference{Name: "p1"}}
		SyncStageStatus(stage, &s, false, t0)
		s.CurrentPromotion = &PromotionReference{Name: "p2"}
		SyncStageStatus(stage, &s, false, t0.Add(time.Hour))
		if c, _ := s.Condition(ConditionReady); !c.LastTransitionTime.Equal(t0) {
			t.Errorf("Ready moved at a message change: %+v", c)
		}
		s.CurrentPromotion = nil
		SyncStageStatus(stage, &s, false, t0.Add(2*time.Hour))
		if c, _ := s.Condition(ConditionReady); c.Status != ConditionTrue || !c.LastTransitionTime.Equal(t0.Add(2*time.Hour)) {
			t.Errorf("Ready after the promotion: %+v", c)
		}
		if _, ok := s.Condition(ConditionPromoting); ok {
			t.Error("Promoting left after the promotion")
		}
	})

	t.Run("control flow", func(t *testing.T) {
		t.Parallel()
		cf := &Stage{ObjectMeta: ObjectMeta{Name: "gate", Generation: 1}, Spec: StageSpec{RequestedFreight: stage.Spec.RequestedFreight}}
		s := StageStatus{Phase: StagePhaseSteady, Conditions: []Condition{{Type: ConditionHealthy, Status: ConditionTrue}}}
		SyncStageStatus(cf, &s, true, t0)
		r, _ := s.Condition(ConditionReady)
		if s.Phase != StagePhaseNotApplicable || s.FreightSummary != NotApplicable || s.AutoPromotionEnabled || len(s.Conditions) != 1 || r.Status != ConditionTrue {
			t.Errorf("control-flow status: %+v", s)
		}
	})
}
