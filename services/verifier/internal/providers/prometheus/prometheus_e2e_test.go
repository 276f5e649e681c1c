//go:build e2e

package prometheus

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// startPrometheus runs Debian's prometheus scraping exporter every second
// and returns its URL once the exporter's samples are queryable.
func startPrometheus(t *testing.T, exporter string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not installed (apt-get install prometheus): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n- job_name: exporter\n  static_configs:\n  - targets: ['%s']\n", strings.TrimPrefix(exporter, "http://"))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	url := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/api/v1/query?query=demo_success_ratio")
		if err == nil {
			var body struct {
				Data struct {
					Result []any `json:"result"`
				} `json:"data"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			_ = resp.Body.Close()
			if len(body.Data.Result) > 0 {
				return url
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("prometheus did not scrape the exporter in 60s")
	return ""
}

func TestPrometheusE2E(t *testing.T) {
	exporter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "# TYPE demo_success_ratio gauge\ndemo_success_ratio{service=\"api\"} 0.97\n# TYPE demo_errors_total counter\ndemo_errors_total{service=\"api\"} 12\n")
	}))
	defer exporter.Close()
	url := startPrometheus(t, exporter.URL)
	p := New(url, nil)
	tests := []struct {
		name, query, success string
		rangeQuery           map[string]any
		want                 analysis.Phase
	}{
		{name: "range query", query: `demo_success_ratio{service="api"}`, success: "len(result) > 0 && all(result, # >= 0.95)",
			rangeQuery: map[string]any{"start": `now() - duration("1m")`, "end": "now()", "step": "5s"}, want: analysis.PhaseSuccessful},
		{name: "passing", query: `sum(demo_success_ratio{service="api"})`, success: "result[0] >= 0.95", want: analysis.PhaseSuccessful},
		{name: "failing", query: `sum(demo_errors_total{service="api"})`, success: "result[0] < 10", want: analysis.PhaseFailed},
		{name: "scalar", query: `scalar(demo_success_ratio)`, success: "result > 0.9", want: analysis.PhaseSuccessful},
		{name: "bad query", query: `sum(`, want: analysis.PhaseError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := model.Metric{Name: "rate", SuccessCondition: tt.success, ConsecutiveErrorLimit: &model.IntOrString{},
				Provider: model.MetricProvider{Prometheus: &model.PrometheusMetric{Query: tt.query, RangeQuery: tt.rangeQuery}}}
			spec, err := analysis.Build(context.Background(), []analysis.Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{m}}}}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := (&analysis.Engine{Providers: map[string]analysis.Provider{"prometheus": p}}).Run(context.Background(), analysis.RunInfo{}, spec)
			if err != nil {
				t.Fatal(err)
			}
			if res.Phase != tt.want {
				t.Fatalf("phase %s (%s), want %s", res.Phase, res.Message, tt.want)
			}
		})
	}
}
