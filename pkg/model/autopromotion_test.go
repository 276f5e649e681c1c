package model

import (
	"testing"
	"time"
)

func TestAutoPromotionEnabled(t *testing.T) {
	t.Parallel()
	stage := &Stage{ObjectMeta: ObjectMeta{Name: "prod-eu", Labels: map[string]string{"tier": "prod"}}}
	tests := []struct {
		name     string
		policies []PromotionPolicy
		want     bool
	}{
		{"no policy", nil, false},
		{"exact stage", []PromotionPolicy{{Stage: "prod-eu", AutoPromotionEnabled: true}}, true},
		{"other stage", []PromotionPolicy{{Stage: "dev", AutoPromotionEnabled: true}}, false},
		{"selector exact", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{Name: "prod-eu"}, AutoPromotionEnabled: true}}, true},
		{"selector regex", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{Name: "regex:^prod-"}, AutoPromotionEnabled: true}}, true},
		{"selector regex no match", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{Name: "regex:^dev"}, AutoPromotionEnabled: true}}, false},
		{"selector bad regex", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{Name: "regex:("}, AutoPromotionEnabled: true}}, false},
		{"selector glob", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{Name: "glob:prod-*"}, AutoPromotionEnabled: true}}, true},
		{"selector glob no match", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{Name: "glob:dev-*"}, AutoPromotionEnabled: true}}, false},
		{"labels match", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{MatchLabels: map[string]string{"tier": "prod"}}, AutoPromotionEnabled: true}}, true},
		{"labels differ", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{MatchLabels: map[string]string{"tier": "dev"}}, AutoPromotionEnabled: true}}, false},
		{"name and labels", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{Name: "glob:prod-*", MatchLabels: map[string]string{"tier": "dev"}}, AutoPromotionEnabled: true}}, false},
		{"expression In", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{MatchExpressions: []LabelSelectorRequirement{{Key: "tier", Operator: "In", Values: []string{"prod", "qa"}}}}, AutoPromotionEnabled: true}}, true},
		{"expression DoesNotExist", []PromotionPolicy{{StageSelector: &PromotionPolicySelector{MatchExpressions: []LabelSelectorRequirement{{Key: "tier", Operator: "DoesNotExist"}}}, AutoPromotionEnabled: true}}, false},
		{"first match decides", []PromotionPolicy{
			{Stage: "prod-eu", AutoPromotionEnabled: false},
			{StageSelector: &PromotionPolicySelector{Name: "glob:*"}, AutoPromotionEnabled: true},
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := AutoPromotionEnabled(tt.policies, stage); got != tt.want {
				t.Fatalf("AutoPromotionEnabled = %v, want %v", got, tt.want)
			}
		})
	}
}

func testFreight(name string, created time.Time, mod func(*Freight)) *Freight {
	f := &Freight{
		ObjectMeta: ObjectMeta{Name: name, CreationTimestamp: &Time{Time: created}},
		Origin:     FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "app"},
	}
	if mod != nil {
		mod(f)
	}
	return f
}

func TestSelectAutoPromotion(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	origin := FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "app"}
	other := FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "other"}
	direct := &Stage{ObjectMeta: ObjectMeta{Name: "dev"}, Spec: StageSpec{RequestedFreight: []FreightRequest{{Origin: origin, Sources: FreightSources{Direct: true}}}}}
	downstream := func(policy AutoPromotionSelectionPolicy, soak time.Duration, ups ...string) *Stage {
		s := &Stage{ObjectMeta: ObjectMeta{Name: "prod"}, Spec: StageSpec{RequestedFreight: []FreightRequest{{Origin: origin, Sources: FreightSources{
			Stages: ups, AutoPromotionOptions: &AutoPromotionOptions{SelectionPolicy: policy},
		}}}}}
		if soak > 0 {
			s.Spec.RequestedFreight[0].Sources.RequiredSoakTime = NewDuration(soak)
		}
		return s
	}
	verifiedIn := func(stage string, since time.Time, current bool) func(*Freight) {
		return func(f *Freight) {
			if f.Status.VerifiedIn == nil {
				f.Status.VerifiedIn = map[string]VerifiedStage{}
			}
			f.Status.VerifiedIn[stage] = VerifiedStage{VerifiedAt: &Time{Time: since}}
			if current {
				f.Status.CurrentlyIn = map[string]CurrentStage{stage: {Since: &Time{Time: since}}}
			}
		}
	}
	old := testFreight("a-old", now.Add(-3*time.Hour), verifiedIn("staging", now.Add(-2*time.Hour), false))
	mid := testFreight("b-mid", now.Add(-2*time.Hour), verifiedIn("staging", now.Add(-30*time.Minute), true))
	newest := testFreight("c-new", now.Add(-time.Hour), nil)
	foreign := testFreight("d-foreign", now, func(f *Freight) { f.Origin = other })
	all := []*Freight{old, mid, newest, foreign}

	tests := []struct {
		name  string
		stage *Stage
		want  string
	}{
		{"direct newest", direct, "c-new"},
		{"newest verified upstream", downstream(AutoPromotionSelectionPolicyNewestFreight, 0, "staging"), "b-mid"},
		{"soak excludes the young one", downstream(AutoPromotionSelectionPolicyNewestFreight, time.Hour, "staging"), "a-old"},
		{"match upstream", downstream(AutoPromotionSelectionPolicyMatchUpstream, 0, "staging"), "b-mid"},
		{"match upstream not soaked", downstream(AutoPromotionSelectionPolicyMatchUpstream, time.Hour, "staging"), ""},
		{"match upstream two upstreams", downstream(AutoPromotionSelectionPolicyMatchUpstream, 0, "staging", "qa"), ""},
		{"nothing verified upstream", downstream(AutoPromotionSelectionPolicyNewestFreight, 0, "qa"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, why := SelectAutoPromotion(all, tt.stage, origin, now)
			name := ""
			if got != nil {
				name = got.Name
			}
			if name != tt.want {
				t.Fatalf("selected %q (%s), want %q", name, why, tt.want)
			}
		})
	}

	t.Run("soak deadline", func(t *testing.T) {
		t.Parallel()
		stage := downstream(AutoPromotionSelectionPolicyNewestFreight, time.Hour, "staging")
		sel, _ := SelectAutoPromotion(all, stage, origin, now)
		at, ok := NextSoakDeadline(all, stage, origin, sel, now)
		if !ok || !at.Equal(now.Add(30*time.Minute)) {
			t.Fatalf("NextSoakDeadline = %v %v, want %v", at, ok, now.Add(30*time.Minute))
		}
		if _, ok := NextSoakDeadline(all, direct, origin, newest, now); ok {
			t.Fatal("a direct stage has no soak deadline")
		}
	})
}

func TestIsVerifyingAndHistory(t *testing.T) {
	t.Parallel()
	origin := FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "app"}
	stage := &Stage{ObjectMeta: ObjectMeta{Name: "dev"}, Spec: StageSpec{Verification: &Verification{}}}
	var st StageStatus
	if IsVerifying(stage, &st) {
		t.Fatal("a stage without freight is not verifying")
	}
	for i := range 12 {
		st.FreightHistory = st.PushFreight(FreightReference{Name: string(rune('a' + i)), Origin: origin})
	}
	if len(st.FreightHistory) != MaxFreightHistory || st.FreightHistory[0].Freight[origin.String()].Name != "l" {
		t.Fatalf("history = %d entries, newest %v", len(st.FreightHistory), st.FreightHistory[0].Freight)
	}
	if ref, ok := st.CurrentFreight(origin); !ok || ref.Name != "l" {
		t.Fatalf("CurrentFreight = %v %v", ref, ok)
	}
	if !IsVerifying(stage, &st) {
		t.Fatal("fresh freight with a verification to run is verifying")
	}
	st.FreightHistory[0].VerificationHistory = []VerificationInfo{{Phase: VerificationPhaseRunning}}
	if !IsVerifying(stage, &st) {
		t.Fatal("a running verification is verifying")
	}
	st.FreightHistory[0].VerificationHistory[0].Phase = VerificationPhaseSuccessful
	if IsVerifying(stage, &st) {
		t.Fatal("a finished verification is not verifying")
	}
	if IsVerifying(&Stage{}, &st) {
		t.Fatal("a stage without verification never verifies")
	}
}
