package hosted

// The services these providers query (Datadog, New Relic, Wavefront,
// Graphite, InfluxDB, Apache SkyWalking, Kayenta, CloudWatch) cannot run on this
// machine: each test starts an httptest server that stands in for one,
// answering as that service's API reference documents, and names the
// reference it follows. The server also checks what the provider sends
// (path, authentication, parameters), so a request the real API would
// refuse fails the test.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

var fixedNow = time.Date(2026, 12, 3, 1, 0, 0, 0, time.UTC)

// secrets is a project's Secrets for a run: name -> key -> value.
type secrets map[string]map[string]string

func (s secrets) lookup(_ context.Context, name, key string) (string, error) {
	v, ok := s[name][key]
	if !ok {
		return "", fmt.Errorf("secret %q key %q: %w", name, key, analysis.ErrNoSecret)
	}
	return v, nil
}

// measure runs one metric through the engine (as a verification does) and
// returns its only measurement.
func measure(t *testing.T, name string, p analysis.Provider, prov model.MetricProvider, success string, sec secrets) analysis.Measurement {
	t.Helper()
	m := model.Metric{Name: "m", SuccessCondition: success, ConsecutiveErrorLimit: &model.IntOrString{IntVal: 0}, Provider: prov}
	spec, err := analysis.Build(context.Background(), []analysis.Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{m}}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &analysis.Engine{Providers: map[string]analysis.Provider{name: p}}
	res, err := e.Run(context.Background(), analysis.RunInfo{Name: "r", Secret: sec.lookup, Redact: redactor(sec)}, spec)
	if err != nil {
		t.Fatal(err)
	}
	ms := res.Metrics[0].Measurements
	if len(ms) != 1 {
		t.Fatalf("measurements: %+v", ms)
	}
	return ms[0]
}

func redactor(sec secrets) func(string) string {
	return func(s string) string {
		for _, keys := range sec {
			for _, v := range keys {
				if len(v) > 3 {
					s = strings.ReplaceAll(s, v, "***")
				}
			}
		}
		return s
	}
}

func base() Base { return Base{client: http.DefaultClient, Now: func() time.Time { return fixedNow }} }

func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func fail(w http.ResponseWriter, format string, args ...any) {
	http.Error(w, `{"errors":["`+strings.ReplaceAll(strings.TrimSpace(format), `"`, `'`)+`"]}`, http.StatusBadRequest)
	_ = args
}

// Datadog: API reference "Metrics: Query timeseries points" (GET
// /api/v1/query, from/to in seconds, pointlist [[ms, value]]) and "Query
// scalar data across multiple products" (POST /api/v2/query/scalar,
// scalar_request, columns of type number/group), authenticated by the
// DD-API-KEY and DD-APPLICATION-KEY headers.
func TestDatadog(t *testing.T) {
	t.Parallel()
	var got []map[string]any
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("DD-API-KEY") != "api-123456" || r.Header.Get("DD-APPLICATION-KEY") != "app-654321" {
			http.Error(w, `{"errors":["Forbidden"]}`, http.StatusForbidden)
			return
		}
		switch r.URL.Path {
		case "/api/v1/query":
			q := r.URL.Query()
			if q.Get("from") != fmt.Sprint(fixedNow.Unix()-300) || q.Get("to") != fmt.Sprint(fixedNow.Unix()) {
				fail(w, "bad window "+q.Get("from")+" "+q.Get("to"))
				return
			}
			if q.Get("query") == "empty" {
				_, _ = io.WriteString(w, `{"status":"ok","series":[]}`)
				return
			}
			_, _ = io.WriteString(w, `{"status":"ok","series":[{"pointlist":[[1764723300000,0.5],[1764723540000,0.002]]}]}`)
		case "/api/v2/query/scalar":
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			got = append(got, body)
			attrs := body["data"].(map[string]any)["attributes"].(map[string]any)
			if int64(attrs["from"].(float64)) != fixedNow.UnixMilli()-300000 || int64(attrs["to"].(float64)) != fixedNow.UnixMilli() {
				fail(w, "bad window")
				return
			}
			formula := attrs["formulas"].([]any)[0].(map[string]any)["formula"]
			if formula == "grouped" {
				_, _ = io.WriteString(w, `{"data":{"type":"scalar_response","attributes":{"columns":[{"name":"resource_name","type":"group","values":[["GET /a"],["GET /b"]]},{"name":"grouped","type":"number","values":[0.01,0.2]}]}}}`)
				return
			}
			_, _ = io.WriteString(w, `{"data":{"type":"scalar_response","attributes":{"columns":[{"name":"a","type":"number","values":[7.5]}]}}}`)
		default:
			http.NotFound(w, r)
		}
	})
	sec := secrets{"datadog": {"api-key": "api-123456", "app-key": "app-654321", "address": srv.URL}, "other": {"api-key": "x", "app-key": "y", "address": srv.URL}}
	p := &Datadog{base()}
	for _, tc := range []struct {
		name     string
		settings map[string]any
		success  string
		phase    analysis.Phase
		value    string
		message  string
	}{
		{"v1", map[string]any{"query": "sum:errors{*}", "interval": "5m"}, "result < 0.01", analysis.PhaseSuccessful, "0.002", ""},
		{"v1 no data", map[string]any{"query": "empty"}, "default(result, 0) < 0.01", analysis.PhaseSuccessful, "null", ""},
		{"v2 formula", map[string]any{"apiVersion": "v2", "queries": map[string]any{"a": "sum:errors{*}", "b": "sum:reqs{*}"}, "formula": "a / b", "aggregator": "sum"}, "result > 5", analysis.PhaseSuccessful, "7.5", ""},
		{"v2 grouped", map[string]any{"apiVersion": "v2", "queries": map[string]any{"grouped": "sum:errors{*} by {resource_name}"}}, "max(result) < 0.05", analysis.PhaseFailed, "[0.01,0.2]", ""},
		{"wrong keys", map[string]any{"query": "q", "secretRef": map[string]any{"name": "other"}}, "true", analysis.PhaseError, "", "status 403"},
		{"typo", map[string]any{"querry": "q"}, "true", analysis.PhaseError, "", `unknown field "querry"`},
		{"bad aggregator", map[string]any{"apiVersion": "v2", "query": "q", "aggregator": "median"}, "true", analysis.PhaseError, "", "datadog.aggregator"},
		{"no secret", map[string]any{"query": "q", "secretRef": map[string]any{"name": "missing"}}, "true", analysis.PhaseError, "", "no such secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := measure(t, "datadog", p, model.MetricProvider{Datadog: tc.settings}, tc.success, sec)
			if m.Phase != tc.phase || (tc.value != "" && m.Value != tc.value) || !strings.Contains(m.Message, tc.message) {
				t.Fatalf("got %s %q %q, want %s %q %q", m.Phase, m.Value, m.Message, tc.phase, tc.value, tc.message)
			}
			if strings.Contains(m.Message, "api-123456") {
				t.Fatal("api key in message")
			}
		})
	}
	if len(got) == 0 {
		t.Fatal("no v2 request")
	}
	q := got[0]["data"].(map[string]any)["attributes"].(map[string]any)["queries"].([]any)
	if len(q) != 2 || q[0].(map[string]any)["aggregator"] != "sum" || q[0].(map[string]any)["data_source"] != "metrics" || q[0].(map[string]any)["name"] != "a" {
		t.Fatalf("v2 queries: %v", q)
	}
}

// New Relic: NerdGraph reference, "NRQL queries" (POST /graphql with the
// API-Key header; actor.account(id).nrql(query).results).
func TestNewRelic(t *testing.T) {
	t.Parallel()
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/graphql" || r.Header.Get("API-Key") != "NRAK-secret" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var body struct {
			Query     string         `json:"query"`
			Variables map[string]any `json:"variables"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		if !strings.Contains(body.Query, "nrql(query: $nrql") || body.Variables["accountId"] != float64(1234) {
			_, _ = io.WriteString(w, `{"errors":[{"message":"bad query"}]}`)
			return
		}
		if strings.Contains(body.Variables["nrql"].(string), "FACET") {
			_, _ = io.WriteString(w, `{"data":{"actor":{"account":{"nrql":{"results":[{"appName":"a","count":3},{"appName":"b","count":5}]}}}}}`)
			return
		}
		_, _ = io.WriteString(w, `{"data":{"actor":{"account":{"nrql":{"results":[{"successRate":0.97}]}}}}}`)
	})
	sec := secrets{"newrelic": {"personal-api-key": "NRAK-secret", "account-id": "1234", "base-url-nerdgraph": srv.URL + "/graphql"}}
	p := &NewRelic{base()}
	m := measure(t, "newRelic", p, model.MetricProvider{NewRelic: map[string]any{"query": "FROM Transaction SELECT percentage(count(*), WHERE error IS false) AS successRate"}}, "result.successRate >= 0.95", sec)
	if m.Phase != analysis.PhaseSuccessful {
		t.Fatalf("%+v", m)
	}
	m = measure(t, "newRelic", p, model.MetricProvider{NewRelic: map[string]any{"query": "SELECT count(*) FROM Transaction FACET appName"}}, "all(result, {.count < 4})", sec)
	if m.Phase != analysis.PhaseFailed {
		t.Fatalf("%+v", m)
	}
	m = measure(t, "newRelic", p, model.MetricProvider{NewRelic: map[string]any{"query": "q", "profile": "absent"}}, "true", sec)
	if m.Phase != analysis.PhaseError || !strings.Contains(m.Message, `"absent"`) {
		t.Fatalf("%+v", m)
	}
}

// Wavefront: REST API reference, "Chart" (GET /api/v2/chart/api with q, s
// in epoch ms, g; Authorization: Bearer <token>; timeseries[].data
// [[seconds, value]]).
func TestWavefront(t *testing.T) {
	t.Parallel()
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/chart/api" || r.Header.Get("Authorization") != "Bearer wf-token" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("s") != fmt.Sprint(fixedNow.UnixMilli()-300000) || r.URL.Query().Get("q") == "" {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, `{"name":"q","timeseries":[{"label":"x","data":[[1764723300,0.91],[1764723540,0.97]]}]}`)
	})
	sec := secrets{WavefrontSecret: {srv.URL: "wf-token"}}
	m := measure(t, "wavefront", &Wavefront{base()}, model.MetricProvider{Wavefront: map[string]any{"address": srv.URL, "query": `sum(rate(5m, ts("requests")))`}}, "result >= 0.95", sec)
	if m.Phase != analysis.PhaseSuccessful || m.Value != "0.97" {
		t.Fatalf("%+v", m)
	}
}

// Graphite: render API reference (GET /render?target=…&format=json;
// [{"target", "datapoints": [[value|null, timestamp]]}]).
func TestGraphite(t *testing.T) {
	t.Parallel()
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/render" || q.Get("format") != "json" || !strings.HasPrefix(q.Get("target"), "summarize(") {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, `[{"target":"x","datapoints":[[null,1764723300],[95.1234567,1764723360]]}]`)
	})
	m := measure(t, "graphite", &Graphite{base()}, model.MetricProvider{Graphite: map[string]any{"address": srv.URL, "query": "target=summarize(stats.ok, '5min', 'avg')"}}, "result[0] >= 90", nil)
	if m.Phase != analysis.PhaseSuccessful || m.Value != "[95.123457]" {
		t.Fatalf("%+v", m)
	}
}

// InfluxDB: v2 API reference, "POST /api/v2/query" (org parameter,
// Authorization: Token, Content-Type application/vnd.flux, CSV answer
// with one header row per table).
func TestInfluxDB(t *testing.T) {
	t.Parallel()
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/query" || r.URL.Query().Get("org") != "acme" || r.Header.Get("Authorization") != "Token influx-token" || r.Header.Get("Content-Type") != "application/vnd.flux" {
			http.Error(w, `{"code":"unauthorized","message":"unauthorized access"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		_, _ = io.WriteString(w, ",result,table,_start,_stop,_time,_value,_field,_measurement\r\n"+
			",_result,0,2026-12-03T00:45:00Z,2026-12-03T01:00:00Z,2026-12-03T00:59:00Z,0.004,rate,errors\r\n"+
			",_result,0,2026-12-03T00:45:00Z,2026-12-03T01:00:00Z,2026-12-03T01:00:00Z,0.006,rate,errors\r\n\r\n")
	})
	sec := secrets{"influxdb": {"address": srv.URL, "authToken": "influx-token", "org": "acme"}}
	m := measure(t, "influxdb", &InfluxDB{base()}, model.MetricProvider{Influxdb: map[string]any{"query": `from(bucket: "app") |> range(start: -15m)`}}, "all(result, # <= 0.01)", sec)
	if m.Phase != analysis.PhaseSuccessful || m.Value != "[0.004,0.006]" {
		t.Fatalf("%+v", m)
	}
	sec["influxdb"]["authToken"] = "wrong-token"
	m = measure(t, "influxdb", &InfluxDB{base()}, model.MetricProvider{Influxdb: map[string]any{"query": `from(bucket: "app")`}}, "true", sec)
	if m.Phase != analysis.PhaseError || !strings.Contains(m.Message, "status 401") || strings.Contains(m.Message, "wrong-token") {
		t.Fatalf("%+v", m)
	}
}

// SkyWalking: OAP GraphQL protocol (POST /graphql; Duration {start, end,
// step: MINUTE} with "yyyy-MM-dd HHmm" times).
func TestSkyWalking(t *testing.T) {
	t.Parallel()
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Variables struct {
				Duration map[string]string `json:"duration"`
			} `json:"variables"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		d := body.Variables.Duration
		if r.URL.Path != "/graphql" || d["start"] != "2026-12-03 0057" || d["end"] != "2026-12-03 0100" || d["step"] != "MINUTE" {
			_, _ = io.WriteString(w, `{"errors":[{"message":"bad duration"}]}`)
			return
		}
		_, _ = io.WriteString(w, `{"data":{"service_apdex":{"label":null,"values":{"values":[{"value":9950},{"value":9990}]}}}}`)
	})
	m := measure(t, "skywalking", &SkyWalking{base()}, model.MetricProvider{SkyWalking: map[string]any{"address": srv.URL, "interval": "3m", "query": "query queryData($duration: Duration!) { service_apdex: readMetricsValues(duration: $duration) { label values { values { value } } } }"}},
		"all(result.service_apdex.values.values, {.value >= 9900})", nil)
	if m.Phase != analysis.PhaseSuccessful {
		t.Fatalf("%+v", m)
	}
}

// Kayenta: its REST API (POST /canary/{configName}?application=… with
// scopes and thresholds -> canaryExecutionId; GET /canary/{id} ->
// complete, result.judgeResult.score).
func TestKayenta(t *testing.T) {
	t.Parallel()
	polls := 0
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/canary/my-config":
			var body struct {
				Scopes     map[string]map[string]kayentaScope `json:"scopes"`
				Thresholds map[string]int64                   `json:"thresholds"`
			}
			_ = json.NewDecoder(r.Body).Decode(&body)
			if r.URL.Query().Get("application") != "guestbook" || body.Scopes["default"]["controlScope"].Scope != "app=guestbook" || body.Thresholds["pass"] != 90 {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			_, _ = io.WriteString(w, `{"canaryExecutionId":"01EX"}`)
		case r.Method == http.MethodGet && r.URL.Path == "/canary/01EX":
			polls++
			if polls < 2 {
				_, _ = io.WriteString(w, `{"complete":false}`)
				return
			}
			_, _ = io.WriteString(w, `{"complete":true,"result":{"judgeResult":{"score":80}}}`)
		default:
			http.NotFound(w, r)
		}
	})
	scope := map[string]any{"scope": "app=guestbook", "step": 60, "start": "2026-12-03T00:00:00Z", "end": "2026-12-03T01:00:00Z"}
	settings := map[string]any{"address": srv.URL, "application": "guestbook", "canaryConfigName": "my-config",
		"threshold": map[string]any{"pass": 90, "marginal": 75}, "scopes": []any{map[string]any{"name": "default", "controlScope": scope, "experimentScope": scope}}}
	m := measure(t, "kayenta", &Kayenta{Base: base(), Poll: time.Millisecond}, model.MetricProvider{Kayenta: settings}, "", nil)
	if m.Phase != analysis.PhaseInconclusive || m.Value != "80" || polls != 2 {
		t.Fatalf("%+v after %d polls", m, polls)
	}
}

func TestOptionalSecret(t *testing.T) {
	t.Parallel()
	req := analysis.Request{Run: analysis.RunInfo{Secret: func(context.Context, string, string) (string, error) { return "", errors.New("store down") }}}
	if _, err := optionalSecret(context.Background(), req, "s", "k"); err == nil {
		t.Fatal("a failing store is not a missing key")
	}
}
