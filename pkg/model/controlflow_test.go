package model

import (
	"slices"
	"testing"
	"time"
)

func TestControlFlowFreight(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	origin := FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "shop"}
	gate := func(strategy AvailabilityStrategy, soak time.Duration, direct bool, ups ...string) *Stage {
		s := &Stage{ObjectMeta: ObjectMeta{Name: "gate", Namespace: "retail"}}
		src := FreightSources{Stages: ups, AvailabilityStrategy: strategy, Direct: direct}
		if soak > 0 {
			src.RequiredSoakTime = NewDuration(soak)
		}
		s.Spec.RequestedFreight = []FreightRequest{{Origin: origin, Sources: src}}
		return s
	}
	freight := func(name string, age time.Duration, verified map[string]time.Duration) *Freight {
		f := &Freight{ObjectMeta: ObjectMeta{Name: name, CreationTimestamp: NewTime(now.Add(-age))}, Origin: origin}
		for st, ago := range verified {
			f.MarkVerified(st, now.Add(-ago))
		}
		return f
	}
	tests := []struct {
		name    string
		stage   *Stage
		freight []*Freight
		want    []string
	}{
		{"OneOf passes freight verified in either", gate(AvailabilityStrategyOneOf, 0, false, "eu", "us"),
			[]*Freight{freight("a", 2*time.Hour, map[string]time.Duration{"eu": time.Hour}), freight("b", time.Hour, nil)}, []string{"a"}},
		{"All waits for every upstream", gate(AvailabilityStrategyAll, 0, false, "eu", "us"),
			[]*Freight{freight("a", 2*time.Hour, map[string]time.Duration{"eu": time.Hour}),
				freight("b", time.Hour, map[string]time.Duration{"eu": time.Minute, "us": time.Minute})}, []string{"b"}},
		{"oldest first", gate(AvailabilityStrategyAll, 0, false, "eu", "us"),
			[]*Freight{freight("new", time.Hour, map[string]time.Duration{"eu": time.Minute, "us": time.Minute}),
				freight("old", 2*time.Hour, map[string]time.Duration{"eu": time.Minute, "us": time.Minute})}, []string{"old", "new"}},
		{"soak counts from the upstream verification", gate(AvailabilityStrategyOneOf, 30*time.Minute, false, "eu"),
			[]*Freight{freight("soaked", 2*time.Hour, map[string]time.Duration{"eu": 31 * time.Minute}),
				freight("fresh", time.Hour, map[string]time.Duration{"eu": 10 * time.Minute})}, []string{"soaked"}},
		{"already passed", gate(AvailabilityStrategyOneOf, 0, false, "eu"),
			[]*Freight{freight("a", time.Hour, map[string]time.Duration{"eu": time.Minute, "gate": time.Minute})}, nil},
		{"direct passes everything", gate("", 0, true),
			[]*Freight{freight("a", time.Hour, nil)}, []string{"a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, f := range ControlFlowFreight(tt.freight, tt.stage, now) {
				got = append(got, f.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("passed %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("approved", func(t *testing.T) {
		t.Parallel()
		f := freight("hotfix", time.Hour, nil)
		f.Status.ApprovedFor = map[string]ApprovedStage{"gate": {ApprovedAt: NewTime(now)}}
		if got := ControlFlowFreight([]*Freight{f}, gate(AvailabilityStrategyAll, 0, false, "eu", "us"), now); len(got) != 1 {
			t.Errorf("approved freight not passed: %v", got)
		}
	})
	t.Run("a stage with steps passes nothing", func(t *testing.T) {
		t.Parallel()
		s := gate(AvailabilityStrategyOneOf, 0, true)
		s.Spec.PromotionTemplate = &PromotionTemplate{Spec: PromotionTemplateSpec{Steps: []PromotionStep{{Uses: "fail"}}}}
		if got := ControlFlowFreight([]*Freight{freight("a", time.Hour, nil)}, s, now); got != nil {
			t.Errorf("passed %v", got)
		}
	})
	t.Run("downstream soak after a control-flow stage", func(t *testing.T) {
		t.Parallel()
		down := gate(AvailabilityStrategyOneOf, 30*time.Minute, false, "gate")
		f := freight("a", time.Hour, map[string]time.Duration{"gate": 10 * time.Minute})
		at, ok := AvailableAt(f, down, now)
		if want := now.Add(20 * time.Minute); !ok || !at.Equal(want) {
			t.Errorf("AvailableAt = %v %v, want %v", at, ok, want)
		}
	})
}

func TestParseFreightOrigin(t *testing.T) {
	t.Parallel()
	if o, err := ParseFreightOrigin("Warehouse/shop"); err != nil || o.Name != "shop" || o.Kind != FreightOriginKindWarehouse {
		t.Errorf("got %+v %v", o, err)
	}
	for _, bad := range []string{"", "shop", "Stage/shop", "Warehouse/"} {
		if _, err := ParseFreightOrigin(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestAnnotations(t *testing.T) {
	t.Parallel()
	prev := &ObjectMeta{Annotations: map[string]string{AnnotationRefresh: "1"}}
	for _, tt := range []struct {
		name string
		prev *ObjectMeta
		val  string
		want bool
	}{
		{"new object", nil, "1", true},
		{"same value", prev, "1", false},
		{"new value", prev, "2", true},
		{"empty", prev, "", false},
	} {
		next := &ObjectMeta{Annotations: map[string]string{}}
		if tt.val != "" {
			next.Annotations[AnnotationRefresh] = tt.val
		}
		if _, got := AnnotationChanged(tt.prev, next, AnnotationRefresh); got != tt.want {
			t.Errorf("%s: changed %v, want %v", tt.name, got, tt.want)
		}
	}
	if id := VerificationRequestID(`{"id":"v-7","actor":"admin"}`); id != "v-7" {
		t.Errorf("JSON id = %q", id)
	}
	if id := VerificationRequestID("v-8"); id != "v-8" {
		t.Errorf("plain id = %q", id)
	}
	p := &Promotion{ObjectMeta: ObjectMeta{Annotations: map[string]string{AnnotationAutoPromotionHold: "Warehouse/shop", AnnotationAutoPromotionResume: "bad"}}}
	hold, resume := PromotionIntent(p)
	if hold == nil || hold.Name != "shop" || resume != nil {
		t.Errorf("intent %v %v", hold, resume)
	}
}

// Stage status stored by earlier Caravan versions kept holds as a list.
func TestAutoPromotionHoldsFromList(t *testing.T) {
	t.Parallel()
	var s StageStatus
	err := jsonUnmarshal([]byte(`{"autoPromotionHolds":[{"origin":{"kind":"Warehouse","name":"shop"},"freight":"f1","promotion":"p1","since":"2026-01-02T03:04:05Z","reason":"r"}]}`), &s)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := s.AutoPromotionHolds["Warehouse/shop"]
	if !ok || h.FreightName != "f1" || h.PromotionName != "p1" || h.CreatedAt == nil || !s.Held(FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "shop"}) {
		t.Fatalf("holds %+v", s.AutoPromotionHolds)
	}
}
