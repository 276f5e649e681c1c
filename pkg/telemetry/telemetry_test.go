package telemetry_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel"

	"github.com/caravan-cd/caravan/pkg/telemetry"
)

func TestLogConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cfg     telemetry.LogConfig
		wantErr string
	}{
		{telemetry.LogConfig{Level: "debug", Format: "json"}, ""},
		{telemetry.LogConfig{Level: "info", Format: "text"}, ""},
		{telemetry.LogConfig{Level: "loud", Format: "text"}, "CARAVAN_LOG_LEVEL"},
		{telemetry.LogConfig{Level: "info", Format: "xml"}, "CARAVAN_LOG_FORMAT"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.cfg, err, tt.wantErr)
		}
	}
	var buf bytes.Buffer
	log := telemetry.NewLogger(&buf, telemetry.LogConfig{Level: "warn", Format: "json"})
	log.Info("hidden")
	log.Warn("shown", "k", "v")
	if out := buf.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown"`) {
		t.Errorf("log output = %q", out)
	}
}

// TestTracingOffByDefault and TestTracingExportsOTLP change the process
// environment and otel's globals, so they do not run in parallel.
func TestTracingOffByDefault(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	shutdown, err := telemetry.SetupTracing(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = shutdown(context.Background()) }()
	_, span := otel.Tracer("t").Start(context.Background(), "s")
	defer span.End()
	if span.SpanContext().IsValid() && span.IsRecording() {
		t.Error("a span records with tracing off")
	}
}

// TestTracingExportsOTLP checks the SDK wiring from OTEL_* variables: an
// httptest server stands in for the collector and only counts OTLP/HTTP
// posts. Checking the content of traces in a real backend (Jaeger) belongs
// to the end-to-end suite.
func TestTracingExportsOTLP(t *testing.T) {
	var posts atomic.Int32
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	shutdown, err := telemetry.SetupTracing(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("t").Start(context.Background(), "s")
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if posts.Load() == 0 {
		t.Error("no spans reached the OTLP endpoint")
	}
}
