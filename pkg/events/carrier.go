package events

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// carrier adapts NATS headers to OpenTelemetry propagation. NATS header
// keys are case-sensitive and http.Header canonicalises them, so the HTTP
// carrier would lose "traceparent": both sides use this one.
type carrier nats.Header

var _ propagation.TextMapCarrier = carrier{}

func (c carrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c carrier) Set(key, value string) { c[key] = []string{value} }

func (c carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// injector is the carrier inject writes through: each value it sets takes
// a slot of spare, so the header values of one message share one
// allocation.
type injector struct {
	h     nats.Header
	spare []string
}

var _ propagation.TextMapCarrier = (*injector)(nil)

func (c *injector) Get(key string) string { return carrier(c.h).Get(key) }
func (c *injector) Keys() []string        { return carrier(c.h).Keys() }

func (c *injector) Set(key, value string) {
	if len(c.spare) == 0 {
		c.h[key] = []string{value}
		return
	}
	c.spare[0] = value
	c.h[key] = c.spare[:1:1]
	c.spare = c.spare[1:]
}

func extract(ctx context.Context, p propagation.TextMapPropagator, h nats.Header) context.Context {
	return p.Extract(ctx, carrier(h))
}

// TraceParent returns the W3C traceparent of ctx's span ("" when it has
// none), to carry a trace across a hop that is not a message: a promotion
// or verification queued in a KV record and run later.
func TraceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c.Get("traceparent")
}

// WithTraceParent returns ctx continuing the trace a TraceParent value
// names; ctx itself when traceparent is empty or malformed.
func WithTraceParent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// StartSpan starts an internal span (with otel's global tracer) for work a
// service does between consuming one event and publishing the next, such
// as running a queued promotion. The caller ends it.
func StartSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return otel.GetTracerProvider().Tracer(instrumentation).Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...))
}
