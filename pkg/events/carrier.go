package events

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
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

func inject(ctx context.Context, p propagation.TextMapPropagator, h nats.Header) {
	p.Inject(ctx, carrier(h))
}

func extract(ctx context.Context, p propagation.TextMapPropagator, h nats.Header) context.Context {
	return p.Extract(ctx, carrier(h))
}
