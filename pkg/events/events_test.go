package events_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

const wait = 20 * time.Second // generous: CI has two shared cores

func setup(t testing.TB, opts ...events.Option) (*events.Bus, jetstream.JetStream) {
	t.Helper()
	srv := testenv.NATS(t)
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := events.Setup(ctx, js, events.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	return events.NewBus(js, "test", opts...), js
}

func spec(name string, maxDeliver int) events.ConsumerSpec {
	return events.ConsumerSpec{
		Durable:    name,
		Filters:    []string{events.Filter(events.Any, events.TypeFreightDiscovered, events.Any)},
		MaxDeliver: maxDeliver,
		AckWait:    5 * time.Second,
	}
}

func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatal("timed out waiting for a delivery")
	}
	var zero T
	return zero
}

func TestPublishConsumeAck(t *testing.T) {
	t.Parallel()
	bus, js := setup(t)
	ctx := t.Context()
	got := make(chan events.FreightDiscovered, 1)
	envs := make(chan events.Envelope, 1)
	c, err := events.Consume(ctx, bus, spec("ack", 3), func(ctx context.Context, ev events.FreightDiscovered) error {
		env, _ := events.FromContext(ctx)
		envs <- env
		got <- ev
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	sent, err := bus.Publish(ctx, "demo", events.Ref{Kind: "Freight", Name: "abc"}, events.FreightDiscovered{Freight: "abc", Alias: "calm-otter", Origin: events.FreightOrigin{Kind: "Warehouse", Name: "w"}})
	if err != nil {
		t.Fatal(err)
	}
	ev := receive(t, got)
	env := receive(t, envs)
	if ev.Freight != "abc" || ev.Alias != "calm-otter" || ev.Origin.Name != "w" {
		t.Errorf("payload = %+v", ev)
	}
	if env.ID != sent.ID || env.Project != "demo" || env.Type != events.TypeFreightDiscovered || env.Version != 1 || env.Source != "test" {
		t.Errorf("envelope = %+v, sent %+v", env, sent)
	}
	waitAcked(t, js, "ack")
}

func waitAcked(t *testing.T, js jetstream.JetStream, durable string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		cons, err := js.Consumer(t.Context(), events.StreamEvents, durable)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending == 0 && info.NumPending == 0 && info.NumRedelivered == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s not settled: %+v", durable, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedeliveryAfterError(t *testing.T) {
	t.Parallel()
	bus, _ := setup(t)
	ctx := t.Context()
	var calls atomic.Int32
	done := make(chan int32, 1)
	c, err := events.Consume(ctx, bus, spec("retry", 5), func(ctx context.Context, ev events.FreightDiscovered) error {
		n := calls.Add(1)
		if n < 3 {
			return errors.New("registry unavailable")
		}
		done <- n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if _, err := bus.Publish(ctx, "demo", events.Ref{Kind: "Freight", Name: "f"}, events.FreightDiscovered{Freight: "f"}); err != nil {
		t.Fatal(err)
	}
	if n := receive(t, done); n != 3 {
		t.Errorf("handled on call %d, want 3", n)
	}
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		maxDeliver int
		err        error
		wantCalls  int32
	}{
		{"permanent error terminates at once", 5, events.Permanentf("freight %q will never exist", "x"), 1},
		{"deliveries exhausted", 2, errors.New("still failing"), 2},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bus, _ := setup(t)
			ctx := t.Context()
			var calls atomic.Int32
			var sentID atomic.Value
			replayed := make(chan struct{}, 1)
			durable := []string{"perm", "exhausted"}[i]
			c, err := events.Consume(ctx, bus, spec(durable, tt.maxDeliver), func(ctx context.Context, ev events.FreightDiscovered) error {
				n := calls.Add(1)
				if ev.Alias == "replay-me" && n > tt.wantCalls {
					replayed <- struct{}{}
					if env, _ := events.FromContext(ctx); env.ID != sentID.Load() || env.Project != "demo" || env.Source != "test" {
						t.Errorf("replayed envelope = %+v, want the event's own ID %v", env, sentID.Load())
					}
					return nil
				}
				return tt.err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Stop()
			sent, err := bus.PublishWithID(ctx, "replay-"+durable, "demo", events.Ref{Kind: "Freight", Name: "f"}, events.FreightDiscovered{Freight: "f", Alias: "replay-me"})
			if err != nil {
				t.Fatal(err)
			}
			sentID.Store(sent.ID)
			dls, err := events.NewDeadLetters(ctx, bus)
			if err != nil {
				t.Fatal(err)
			}
			var list []events.DeadLetter
			deadline := time.Now().Add(wait)
			for len(list) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("no dead letter recorded")
				}
				time.Sleep(20 * time.Millisecond)
				if list, _, err = dls.List(ctx, 10, ""); err != nil {
					t.Fatal(err)
				}
			}
			dl := list[0]
			if dl.EventID != sent.ID || dl.Consumer != durable || dl.Type != events.TypeFreightDiscovered || dl.Project != "demo" || dl.Error == "" {
				t.Errorf("dead letter = %+v", dl)
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("handler called %d times, want %d", got, tt.wantCalls)
			}
			if dl.Deliveries != uint64(tt.wantCalls) {
				t.Errorf("deliveries = %d, want %d", dl.Deliveries, tt.wantCalls)
			}
			if err := dls.Replay(ctx, dl.ID); err != nil {
				t.Fatal(err)
			}
			receive(t, replayed)
			if _, err := dls.Get(ctx, dl.ID); !errors.Is(err, events.ErrNotFound) {
				t.Errorf("replayed dead letter still there: %v", err)
			}
		})
	}
}

func TestDuplicateIDDropped(t *testing.T) {
	t.Parallel()
	bus, js := setup(t)
	ctx := t.Context()
	env, err := events.Seal("freight-discovered-demo-abc", "test", "demo", events.Ref{Kind: "Freight", Name: "abc"}, events.FreightDiscovered{Freight: "abc"})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := bus.PublishEnvelope(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bus.PublishWithID(ctx, env.ID, "demo", env.Subject, events.FreightDiscovered{Freight: "abc"}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestTraceContextSurvivesPublishConsume(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	bus, _ := setup(t, events.WithTracerProvider(tp), events.WithPropagator(propagation.TraceContext{}))
	ctx := t.Context()
	got := make(chan trace.SpanContext, 1)
	c, err := events.Consume(ctx, bus, spec("trace", 3), func(ctx context.Context, _ events.FreightDiscovered) error {
		got <- trace.SpanContextFromContext(ctx)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	pctx, parent := tp.Tracer("test").Start(ctx, "webhook")
	if _, err := bus.Publish(pctx, "demo", events.Ref{Kind: "Freight", Name: "f"}, events.FreightDiscovered{Freight: "f"}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	sc := receive(t, got)
	if sc.TraceID() != parent.SpanContext().TraceID() {
		t.Fatalf("handler trace %s, publisher trace %s", sc.TraceID(), parent.SpanContext().TraceID())
	}
	deadline := time.Now().Add(wait)
	for {
		var producer, consumer sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			switch s.SpanKind() {
			case trace.SpanKindProducer:
				producer = s
			case trace.SpanKindConsumer:
				consumer = s
			}
		}
		if producer != nil && consumer != nil {
			if producer.Parent().SpanID() != parent.SpanContext().SpanID() {
				t.Errorf("producer span's parent is not the caller's span")
			}
			if consumer.Parent().SpanID() != producer.SpanContext().SpanID() {
				t.Errorf("consumer span's parent is not the producer span")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("spans not recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDrainFinishesInFlight(t *testing.T) {
	t.Parallel()
	bus, js := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan struct{})
	var finished atomic.Bool
	c, err := events.Consume(ctx, bus, spec("drain", 3), func(ctx context.Context, _ events.FreightDiscovered) error {
		close(started)
		time.Sleep(200 * time.Millisecond)
		finished.Store(true)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Publish(t.Context(), "demo", events.Ref{Kind: "Freight", Name: "f"}, events.FreightDiscovered{Freight: "f"}); err != nil {
		t.Fatal(err)
	}
	receive(t, started)
	cancel() // drains
	select {
	case <-c.Closed():
	case <-time.After(wait):
		t.Fatal("consumer did not close after drain")
	}
	if !finished.Load() {
		t.Error("drain did not wait for the handler in flight")
	}
	waitAcked(t, js, "drain")
}

func TestSubjects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		got, want string
	}{
		{events.Subject("demo", events.TypePromotionStarted, events.Ref{Kind: "Promotion", Name: "prod.01h.abc"}), "caravan.events.demo.PromotionStarted.Promotion.prod_01h_abc"},
		{events.Subject("", events.TypeResourceApplied, events.Ref{Kind: "Project", Name: "demo"}), "caravan.events._.ResourceApplied.Project.demo"},
		{events.Filter(events.Any, events.TypeResourceApplied, "Warehouse"), "caravan.events.*.ResourceApplied.Warehouse.>"},
		{events.Filter("demo", "", ""), "caravan.events.demo.*.*.>"},
		{events.ProjectFilter("demo"), "caravan.events.demo.>"},
		{events.Token("a b>c*d"), "a_b_c_d"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	base := errors.New("boom")
	err := events.Permanent(base)
	if !events.IsPermanent(err) || !errors.Is(err, base) {
		t.Errorf("Permanent(%v) lost its kind or cause", base)
	}
	if events.IsPermanent(base) || events.Permanent(nil) != nil {
		t.Error("plain errors and nil must not be permanent")
	}
}

// TestConcurrentConsumersHandleOnce binds the same durable twice, as two
// replicas of a service would: every event is handled once.
func TestConcurrentConsumersHandleOnce(t *testing.T) {
	t.Parallel()
	bus, _ := setup(t)
	ctx := t.Context()
	var mu sync.Mutex
	seen := map[string]int{}
	const n = 200
	all := make(chan struct{})
	handler := func(ctx context.Context, ev events.FreightDiscovered) error {
		mu.Lock()
		defer mu.Unlock()
		seen[ev.Freight]++
		if len(seen) == n {
			close(all)
		}
		return nil
	}
	for range 2 {
		c, err := events.Consume(ctx, bus, spec("replicas", 3), handler)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Stop()
	}
	for i := range n {
		name := "f" + string(rune('a'+i%26)) + time.Now().Format("150405.000000000")
		if _, err := bus.Publish(ctx, "demo", events.Ref{Kind: "Freight", Name: name}, events.FreightDiscovered{Freight: name}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-time.After(wait):
		t.Fatalf("handled %d of %d", len(seen), n)
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for k, v := range seen {
		if v != 1 {
			t.Errorf("%s handled %d times", k, v)
		}
	}
}

// TestSetupIsIdempotentAndUpdates declares the stream again unchanged (a
// no-op) and then with a new retention, which must take effect.
func TestSetupIsIdempotentAndUpdates(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	ctx := t.Context()
	cfg := events.DefaultStreamConfig()
	if err := events.Setup(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.MaxAge = time.Hour
	cfg.DeadLetterMaxAge = 2 * time.Hour
	if err := events.Setup(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != time.Hour {
		t.Errorf("stream MaxAge = %s, want 1h", got)
	}
	kv, err := js.KeyValue(ctx, events.BucketDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 2*time.Hour {
		t.Errorf("dead-letter TTL = %s, want 2h", st.TTL())
	}
}

// Open and OpenNATS give back the envelope a publisher sealed from what
// the stream and a core subscription deliver; an envelope as JSON, as
// events were written before the payload went alone, is still consumed.
func TestOpenAndEnvelopesWrittenBefore(t *testing.T) {
	t.Parallel()
	bus, js := setup(t)
	ctx := t.Context()
	sub, err := js.Conn().SubscribeSync(events.SubjectRoot + ".>")
	if err != nil {
		t.Fatal(err)
	}
	ref := events.Ref{Kind: "Stage", Name: "eu.prod"}
	sent, err := bus.Publish(ctx, "team.a", ref, events.FreightDiscovered{Freight: "abc", Alias: "calm-otter"})
	if err != nil {
		t.Fatal(err)
	}
	same := func(how string, got events.Envelope) {
		t.Helper()
		if got.ID != sent.ID || got.Type != sent.Type || got.Version != sent.Version || got.Source != "test" ||
			got.Project != "team.a" || got.Subject != ref || string(got.Payload) != string(sent.Payload) {
			t.Errorf("%s = %+v, want %+v", how, got, sent)
		}
	}
	m, err := sub.NextMsg(wait)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.OpenNATS(m)
	if err != nil {
		t.Fatal(err)
	}
	same("OpenNATS", got)

	oc, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	jm, err := oc.Next(jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	if got, err = events.Open(jm); err != nil {
		t.Fatal(err)
	}
	same("Open", got)
	if got.Time.IsZero() || got.Time.Sub(sent.Time).Abs() > time.Minute {
		t.Errorf("Open: time %v, sealed %v", got.Time, sent.Time)
	}

	// Written before: the envelope as JSON is the message's data.
	old, err := events.Seal("old-1", "promoter", "demo", events.Ref{Kind: "Freight", Name: "old"}, events.FreightDiscovered{Freight: "old"})
	if err != nil {
		t.Fatal(err)
	}
	data, err := old.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	typed := make(chan events.Envelope, 1)
	c, err := events.Consume(ctx, bus, events.ConsumerSpec{Durable: "old", Filters: []string{events.Filter("demo", events.TypeFreightDiscovered, events.Any)}},
		func(ctx context.Context, ev events.FreightDiscovered) error {
			env, _ := events.FromContext(ctx)
			if ev.Freight != "old" {
				t.Errorf("payload = %+v", ev)
			}
			typed <- env
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	anyType := make(chan events.Envelope, 1)
	ce, err := events.ConsumeEnvelopes(ctx, bus, events.ConsumerSpec{Durable: "old-any", Filters: []string{events.ProjectFilter("demo")}},
		func(ctx context.Context, env events.Envelope) error { anyType <- env; return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer ce.Stop()
	if _, err := js.Publish(ctx, events.Subject(old.Project, old.Type, old.Subject), data, jetstream.WithMsgID(old.ID)); err != nil {
		t.Fatal(err)
	}
	for how, ch := range map[string]chan events.Envelope{"Consume": typed, "ConsumeEnvelopes": anyType} {
		env := receive(t, ch)
		if env.ID != "old-1" || env.Source != "promoter" || env.Project != "demo" || !env.Time.Equal(old.Time) {
			t.Errorf("%s: envelope = %+v, want %+v", how, env, old)
		}
	}
}
