package freightindex_test

import (
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
)

// TestNewestAvailable checks the index's answer against the model's rule
// over every freight (model.NewestAvailableFreight, the full scan it
// replaces), for every kind of request and bound.
func TestNewestAvailable(t *testing.T) {
	t.Parallel()
	other := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "other"}
	approved := func(f *model.Freight, stage string) *model.Freight {
		f.Status.ApprovedFor = map[string]model.ApprovedStage{stage: {}}
		return f
	}
	soaked := func(f *model.Freight, stage string, d time.Duration) *model.Freight {
		f.Status.VerifiedIn[stage] = model.VerifiedStage{LongestSoak: model.NewDuration(d)}
		return f
	}
	of := func(f *model.Freight, o model.FreightOrigin) *model.Freight { f.Origin = o; return f }
	all := []*model.Freight{
		freight("f1", 10, "dev", "qa"),
		freight("f2", 9, "dev"),
		approved(freight("f3", 8), "prod"),
		soaked(freight("f4", 7, "dev"), "dev", time.Hour),
		freight("f5", 6, "qa"),
		freight("f6", 5),
		of(freight("f7", 1, "dev"), other),
	}
	sets := freightindex.NewSets()
	for _, f := range all {
		sets.Put("demo", f)
	}
	byName := map[string]*model.Freight{}
	for _, f := range all {
		byName[f.Name] = f
	}
	stage := func(name string, req model.FreightRequest) *model.Stage {
		return &model.Stage{ObjectMeta: model.ObjectMeta{Name: name, Namespace: "demo"}, Spec: model.StageSpec{RequestedFreight: []model.FreightRequest{req}}}
	}
	from := func(strategy model.AvailabilityStrategy, soak time.Duration, stages ...string) model.FreightRequest {
		req := model.FreightRequest{Origin: app, Sources: model.FreightSources{Stages: stages, AvailabilityStrategy: strategy}}
		if soak > 0 {
			req.Sources.RequiredSoakTime = model.NewDuration(soak)
		}
		return req
	}
	tests := []struct {
		name      string
		stage     *model.Stage
		origin    model.FreightOrigin
		newerThan string
		want      string
	}{
		{"direct: the origin's newest", stage("prod", model.FreightRequest{Origin: app, Sources: model.FreightSources{Direct: true}}), app, "", "f6"},
		{"direct, newer than the newest: none", stage("prod", model.FreightRequest{Origin: app, Sources: model.FreightSources{Direct: true}}), app, "f6", ""},
		{"from dev", stage("staging", from("", 0, "dev")), app, "", "f4"},
		{"from dev, newer than f2", stage("staging", from("", 0, "dev")), app, "f2", "f4"},
		{"from dev, newer than f4: none", stage("staging", from("", 0, "dev")), app, "f4", ""},
		{"from dev or qa", stage("staging", from("", 0, "dev", "qa")), app, "", "f5"},
		{"from dev and qa", stage("staging", from(model.AvailabilityStrategyAll, 0, "dev", "qa")), app, "", "f1"},
		{"from dev with a soak", stage("staging", from("", 30*time.Minute, "dev")), app, "", "f4"},
		{"from dev with a longer soak: none", stage("staging", from("", 2*time.Hour, "dev")), app, "", ""},
		{"approved for the stage", stage("prod", from("", 0, "qa")), app, "", "f5"},
		{"approved for the stage, newer than f5: none", stage("prod", from("", 0, "qa")), app, "f5", ""},
		{"approved only", stage("prod", from("", 0)), app, "", "f3"},
		{"another origin", stage("staging", model.FreightRequest{Origin: other, Sources: model.FreightSources{Stages: []string{"dev"}}}), other, "", "f7"},
		{"an origin not requested: none", stage("staging", from("", 0, "dev")), other, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var bound *model.Freight
			if tt.newerThan != "" {
				bound = byName[tt.newerThan]
			}
			got := sets.NewestAvailable("demo", tt.stage, tt.origin, epoch, bound)
			// The full scan's answer, bounded the same way.
			want := model.NewestAvailableFreight(all, tt.stage, tt.origin, epoch)
			if want != nil && bound != nil && !model.Newer(want, bound) {
				want = nil
			}
			if name(got) != name(want) || name(got) != tt.want {
				t.Fatalf("NewestAvailable = %q, full scan %q, want %q", name(got), name(want), tt.want)
			}
		})
	}
	if got := sets.NewestAvailable("nobody", stage("prod", from("", 0)), app, epoch, nil); got != nil {
		t.Fatalf("NewestAvailable in a project without freight = %q", got.Name)
	}
}

func name(f *model.Freight) string {
	if f == nil {
		return ""
	}
	return f.Name
}
