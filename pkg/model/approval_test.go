package model

import (
	"testing"
	"time"
)

func TestApproval(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *Time { return NewTime(now.Add(-d)) }
	p := &Promotion{ObjectMeta: ObjectMeta{Annotations: map[string]string{AnnotationPromotionCreatedBy: "alice"}}}
	p.Status.Approvals = []PromotionApproval{
		{Approver: "alice", Groups: []string{"release"}, At: ago(time.Minute)},       // the requester
		{Approver: "bob", Groups: []string{"release"}, At: ago(3 * time.Hour)},       // expired
		{Approver: "carol", Groups: []string{"dev"}, At: ago(time.Minute)},           // wrong group
		{Approver: "dave", Groups: []string{"release", "sre"}, At: ago(time.Minute)}, // counts
		{Approver: "dave", Groups: []string{"release"}, At: ago(time.Second)},        // counts once
	}
	tests := []struct {
		name      string
		pol       ApprovalPolicy
		approvers []string
		missing   int
	}{
		{name: "default one approver, any group, no expiry", pol: ApprovalPolicy{}, approvers: []string{"bob", "carol", "dave"}},
		{name: "two from release within an hour", pol: ApprovalPolicy{Approvers: 2, Groups: []string{"release"}, Expiry: NewDuration(time.Hour)}, approvers: []string{"dave"}, missing: 1},
		{name: "no expiry: bob counts", pol: ApprovalPolicy{Approvers: 2, Groups: []string{"release"}}, approvers: []string{"bob", "dave"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := Approval(&tc.pol, p, now)
			if st.Missing != tc.missing || len(st.Approvers) != len(tc.approvers) || st.Approved() != (tc.missing == 0) {
				t.Fatalf("state %+v, want approvers %v missing %d", st, tc.approvers, tc.missing)
			}
			for i := range st.Approvers {
				if st.Approvers[i] != tc.approvers[i] {
					t.Fatalf("approvers %v, want %v", st.Approvers, tc.approvers)
				}
			}
		})
	}
	stage := &Stage{ObjectMeta: ObjectMeta{Name: "prod-eu", Labels: map[string]string{"tier": "prod"}}}
	pols := []ApprovalPolicy{{Stage: "dev"}, {StageSelector: &PromotionPolicySelector{MatchLabels: map[string]string{"tier": "prod"}}, Approvers: 3}}
	if got := ApprovalPolicyFor(pols, stage); got == nil || got.Required() != 3 {
		t.Errorf("policy for prod-eu: %+v", got)
	}
}

func TestRollbackRules(t *testing.T) {
	t.Parallel()
	origin := FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "app"}
	fr := func(name string, verified bool) *Freight {
		f := &Freight{ObjectMeta: ObjectMeta{Name: name}, Origin: origin}
		if verified {
			f.Status.VerifiedIn = map[string]VerifiedStage{"prod": {}}
		}
		return f
	}
	all := map[string]*Freight{"f3": fr("f3", false), "f2": fr("f2", false), "f1": fr("f1", true)}
	coll := func(name string, phase VerificationPhase) FreightCollection {
		c := FreightCollection{Freight: map[string]FreightReference{origin.String(): {Name: name, Origin: origin}}}
		if phase != "" {
			c.VerificationHistory = []VerificationInfo{{ID: "v-" + name, Phase: phase}}
		}
		return c
	}
	st := &StageStatus{
		LastPromotion:  &PromotionReference{Name: "p3", Status: &PromotionStatus{Phase: PromotionPhaseSucceeded}},
		FreightHistory: []FreightCollection{coll("f3", VerificationPhaseFailed), coll("f2", VerificationPhaseFailed), coll("f1", VerificationPhaseSuccessful)},
	}
	onVerify := &AutoRollback{}
	trig := RollbackTriggerOf(onVerify, st, "f3", false)
	if trig == nil || trig.ID != "verification/v-f3" || trig.Freight != "f3" {
		t.Fatalf("trigger %+v", trig)
	}
	if got := RollbackTarget(st, "prod", all["f3"], all); got == nil || got.Name != "f1" {
		t.Fatalf("target %v, want f1 (f2 was never verified)", got)
	}
	if RollbackTriggerOf(onVerify, st, "f3", true) != nil {
		t.Error("a rollback's failure rolls back again")
	}
	if RollbackTriggerOf(&AutoRollback{OnVerification: []VerificationPhase{VerificationPhaseError}}, st, "f3", false) != nil {
		t.Error("Failed rolls back when only Error is listed")
	}
	st.LastPromotion.Status.Phase = PromotionPhaseErrored
	if RollbackTriggerOf(onVerify, st, "f4", false) != nil {
		t.Error("an errored promotion rolls back without onPromotion")
	}
	if trig := RollbackTriggerOf(&AutoRollback{OnPromotion: []PromotionPhase{PromotionPhaseErrored}}, st, "f4", false); trig == nil || trig.ID != "promotion/p3" {
		t.Errorf("onPromotion trigger %+v", trig)
	}
}
