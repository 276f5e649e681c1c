package analysis

import (
	"context"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

func TestFieldRef(t *testing.T) {
	t.Parallel()
	fields := MetaFields("qa.01abc", "demo", map[string]string{"kargo.akuity.io/stage": "qa"}, map[string]string{"team": "payments"})
	tmpl := func(path string) []Template {
		return []Template{{Name: "t", Spec: model.AnalysisTemplateSpec{
			Args:    []model.Argument{{Name: "who", ValueFrom: &model.ValueFrom{FieldRef: &model.FieldRef{FieldPath: path}}}},
			Metrics: []model.Metric{{Name: "m", Provider: model.MetricProvider{Web: &model.WebMetric{URL: "http://x/{{args.who}}"}}}},
		}}}
	}
	for _, tc := range []struct {
		path, want, err string
		nilFields       bool
	}{
		{path: "metadata.name", want: "http://x/qa.01abc"},
		{path: "metadata.namespace", want: "http://x/demo"},
		{path: "metadata.labels['kargo.akuity.io/stage']", want: "http://x/qa"},
		{path: `metadata.annotations["team"]`, want: "http://x/payments"},
		{path: "metadata.labels['absent']", err: "no such field"},
		{path: "spec.replicas", err: "no such field"},
		{path: "metadata.name", nilFields: true, err: "no object"},
	} {
		f := fields
		if tc.nilFields {
			f = nil
		}
		spec, err := BuildFor(context.Background(), tmpl(tc.path), nil, nil, f)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), `argument "who"`) {
				t.Errorf("%s: %v, want %q", tc.path, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if got := spec.Metrics[0].Metric.Provider.Web.URL; got != tc.want {
			t.Errorf("%s: %q, want %q", tc.path, got, tc.want)
		}
	}
}
