package verifier

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// TestDatadogVerification: a Stage verified by a datadog metric, through
// the whole verifier. Datadog cannot run here: the server stands in for
// its v1 query API (GET /api/v1/query, DD-API-KEY/DD-APPLICATION-KEY
// headers, as its API reference documents). The keys come from the
// project's "datadog" Secret and show in no record; the query names the
// stage through a fieldRef argument.
func TestDatadogVerification(t *testing.T) {
	const apiKey = "dd-api-Kx7Qm2"
	var queries []string
	dd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" || r.Header.Get("DD-API-KEY") != apiKey || r.Header.Get("DD-APPLICATION-KEY") != "dd-app-key" {
			http.Error(w, `{"errors":["Forbidden"]}`, http.StatusForbidden)
			return
		}
		queries = append(queries, r.URL.Query().Get("query"))
		_, _ = io.WriteString(w, `{"status":"ok","series":[{"pointlist":[[1,0.5],[2,0.001]]}]}`)
	}))
	t.Cleanup(dd.Close)

	h := newHarness(t)
	secret := &model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "datadog", Namespace: project},
		StringData: map[string]string{"api-key": apiKey, "app-key": "dd-app-key", "address": dd.URL},
	}
	tmpl := &model.AnalysisTemplate{
		TypeMeta:   model.TypeMeta{APIVersion: model.ArgoAPIVersion, Kind: model.KindAnalysisTemplate},
		ObjectMeta: model.ObjectMeta{Name: "errors", Namespace: project},
		Spec: model.AnalysisTemplateSpec{
			Args: []model.Argument{{Name: "stage", ValueFrom: &model.ValueFrom{FieldRef: &model.FieldRef{FieldPath: "metadata.labels['kargo.akuity.io/stage']"}}}},
			Metrics: []model.Metric{{
				Name: "error-rate", SuccessCondition: "result <= 0.01", ConsecutiveErrorLimit: &model.IntOrString{},
				Provider: model.MetricProvider{Datadog: map[string]any{"interval": "5m", "query": "sum:requests.error.rate{stage:{{args.stage}}}"}},
			}},
		},
	}
	h.apply(secret, tmpl, stage("qa", nil, "", &model.Verification{AnalysisTemplates: []model.AnalysisTemplateReference{{Name: "errors"}}}))
	h.freight("f1")
	h.start("v1")
	h.promoted("qa", "f1", model.HealthStateHealthy)
	ev := h.verified("qa", h.promote("qa", "f1"))
	if ev.Phase != string(analysis.PhaseSuccessful) {
		t.Fatalf("StageVerified %+v", ev)
	}
	if len(queries) == 0 || queries[0] != "sum:requests.error.rate{stage:qa}" {
		t.Fatalf("queries %q", queries)
	}
	// The record's last write may land just after StageVerified.
	var records string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		records = bucketText(t, h, state.Verifications)
		if strings.Contains(records, "0.001") || time.Now().After(deadline) {
			break
		}
	}
	if strings.Contains(records, apiKey) || !strings.Contains(records, "0.001") {
		t.Fatalf("records:\n%s", records)
	}
}
