// Package telemetry configures what every Caravan binary reports about
// itself: structured logs (log/slog) and OpenTelemetry traces.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// LogConfig is embedded in every service's configuration.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `envconfig:"LOG_LEVEL" default:"info" desc:"log level: debug, info, warn or error"`
	// Format is text or json.
	Format string `envconfig:"LOG_FORMAT" default:"text" desc:"log format: text or json"`
}

// Validate reports an unknown level or format.
func (c LogConfig) Validate() error {
	var l slog.Level
	var errs []error
	if err := l.UnmarshalText([]byte(c.Level)); err != nil {
		errs = append(errs, fmt.Errorf("CARAVAN_LOG_LEVEL: %q is not debug, info, warn or error", c.Level))
	}
	if f := strings.ToLower(c.Format); f != "text" && f != "json" {
		errs = append(errs, fmt.Errorf("CARAVAN_LOG_FORMAT: %q is not text or json", c.Format))
	}
	return errors.Join(errs...)
}

// NewLogger builds the logger a binary injects everywhere.
func NewLogger(w io.Writer, c LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// SetupTracing installs the global propagator (W3C trace context and
// baggage) and, when the standard OTEL_* variables ask for it, a tracer
// provider exporting over OTLP. With no endpoint set, or with
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none, tracing stays off
// and costs nothing. The returned function flushes and stops the exporter.
func SetupTracing(ctx context.Context, service string) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	noop := func(context.Context) error { return nil }
	if !tracingWanted() {
		return noop, nil
	}
	var client otlptrace.Client
	switch protocol() {
	case "grpc":
		client = otlptracegrpc.NewClient()
	case "http/protobuf", "":
		client = otlptracehttp.NewClient()
	default:
		return noop, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not grpc or http/protobuf", protocol())
	}
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return noop, fmt.Errorf("start OTLP trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		res = resource.Default()
	}
	// Variables in the environment (OTEL_SERVICE_NAME,
	// OTEL_RESOURCE_ATTRIBUTES) win over the default service name.
	if envRes, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, envRes); err == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

func tracingWanted() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	if e := os.Getenv("OTEL_TRACES_EXPORTER"); e != "" && !strings.EqualFold(e, "otlp") {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

func protocol() string {
	if p := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"); p != "" {
		return p
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
}

// StartHTTPSpan starts the server span of an API request to route (its
// pattern, e.g. "POST /v1/projects/{project}/stages/{stage}/promotions"),
// continuing a trace the caller sent (traceparent header), and returns the
// request carrying it: the events the handler publishes join its trace.
// The caller ends the span.
func StartHTTPSpan(r *http.Request, route string) (*http.Request, trace.Span) {
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := otel.GetTracerProvider().Tracer("github.com/caravan-cd/caravan/pkg/telemetry").Start(ctx, route,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("http.route", route),
		))
	return r.WithContext(ctx), span
}
