package events_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"runtime/metrics"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	nooptrace "go.opentelemetry.io/otel/trace/noop"

	"github.com/caravan-cd/caravan/pkg/events"
)

// BenchmarkEventHop measures one event hop, publish → handler, through
// pkg/events beside a raw JetStream publish → consume hop on the same
// server in the same run, interleaved so that both see the same machine.
// The raw hop does what any JetStream user does at the least: it encodes
// the event with encoding/json, publishes it with a message ID, and its
// consumer decodes it and acks. The difference is what pkg/events adds:
// the envelope's fields (in headers and the subject beside the payload,
// wire.go), subjects, tracing, the handler adapter. It reports both
// latencies, their ratio (target ≤ 1.2) and the heap allocations per hop of
// each (the whole process: client, server and handler).
//
// "default" is a server without an OTLP endpoint (otel's no-op tracer, the
// W3C propagators); "traced" records every span, the worst case. With a
// sampled traceparent header the NATS server itself copies the message's
// headers into a map to look for its own message tracing (about nine
// allocations per hop): they are counted here because the server is
// embedded, but in a deployment they are nats-server's.
func BenchmarkEventHop(b *testing.B) {
	b.Run("default", func(b *testing.B) {
		benchmarkHop(b, events.WithTracerProvider(nooptrace.NewTracerProvider()),
			events.WithPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})))
	})
	b.Run("traced", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		benchmarkHop(b, events.WithTracerProvider(tp), events.WithPropagator(propagation.TraceContext{}))
	})
}

func benchmarkHop(b *testing.B, opts ...events.Option) {
	bus, js := setup(b, opts...)
	ctx := b.Context()

	// Raw JetStream: its own stream, a durable pull consumer, Ack.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Duplicates: 2 * time.Minute}); err != nil {
		b.Fatal(err)
	}
	rawCons, err := js.CreateOrUpdateConsumer(ctx, "RAW", jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	rawDone := make(chan struct{}, 1)
	cc, err := rawCons.Consume(func(m jetstream.Msg) {
		var got events.FreightDiscovered
		if err := json.Unmarshal(m.Data(), &got); err != nil {
			b.Error(err)
		}
		_ = m.Ack()
		rawDone <- struct{}{}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	evDone := make(chan struct{}, 1)
	c, err := events.Consume(ctx, bus, events.ConsumerSpec{
		Durable: "bench",
		Filters: []string{events.Filter(events.Any, events.TypeFreightDiscovered, events.Any)},
	}, func(ctx context.Context, ev events.FreightDiscovered) error {
		evDone <- struct{}{}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Stop()

	ev := events.FreightDiscovered{Freight: "0123456789abcdef0123456789abcdef01234567", Alias: "calm-otter", Origin: events.FreightOrigin{Kind: "Warehouse", Name: "demo"}}
	ref := events.Ref{Kind: "Freight", Name: ev.Freight}

	var rawTotal, evTotal time.Duration
	var rawAllocs, evAllocs uint64
	allocs := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	allocated := func() uint64 {
		metrics.Read(allocs)
		return allocs[0].Value.Uint64()
	}
	b.ResetTimer()
	rawHop := func() {
		a := allocated()
		start := time.Now()
		raw, err := json.Marshal(ev)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.Publish(ctx, "raw.demo", raw, jetstream.WithMsgID(events.NewID())); err != nil {
			b.Fatal(err)
		}
		<-rawDone
		rawTotal += time.Since(start)
		rawAllocs += allocated() - a
	}
	eventHop := func() {
		a := allocated()
		start := time.Now()
		if _, err := bus.Publish(ctx, "demo", ref, ev); err != nil {
			b.Fatal(err)
		}
		<-evDone
		evTotal += time.Since(start)
		evAllocs += allocated() - a
	}
	for i := 0; b.Loop(); i++ {
		// Alternate which goes first: the second hop of a pair pays for
		// the server still settling the first one's ack.
		if i%2 == 0 {
			rawHop()
			eventHop()
		} else {
			eventHop()
			rawHop()
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(rawTotal.Nanoseconds())/n, "raw-ns/hop")
	b.ReportMetric(float64(evTotal.Nanoseconds())/n, "events-ns/hop")
	b.ReportMetric(float64(evTotal)/float64(rawTotal), "ratio")
	b.ReportMetric(float64(rawAllocs)/n, "raw-allocs/hop")
	b.ReportMetric(float64(evAllocs)/n, "events-allocs/hop")
}
