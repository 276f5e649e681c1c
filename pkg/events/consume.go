package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Handler handles one typed event. It must be idempotent. Its result decides
// the delivery's fate: nil acknowledges it; an error wrapped by Permanent
// terminates it and records a dead letter; any other error makes JetStream
// deliver it again after a backoff, until the consumer's MaxDeliver, when
// it is dead-lettered too. ctx carries the event's envelope (FromContext)
// and the trace context of its publisher; it is canceled when the consumer
// is stopped.
type Handler[T Event] func(ctx context.Context, ev T) error

// EnvelopeHandler handles an event of any type.
type EnvelopeHandler func(ctx context.Context, env Envelope) error

// Consumer is a running consumption. Stop, Drain and Closed follow
// jetstream's ConsumeContext: Drain stops fetching and lets handlers in
// flight finish.
type Consumer struct {
	spec    ConsumerSpec
	subs    []jetstream.ConsumeContext
	cancel  context.CancelFunc
	closed  chan struct{}
	stopped sync.Once
}

// Consume binds (creating or updating) the durable consumer spec declares
// and runs h for every event it delivers, until ctx ends (then it drains).
func Consume[T Event](ctx context.Context, b *Bus, spec ConsumerSpec, h Handler[T]) (*Consumer, error) {
	var zero T
	want := zero.EventType()
	// Decode envelope and payload in one pass; the envelope handed to the
	// handler through FromContext has no Payload (the event is the
	// handler's argument).
	return consume(ctx, b, spec, func(data []byte) (Envelope, func(context.Context) error, error) {
		var w struct {
			envelopeHead
			Payload T `json:"payload"`
		}
		if err := json.Unmarshal(data, &w); err != nil {
			return Envelope{}, nil, Permanentf("decode %s envelope: %w", want, err)
		}
		env := Envelope{ID: w.ID, Type: w.Type, Version: w.Version, Time: w.Time, Source: w.Source, Project: w.Project, Subject: w.Subject}
		if env.Type != want {
			return env, nil, Permanentf("consumer %s takes %s, got %s", spec.Durable, want, env.Type)
		}
		return env, func(ctx context.Context) error { return h(ctx, w.Payload) }, nil
	})
}

// ConsumeEnvelopes is Consume for handlers that take several event types.
func ConsumeEnvelopes(ctx context.Context, b *Bus, spec ConsumerSpec, h EnvelopeHandler) (*Consumer, error) {
	return consume(ctx, b, spec, func(data []byte) (Envelope, func(context.Context) error, error) {
		var env Envelope
		if err := json.Unmarshal(data, &env); err != nil {
			return env, nil, Permanentf("decode envelope: %w", err)
		}
		return env, func(ctx context.Context) error { return h(ctx, env) }, nil
	})
}

// decoder turns a message's data into its envelope and the call of the
// handler on it.
type decoder func(data []byte) (Envelope, func(context.Context) error, error)

func consume(ctx context.Context, b *Bus, spec ConsumerSpec, decode decoder) (*Consumer, error) {
	spec = spec.withDefaults()
	if spec.Durable == "" || len(spec.Filters) == 0 {
		return nil, errors.New("consume: a durable name and at least one filter are required")
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, StreamEvents, spec.config())
	if err != nil {
		return nil, fmt.Errorf("declare consumer %s: %w", spec.Durable, err)
	}
	dl, err := b.js.KeyValue(ctx, BucketDeadLetters)
	if err != nil {
		return nil, fmt.Errorf("bind dead-letter bucket: %w", err)
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &Consumer{spec: spec, cancel: cancel, closed: make(chan struct{})}
	a := &adapter{bus: b, spec: spec, decode: decode, deadLetters: dl, ctx: hctx}
	for range spec.Concurrency {
		cc, err := cons.Consume(a.handle,
			jetstream.PullMaxMessages(max(2, min(100, spec.MaxAckPending/spec.Concurrency))),
			jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {}))
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("consume %s: %w", spec.Durable, err)
		}
		c.subs = append(c.subs, cc)
	}
	go func() {
		select {
		case <-ctx.Done():
			c.Drain()
		case <-c.closed:
		}
	}()
	go func() {
		for _, s := range c.subs {
			<-s.Closed()
		}
		cancel()
		c.stopped.Do(func() { close(c.closed) })
	}()
	return c, nil
}

// Stop stops consuming at once and cancels handlers in flight; their
// deliveries are redelivered later.
func (c *Consumer) Stop() {
	for _, s := range c.subs {
		s.Stop()
	}
	c.cancel()
	if len(c.subs) == 0 {
		c.stopped.Do(func() { close(c.closed) })
	}
}

// Drain stops fetching and lets handlers in flight finish.
func (c *Consumer) Drain() {
	for _, s := range c.subs {
		s.Drain()
	}
}

// Closed is closed once the consumer has stopped.
func (c *Consumer) Closed() <-chan struct{} { return c.closed }

// Durable returns the durable consumer's name.
func (c *Consumer) Durable() string { return c.spec.Durable }

type adapter struct {
	bus         *Bus
	spec        ConsumerSpec
	decode      decoder
	deadLetters jetstream.KeyValue
	ctx         context.Context
}

func (a *adapter) handle(msg jetstream.Msg) {
	start := time.Now()
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return
	}
	ctx := extract(a.ctx, a.bus.propagator, msg.Headers())
	typ := typeOf(msg.Subject())
	ctx, span := a.bus.tracer.Start(ctx, "process "+typ,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("messaging.consumer.group.name", a.spec.Durable),
			attribute.String("messaging.message.id", msg.Headers().Get(jetstream.MsgIDHeader)),
			attribute.Int64("messaging.nats.delivered", int64(meta.NumDelivered)),
		))
	defer span.End()
	if meta.NumDelivered > 1 {
		a.bus.metrics.redelivered(a.spec.Durable)
	}

	env, call, err := a.decode(msg.Data())
	if env.Type == "" {
		env.Type = Type(typ)
	}
	if env.ID == "" {
		env.ID = msg.Headers().Get(jetstream.MsgIDHeader)
	}
	if err == nil {
		err = a.run(WithEnvelope(ctx, env), msg, call)
	}

	result := "ack"
	switch {
	case err == nil:
		_ = msg.Ack()
	case IsPermanent(err) || int(meta.NumDelivered) >= a.spec.MaxDeliver:
		result = "deadletter"
		a.deadLetter(ctx, msg, meta, env, err)
		_ = msg.TermWithReason(truncate(err.Error(), 200))
	default:
		result = "retry"
		_ = msg.NakWithDelay(backoff(int(meta.NumDelivered), 250*time.Millisecond, 30*time.Second))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, result)
	}
	a.bus.metrics.handled(a.spec.Durable, env.Type, result, time.Since(start))
}

// run calls the handler, telling JetStream the delivery is in progress
// each time half the ack wait passes while it runs.
func (a *adapter) run(ctx context.Context, msg jetstream.Msg, call func(context.Context) error) (err error) {
	var mu sync.Mutex
	finished := false
	var timer *time.Timer
	timer = time.AfterFunc(a.spec.AckWait/2, func() {
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			_ = msg.InProgress()
			timer.Reset(a.spec.AckWait / 2)
		}
	})
	defer func() {
		mu.Lock()
		finished = true
		timer.Stop()
		mu.Unlock()
		if r := recover(); r != nil {
			err = Permanentf("handler %s panicked: %v", a.spec.Durable, r)
		}
	}()
	return call(ctx)
}

// typeOf returns the event type token of an event subject.
func typeOf(subject string) string {
	// caravan.events.<project>.<type>.<kind>.<name>
	for i := 0; i < 3; i++ {
		dot := strings.IndexByte(subject, '.')
		if dot < 0 {
			return ""
		}
		subject = subject[dot+1:]
	}
	if dot := strings.IndexByte(subject, '.'); dot >= 0 {
		return subject[:dot]
	}
	return subject
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
