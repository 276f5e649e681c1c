package verifier

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// TestSecretArgsStayHidden: an AnalysisTemplate argument from a Secret,
// used in a web metric's URL, shows in none of what a user or an operator
// reads — stage status, the verification records in KV, the events, the
// log, the spans — neither as it is nor as the metric's server echoes it
// back changed (upper-case, base64, hex, URL-escaped). One stage's metric
// fails on the echo (the measurement value carries the secret), another's
// errors on a refused connection (the error carries the URL).
func TestSecretArgsStayHidden(t *testing.T) {
	const token = "Sup3r+S3cret/Value="
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(prev)
		_ = tp.Shutdown(context.Background())
	})

	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := strings.TrimPrefix(r.URL.Path, "/echo/")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"status": "bad", "raw": got, "upper": strings.ToUpper(got),
			"b64": base64.StdEncoding.EncodeToString([]byte(got)), "hex": hex.EncodeToString([]byte(got)),
			"query": url.QueryEscape(got),
		})
	}))
	t.Cleanup(echo.Close)
	refused := httptest.NewServer(http.NotFoundHandler())
	refused.Close() // its address now refuses connections

	h := newHarness(t)
	logs := &lockedBuffer{}
	h.logs = logs
	secret := &model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "api", Namespace: project},
		StringData: map[string]string{"token": token},
	}
	template := func(name, rawURL string) *model.AnalysisTemplate {
		zero := &model.IntOrString{IntVal: 0}
		return &model.AnalysisTemplate{
			TypeMeta:   model.TypeMeta{APIVersion: model.ArgoAPIVersion, Kind: model.KindAnalysisTemplate},
			ObjectMeta: model.ObjectMeta{Name: name, Namespace: project},
			Spec: model.AnalysisTemplateSpec{
				Args: []model.Argument{{Name: "token", ValueFrom: &model.ValueFrom{SecretKeyRef: &model.SecretKeyRef{Name: "api", Key: "token"}}}},
				Metrics: []model.Metric{{
					Name: "check", SuccessCondition: `result.status == "ok"`, ConsecutiveErrorLimit: zero,
					Provider: model.MetricProvider{Web: &model.WebMetric{URL: rawURL, JSONPath: "{$}"}},
				}},
			},
		}
	}
	verify := func(tmpl string) *model.Verification {
		return &model.Verification{AnalysisTemplates: []model.AnalysisTemplateReference{{Name: tmpl}}}
	}
	h.apply(secret,
		template("echo", echo.URL+"/echo/{{args.token}}?token={{args.token}}"),
		template("down", refused.URL+"/{{args.token}}?token={{args.token}}"),
		stage("qa", nil, "", verify("echo")), stage("prod", nil, "", verify("down")))
	h.freight("f1")
	h.start("v1")

	for _, tt := range []struct {
		stage string
		want  analysis.Phase
	}{{"qa", analysis.PhaseFailed}, {"prod", analysis.PhaseError}} {
		h.promoted(tt.stage, "f1", model.HealthStateHealthy)
		id := h.promote(tt.stage, "f1")
		ev := h.verified(tt.stage, id)
		if ev.Phase != string(tt.want) || !strings.Contains(ev.Message, "***") {
			t.Fatalf("%s: StageVerified %+v: want phase %s and a redacted message", tt.stage, ev, tt.want)
		}
	}

	forms := []string{
		token, strings.ToUpper(token), strings.ToLower(token),
		base64.StdEncoding.EncodeToString([]byte(token)), hex.EncodeToString([]byte(token)),
		url.QueryEscape(token), "S3cret", "S3CRET",
	}
	seen := map[string]string{
		"stage status":         jsonText(t, []any{h.stageStatus("qa"), h.stageStatus("prod")}),
		"verification records": bucketText(t, h, state.Verifications),
		"stage bucket":         bucketText(t, h, state.Stages),
		"events":               h.events.text(t),
		"log":                  logs.String(),
		"spans":                fmt.Sprintf("%+v", spans.GetSpans()),
	}
	for where, text := range seen {
		for _, form := range forms {
			if strings.Contains(text, form) {
				t.Errorf("%q shows in the %s:\n%s", form, where, text)
			}
		}
	}
	if !strings.Contains(seen["verification records"], `"value":"{`) {
		t.Errorf("the records lost the measurement values:\n%s", seen["verification records"])
	}
}

func jsonText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// bucketText is every value in a bucket, as stored.
func bucketText(t *testing.T, h *harness, b state.Bucket) string {
	t.Helper()
	kv := h.env.Store.KV(b)
	keys, err := state.Keys(context.Background(), kv, ">")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, k := range keys {
		e, err := kv.Get(context.Background(), k)
		if err != nil {
			continue
		}
		out.WriteString(k + " " + string(e.Value()) + "\n")
	}
	return out.String()
}

func (l *eventLog) text(t *testing.T) string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	return jsonText(t, l.all)
}

// lockedBuffer is a bytes.Buffer for loggers and a test reading it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
