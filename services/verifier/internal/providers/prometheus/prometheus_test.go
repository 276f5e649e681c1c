package prometheus

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// queryAPI is an httptest server speaking Prometheus' instant-query API
// (/api/v1/query): each known query has a canned answer, as a real
// Prometheus would give for it. The real Prometheus runs in the e2e test.
func queryAPI(t *testing.T) *httptest.Server {
	t.Helper()
	answers := map[string]string{
		"vector_ok":   `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"a"},"value":[1700000000.1,"0.97"]},{"metric":{"job":"b"},"value":[1700000000.1,"0.5"]}]}}`,
		"vector_nan":  `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.1,"NaN"]}]}}`,
		"empty":       `{"status":"success","data":{"resultType":"vector","result":[]}}`,
		"scalar(0.3)": `{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"0.3"]}}`,
		"matrix":      `{"status":"success","data":{"resultType":"matrix","result":[]}}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		q := r.FormValue("query")
		if q == "slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		if r.Header.Get("X-Scope-OrgID") != "" && r.Header.Get("X-Scope-OrgID") != "tenant" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		a, ok := answers[q]
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": "bad_data", "error": "parse error at char 1"})
			return
		}
		_, _ = w.Write([]byte(a))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestPrometheus(t *testing.T) {
	t.Parallel()
	srv := queryAPI(t)
	one := int64(1)
	tests := []struct {
		name, query, success string
		timeout              *int64
		headers              []model.WebMetricHeader
		want                 analysis.Phase
		wantMsg              string
	}{
		{name: "vector passes", query: "vector_ok", success: "result[0] >= 0.95", want: analysis.PhaseSuccessful},
		{name: "vector fails", query: "vector_ok", success: "all(result, {# >= 0.95})", want: analysis.PhaseFailed},
		{name: "scalar", query: "scalar(0.3)", success: "result < 0.5", want: analysis.PhaseSuccessful},
		{name: "NaN", query: "vector_nan", success: "isNaN(result[0])", want: analysis.PhaseSuccessful},
		{name: "empty vector with a guard", query: "empty", success: "len(result) == 0 || result[0] < 1", want: analysis.PhaseSuccessful},
		{name: "empty vector indexed is an error", query: "empty", success: "result[0] < 1", want: analysis.PhaseError, wantMsg: "measurement 1"},
		{name: "bad query is an error", query: "sum(", want: analysis.PhaseError, wantMsg: "bad_data: parse error"},
		{name: "matrix is a list of every sample", query: "matrix", success: "len(result) == 0", want: analysis.PhaseSuccessful},
		{name: "timeout is an error", query: "slow", timeout: &one, want: analysis.PhaseError, wantMsg: "timed out after 1s"},
		{name: "headers are sent", query: "scalar(0.3)", headers: []model.WebMetricHeader{{Key: "X-Scope-OrgID", Value: "tenant"}}, want: analysis.PhaseSuccessful},
	}
	// The default address is the operator's: the policy allows it; a
	// metric's own address passes the policy.
	p := New(srv.URL, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := model.Metric{
				Name: "rate", SuccessCondition: tt.success, ConsecutiveErrorLimit: &model.IntOrString{},
				Provider: model.MetricProvider{Prometheus: &model.PrometheusMetric{Address: srv.URL, Query: tt.query, Timeout: tt.timeout, Headers: tt.headers}},
			}
			spec, err := analysis.Build(context.Background(), []analysis.Template{{Name: "success-rate", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{m}}}}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := (&analysis.Engine{Providers: map[string]analysis.Provider{"prometheus": p}}).Run(context.Background(), analysis.RunInfo{}, spec)
			if err != nil {
				t.Fatal(err)
			}
			if res.Phase != tt.want {
				t.Fatalf("phase %s, want %s: %s", res.Phase, tt.want, res.Message)
			}
			if !strings.Contains(res.Message, tt.wantMsg) {
				t.Errorf("message %q does not contain %q", res.Message, tt.wantMsg)
			}
			if tt.want == analysis.PhaseError && !strings.Contains(res.Message, `template "success-rate", metric "rate", measurement 1`) {
				t.Errorf("message %q does not name template, metric and measurement", res.Message)
			}
		})
	}
}

// TestPrometheusEgress: an address a metric names passes the egress policy
// (loopback refused by default); the operator's default address is
// allowed.
func TestPrometheusEgress(t *testing.T) {
	t.Parallel()
	srv := queryAPI(t)
	measure := func(p *Provider, address string) error {
		_, err := p.Measure(context.Background(), analysis.Request{Metric: &analysis.Metric{Metric: model.Metric{
			Name: "rate", Provider: model.MetricProvider{Prometheus: &model.PrometheusMetric{Address: address, Query: "scalar(0.3)"}},
		}}})
		return err
	}
	if err := measure(New("", nil), srv.URL); err == nil || !strings.Contains(err.Error(), "egress policy refuses") {
		t.Fatalf("a metric's loopback address: %v", err)
	}
	if err := measure(New(srv.URL, nil), ""); err != nil {
		t.Fatalf("the default address: %v", err)
	}
}

// A range query goes to /api/v1/query_range with start and end evaluated
// from their expressions; every sample of the matrix is in result. The
// request is authenticated as the metric says (basicAuth here; oauth2 and
// sigv4 are tested in package auth). The real Prometheus answers a range
// query in the e2e test.
func TestRangeQuery(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 1, 0, 0, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		if r.URL.Path != "/api/v1/query_range" || user != "grafana" || pass != "cloud" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"status":"error","errorType":"unauthorized","error":"no"}`))
			return
		}
		if r.FormValue("start") != "1796259300" || r.FormValue("end") != "1796259600" || r.FormValue("step") != "1m" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"status":"error","errorType":"bad_data","error":"bad range ` + r.FormValue("start") + `"}`))
			return
		}
		_, _ = w.Write([]byte(`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pod":"a"},"values":[[1796259300,"120"],[1796259360,"900"]]},{"metric":{"pod":"b"},"values":[[1796259300,"80"]]}]}}`))
	}))
	t.Cleanup(srv.Close)
	p := New(srv.URL, nil)
	p.Now = func() time.Time { return now }
	for _, tc := range []struct {
		name    string
		rq      map[string]any
		user    string
		success string
		want    analysis.Phase
		msg     string
	}{
		{"all under", map[string]any{"start": `now() - duration("5m")`, "end": "now()", "step": "1m"}, "grafana", "all(result, # < 1000)", analysis.PhaseSuccessful, ""},
		{"one over", map[string]any{"start": `now() - duration("5m")`, "end": "now()", "step": "1m"}, "grafana", "all(result, # < 500)", analysis.PhaseFailed, ""},
		{"wrong user", map[string]any{"start": `now() - duration("5m")`, "end": "now()", "step": "1m"}, "other", "true", analysis.PhaseError, "unauthorized"},
		{"start not a time", map[string]any{"start": `"yesterday"`, "end": "now()", "step": "1m"}, "grafana", "true", analysis.PhaseError, "rangeQuery.start"},
		{"end before start", map[string]any{"start": `now()`, "end": `now() - duration("1h")`, "step": "1m"}, "grafana", "true", analysis.PhaseError, "before start"},
		{"no step", map[string]any{"start": `now()`, "end": "now()"}, "grafana", "true", analysis.PhaseError, "step"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := model.Metric{Name: "latency", SuccessCondition: tc.success, ConsecutiveErrorLimit: &model.IntOrString{},
				Provider: model.MetricProvider{Prometheus: &model.PrometheusMetric{Query: "http_latency_ms", RangeQuery: tc.rq,
					Authentication: map[string]any{"basicAuth": map[string]any{"username": tc.user, "password": "cloud"}}}}}
			spec, err := analysis.Build(context.Background(), []analysis.Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{m}}}}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := (&analysis.Engine{Providers: map[string]analysis.Provider{"prometheus": p}}).Run(context.Background(), analysis.RunInfo{}, spec)
			if err != nil {
				t.Fatal(err)
			}
			if res.Phase != tc.want || !strings.Contains(res.Message, tc.msg) {
				t.Fatalf("%s %q, want %s %q", res.Phase, res.Message, tc.want, tc.msg)
			}
		})
	}
}
