package events_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/caravan-cd/caravan/pkg/events"
)

// A trace context stored as a traceparent string (in a queue record) and
// restored later continues the same trace under the same parent.
func TestTraceParentRoundTrip(t *testing.T) {
	t.Parallel()
	if got := events.TraceParent(context.Background()); got != "" {
		t.Errorf("TraceParent without a span = %q, want empty", got)
	}
	if ctx := events.WithTraceParent(context.Background(), "not a traceparent"); trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("a malformed traceparent gave a span context")
	}
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")
	defer span.End()
	stored := events.TraceParent(ctx)
	if stored == "" {
		t.Fatal("TraceParent of a sampled span is empty")
	}
	got := trace.SpanContextFromContext(events.WithTraceParent(context.Background(), stored))
	want := span.SpanContext()
	if got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() || !got.IsRemote() {
		t.Errorf("restored %v, want remote %v", got, want)
	}
}
