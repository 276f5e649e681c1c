package web

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// server answers like a small metrics API: /ok JSON, /slow after the
// client gave up, /500, /text, /echo returning the request.
func server(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"data":{"ok":true,"successPercent":0.95,"status":"ok"},"items":[{"v":1},{"v":2}]}`)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	mux.HandleFunc("/500", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"down"}`, http.StatusInternalServerError)
	})
	mux.HandleFunc("/text", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_ = json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "auth": r.Header.Get("Authorization"), "body": string(b), "type": r.Header.Get("Content-Type")})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// run measures one web metric through the analysis engine, so the test
// sees what a verification sees: the phase and the message.
func run(t *testing.T, p *Provider, web *model.WebMetric, success string) *analysis.Result {
	t.Helper()
	m := model.Metric{Name: "web-check", SuccessCondition: success, ConsecutiveErrorLimit: &model.IntOrString{IntVal: 0}, Provider: model.MetricProvider{Web: web}}
	spec, err := analysis.Build(context.Background(), []analysis.Template{{Name: "smoke", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{m}}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &analysis.Engine{Providers: map[string]analysis.Provider{"web": p}}
	res, err := e.Run(context.Background(), analysis.RunInfo{Name: "r"}, spec)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// loopback is a policy opening loopback, where the test servers listen
// (the default policy refuses it).
func loopback(t *testing.T, cfg egress.Config) *egress.Policy {
	t.Helper()
	cfg.Allow = "127.0.0.0/8"
	p, err := egress.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWeb(t *testing.T) {
	t.Parallel()
	srv := server(t)
	p := New(loopback(t, egress.Config{}))
	tests := []struct {
		name    string
		web     model.WebMetric
		success string
		want    analysis.Phase
		wantMsg string
	}{
		{name: "bool at a path", web: model.WebMetric{URL: srv.URL + "/ok", JSONPath: "{$.data.ok}"}, success: "result == true", want: analysis.PhaseSuccessful},
		{name: "object at a path", web: model.WebMetric{URL: srv.URL + "/ok", JSONPath: "{$.data}"}, success: "result.ok && result.successPercent >= 0.90", want: analysis.PhaseSuccessful},
		{name: "string compared", web: model.WebMetric{URL: srv.URL + "/ok", JSONPath: "{$.data.status}"}, success: "result == 'ok'", want: analysis.PhaseSuccessful},
		{name: "several matches are a list", web: model.WebMetric{URL: srv.URL + "/ok", JSONPath: "{$.items[*].v}"}, success: "len(result) == 2 && result[1] == 2", want: analysis.PhaseSuccessful},
		{name: "whole body without jsonPath", web: model.WebMetric{URL: srv.URL + "/ok"}, success: "result.data.ok", want: analysis.PhaseSuccessful},
		{name: "condition false fails", web: model.WebMetric{URL: srv.URL + "/ok", JSONPath: "{$.data.successPercent}"}, success: "result > 0.99", want: analysis.PhaseFailed},
		{name: "wrong path is an error, not a failure", web: model.WebMetric{URL: srv.URL + "/ok", JSONPath: "{$.data.missing}"}, success: "result == true", want: analysis.PhaseError, wantMsg: `template "smoke", metric "web-check", measurement 1: jsonPath "{$.data.missing}"`},
		{name: "500 is an error", web: model.WebMetric{URL: srv.URL + "/500"}, want: analysis.PhaseError, wantMsg: "non-2xx response code 500"},
		{name: "timeout is an error", web: model.WebMetric{URL: srv.URL + "/slow", TimeoutSeconds: 1}, want: analysis.PhaseError, wantMsg: "timed out after 1s"},
		{name: "not JSON is an error", web: model.WebMetric{URL: srv.URL + "/text"}, want: analysis.PhaseError, wantMsg: "response is not JSON"},
		{name: "GET with a body is an error", web: model.WebMetric{URL: srv.URL + "/echo", Body: "x"}, want: analysis.PhaseError, wantMsg: "GET request cannot have a body"},
		{
			name: "POST with headers and body",
			web: model.WebMetric{Method: "POST", URL: srv.URL + "/echo", Body: `{"k":"v"}`, JSONPath: "{$}",
				Headers: []model.WebMetricHeader{{Key: "Authorization", Value: "Bearer t"}, {Key: "Content-Type", Value: "application/json"}}},
			success: `result.method == "POST" && result.auth == "Bearer t" && result.body == '{"k":"v"}' && result.type == "application/json"`,
			want:    analysis.PhaseSuccessful,
		},
		{
			name:    "PUT with jsonBody",
			web:     model.WebMetric{Method: "PUT", URL: srv.URL + "/echo", JSONBody: map[string]any{"n": 1}},
			success: `result.method == "PUT" && result.body == '{"n":1}' && result.type == "application/json"`,
			want:    analysis.PhaseSuccessful,
		},
		{name: "oauth2 without tokenUrl", web: model.WebMetric{URL: srv.URL + "/ok", Authentication: map[string]any{"oauth2": map[string]any{}}}, want: analysis.PhaseError, wantMsg: "authentication.oauth2.tokenUrl"},
		{name: "sigv4 is for prometheus", web: model.WebMetric{URL: srv.URL + "/ok", Authentication: map[string]any{"sigv4": map[string]any{"region": "eu-west-1"}}}, want: analysis.PhaseError, wantMsg: "sigv4"},
		{name: "basicAuth", web: model.WebMetric{URL: srv.URL + "/echo", Authentication: map[string]any{"basicAuth": map[string]any{"username": "u", "password": "p"}}},
			success: `result.auth == "Basic dTpw"`, want: analysis.PhaseSuccessful},
		{name: "refused connection is an error", web: model.WebMetric{URL: "http://127.0.0.1:1/x"}, want: analysis.PhaseError, wantMsg: "measurement 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			web := tt.web
			res := run(t, p, &web, tt.success)
			if res.Phase != tt.want {
				t.Fatalf("phase %s, want %s: %s", res.Phase, tt.want, res.Message)
			}
			if !strings.Contains(res.Message, tt.wantMsg) {
				t.Errorf("message %q does not contain %q", res.Message, tt.wantMsg)
			}
		})
	}
}

func TestWebInsecure(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"ok":true}`) }))
	t.Cleanup(srv.Close)
	p := New(loopback(t, egress.Config{}))
	if res := run(t, p, &model.WebMetric{URL: srv.URL, JSONPath: "{$.ok}"}, "result"); res.Phase != analysis.PhaseError || !strings.Contains(res.Message, "certificate") {
		t.Fatalf("verified TLS against a self-signed server: %s %s", res.Phase, res.Message)
	}
	if res := run(t, p, &model.WebMetric{URL: srv.URL, JSONPath: "{$.ok}", Insecure: true}, "result"); res.Phase != analysis.PhaseSuccessful {
		t.Fatalf("insecure: %s %s", res.Phase, res.Message)
	}
}

// TestWebEgress: by default a web metric reaches neither loopback (the
// server's own API, NATS monitoring) nor the metadata service; the allow
// list opens loopback; a response over the size limit is an error.
func TestWebEgress(t *testing.T) {
	t.Parallel()
	srv := server(t)
	for _, tt := range []struct{ name, url, want string }{
		{"loopback", srv.URL + "/ok", "loopback"},
		{"localhost by name", strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/ok", "loopback"},
		{"metadata", "http://169.254.169.254/latest/meta-data/iam/", "cloud metadata"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := run(t, New(nil), &model.WebMetric{URL: tt.url}, "true")
			if res.Phase != analysis.PhaseError || !strings.Contains(res.Message, "egress policy refuses") || !strings.Contains(res.Message, tt.want) {
				t.Fatalf("phase %s: %s", res.Phase, res.Message)
			}
		})
	}
	small := New(loopback(t, egress.Config{MaxBytes: 16}))
	if res := run(t, small, &model.WebMetric{URL: srv.URL + "/ok"}, "true"); res.Phase != analysis.PhaseError || !strings.Contains(res.Message, "CARAVAN_EGRESS_MAX_BYTES") {
		t.Fatalf("over the size limit: %s %s", res.Phase, res.Message)
	}
}
