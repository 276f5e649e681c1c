package events_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/caravan-cd/caravan/pkg/events"
)

// BenchmarkEventHop measures one event hop, publish → handler, through
// pkg/events with tracing on, beside a raw JetStream publish → consume hop
// on the same server in the same run, interleaved so that both see the same
// machine. The raw hop does what any JetStream user does at the least: it
// encodes the event with encoding/json, publishes it with a message ID,
// and its consumer decodes it and acks. The difference is what pkg/events
// adds: the envelope, subjects, tracing, the handler adapter. It reports
// both latencies and their ratio (target ≤ 1.3).
func BenchmarkEventHop(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	bus, js := setup(b, events.WithTracerProvider(tp), events.WithPropagator(propagation.TraceContext{}))
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
	b.ResetTimer()
	rawHop := func() {
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
	}
	eventHop := func() {
		start := time.Now()
		if _, err := bus.Publish(ctx, "demo", ref, ev); err != nil {
			b.Fatal(err)
		}
		<-evDone
		evTotal += time.Since(start)
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
}
