package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/caravan-cd/caravan/pkg/state"
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
	spec      ConsumerSpec
	cons      jetstream.Consumer
	stopFetch context.CancelFunc // ends fetching
	cancel    context.CancelFunc // cancels handlers in flight
	closed    chan struct{}
	fetchErr  atomic.Pointer[error] // the last fetch's error (nil: it worked)
}

// Consume binds (creating or updating) the durable consumer spec declares
// and runs h for every event it delivers, until ctx ends (then it drains).
func Consume[T Event](ctx context.Context, b *Bus, spec ConsumerSpec, h Handler[T]) (*Consumer, error) {
	var zero T
	want := zero.EventType()
	// The envelope handed to the handler through FromContext has no
	// Payload (the event is the handler's argument).
	return consume(ctx, b, spec, func(m message) (Envelope, func(context.Context) error, error) {
		w, err := decodeTyped[T](m)
		if err != nil {
			return Envelope{}, nil, Permanentf("decode %s event: %w", want, err)
		}
		env := Envelope{ID: w.ID, Type: w.Type, Version: w.Version, Time: w.Time, Source: w.Source, Project: w.Project, Subject: w.Subject}
		if env.Type != want {
			return env, nil, Permanentf("consumer %s takes %s, got %s", spec.Durable, want, env.Type)
		}
		return env, func(ctx context.Context) error { return h(ctx, w.Payload) }, nil
	})
}

// typed is an envelope decoded with its payload.
type typed[T Event] struct {
	envelopeHead
	Payload T `json:"payload"`
}

// decodeTyped decodes an event's envelope fields and its payload: from
// the subject and headers and the data the payload (wire.go), or, from a
// message written before, an envelope as JSON in one pass, as
// encoding/json would.
func decodeTyped[T Event](m message) (typed[T], error) {
	var w typed[T]
	head, ok, err := openHead(m.subject, m.header, m.stored)
	if err != nil {
		return w, err
	}
	if ok {
		w.envelopeHead = head
		if err := json.Unmarshal(m.data, &w.Payload); err != nil {
			return typed[T]{}, fmt.Errorf("%s payload: %w", head.Type, err)
		}
		return w, nil
	}
	if payload, ok := scanEnvelope(m.data, &w.envelopeHead); ok {
		if payload == nil {
			return w, nil
		}
		if err := json.Unmarshal(payload, &w.Payload); err != nil {
			return typed[T]{}, err
		}
		return w, nil
	}
	w = typed[T]{}
	err = json.Unmarshal(m.data, &w)
	return w, err
}

// ConsumeEnvelopes is Consume for handlers that take several event types.
func ConsumeEnvelopes(ctx context.Context, b *Bus, spec ConsumerSpec, h EnvelopeHandler) (*Consumer, error) {
	return consume(ctx, b, spec, func(m message) (Envelope, func(context.Context) error, error) {
		env, err := open(m.subject, m.header, m.data, m.stored)
		if err != nil {
			return env, nil, Permanentf("decode event: %w", err)
		}
		return env, func(ctx context.Context) error { return h(ctx, env) }, nil
	})
}

// message is what a decoder reads of a delivery.
type message struct {
	subject string
	header  nats.Header
	data    []byte
	stored  time.Time
}

// decoder turns a message into its envelope and the call of the handler
// on it.
type decoder func(m message) (Envelope, func(context.Context) error, error)

// fetchWait is how long one pull request waits for messages.
const fetchWait = 5 * time.Second

// consume fetches up to Prefetch messages at a time and hands them to
// Concurrency handlers. Every message fetched and not yet answered is
// "held": while it waits for a handler or is being handled, the consumer
// tells JetStream it is in progress every half AckWait, so no message this
// process holds is redelivered to another replica because a handler
// before it was slow.
func consume(ctx context.Context, b *Bus, spec ConsumerSpec, decode decoder) (*Consumer, error) {
	spec = spec.withDefaults()
	if spec.Durable == "" || len(spec.Filters) == 0 {
		return nil, errors.New("consume: a durable name and at least one filter are required")
	}
	// Retried while the cluster elects a leader (declaring is idempotent).
	var cons jetstream.Consumer
	err := state.Retry(ctx, func(ctx context.Context) (err error) {
		cons, err = b.js.CreateOrUpdateConsumer(ctx, StreamEvents, spec.config())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("declare consumer %s: %w", spec.Durable, err)
	}
	var dl jetstream.KeyValue
	err = state.Retry(ctx, func(ctx context.Context) (err error) {
		dl, err = b.js.KeyValue(ctx, BucketDeadLetters)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bind dead-letter bucket: %w", err)
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	fctx, stopFetch := context.WithCancel(context.WithoutCancel(ctx))
	c := &Consumer{spec: spec, cons: cons, cancel: cancel, stopFetch: stopFetch, closed: make(chan struct{})}
	a := &adapter{bus: b, spec: spec, decode: decode, deadLetters: dl, ctx: hctx, log: b.log.With("consumer", spec.Durable)}
	held := newHolding(spec.Prefetch)
	work := make(chan jetstream.Msg, spec.Prefetch)
	var handlers sync.WaitGroup
	for range spec.Concurrency {
		handlers.Go(func() {
			for msg := range work {
				a.handle(msg)
				held.release(msg)
			}
		})
	}
	extending, stopExtending := context.WithCancel(context.Background())
	go held.extend(extending, spec.AckWait/2)
	go func() {
		defer close(work)
		fetch(fctx, cons, held, work, a.log, &c.fetchErr)
	}()
	go func() {
		select {
		case <-ctx.Done():
			c.Drain()
		case <-c.closed:
		}
	}()
	go func() {
		handlers.Wait()
		stopExtending()
		cancel()
		close(c.closed)
	}()
	return c, nil
}

// fetch pulls messages while there is room, until ctx ends.
func fetch(ctx context.Context, cons jetstream.Consumer, held *holding, work chan<- jetstream.Msg, log *slog.Logger, last *atomic.Pointer[error]) {
	failures := 0
	for {
		free := held.wait(ctx)
		if free == 0 {
			return // ctx ended
		}
		pctx, cancel := context.WithTimeout(ctx, fetchWait)
		batch, err := cons.Fetch(free, jetstream.FetchContext(pctx))
		if err == nil {
			for msg := range batch.Messages() {
				held.add(msg)
				work <- msg // room for every held message: never blocks
			}
			err = batch.Error()
		}
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
			failures = 0
			last.Store(nil)
			continue
		}
		last.Store(&err)
		failures++
		delay := backoff(failures, 100*time.Millisecond, 5*time.Second)
		if failures > 1 {
			log.Warn("fetch events", "err", err, "failures", failures, "retry_in", delay)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// holding is the set of messages a consumer fetched and has not answered.
type holding struct {
	mu    sync.Mutex
	msgs  map[jetstream.Msg]struct{}
	limit int
	room  chan struct{} // signalled when a message is released
}

func newHolding(limit int) *holding {
	return &holding{msgs: map[jetstream.Msg]struct{}{}, limit: limit, room: make(chan struct{}, 1)}
}

func (h *holding) add(m jetstream.Msg) {
	h.mu.Lock()
	h.msgs[m] = struct{}{}
	h.mu.Unlock()
}

func (h *holding) release(m jetstream.Msg) {
	h.mu.Lock()
	delete(h.msgs, m)
	h.mu.Unlock()
	select {
	case h.room <- struct{}{}:
	default:
	}
}

// wait returns how many more messages fit, waiting for room; 0 when ctx
// ended.
func (h *holding) wait(ctx context.Context) int {
	for {
		h.mu.Lock()
		free := h.limit - len(h.msgs)
		h.mu.Unlock()
		if free > 0 {
			return free
		}
		select {
		case <-ctx.Done():
			return 0
		case <-h.room:
		}
	}
}

// extend tells JetStream every every held message is in progress, so that
// none is redelivered while it waits here, until ctx ends.
func (h *holding) extend(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.mu.Lock()
		msgs := make([]jetstream.Msg, 0, len(h.msgs))
		for m := range h.msgs {
			msgs = append(msgs, m)
		}
		h.mu.Unlock()
		for _, m := range msgs {
			_ = m.InProgress()
		}
	}
}

// Stop stops consuming at once and cancels handlers in flight; their
// deliveries are redelivered later.
func (c *Consumer) Stop() {
	c.stopFetch()
	c.cancel()
}

// Drain stops fetching and lets handlers in flight (and the messages
// already fetched) finish.
func (c *Consumer) Drain() { c.stopFetch() }

// Closed is closed once the consumer has stopped.
func (c *Consumer) Closed() <-chan struct{} { return c.closed }

// Bound reports nil while the consumer is bound: it runs, its last fetch
// worked and its durable consumer exists on the server; otherwise why not,
// naming the durable consumer. Readiness checks call it.
func (c *Consumer) Bound(ctx context.Context) error {
	select {
	case <-c.closed:
		return fmt.Errorf("consumer %s: stopped", c.spec.Durable)
	default:
	}
	if err := c.fetchErr.Load(); err != nil {
		return fmt.Errorf("consumer %s: fetch: %w", c.spec.Durable, *err)
	}
	if _, err := c.cons.Info(ctx); err != nil {
		return fmt.Errorf("consumer %s: %w", c.spec.Durable, err)
	}
	return nil
}

// Durable returns the durable consumer's name.
func (c *Consumer) Durable() string { return c.spec.Durable }

type adapter struct {
	bus         *Bus
	spec        ConsumerSpec
	decode      decoder
	deadLetters jetstream.KeyValue
	ctx         context.Context
	log         *slog.Logger
}

func (a *adapter) handle(msg jetstream.Msg) {
	start := time.Now()
	meta, err := msg.Metadata()
	if err != nil {
		a.log.Error("event without JetStream metadata, terminated", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	ctx := extract(a.ctx, a.bus.propagator, msg.Headers())
	typ := typeOf(msg.Subject())
	ctx, span := a.bus.tracer.Start(ctx, processNames.name(typ), consumer)
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("messaging.consumer.group.name", a.spec.Durable),
			attribute.String("messaging.message.id", msg.Headers().Get(jetstream.MsgIDHeader)),
			attribute.Int64("messaging.nats.delivered", int64(meta.NumDelivered)),
		)
	}
	if meta.NumDelivered > 1 {
		a.bus.metrics.redelivered(a.spec.Durable)
	}

	env, call, err := a.decode(message{subject: msg.Subject(), header: msg.Headers(), data: msg.Data(), stored: meta.Timestamp.UTC()})
	if env.Type == "" {
		env.Type = Type(typ)
	}
	if env.ID == "" {
		env.ID = msg.Headers().Get(jetstream.MsgIDHeader)
	}
	if err == nil {
		err = a.run(WithEnvelope(ctx, env), call)
	}

	result := "ack"
	log := a.log // with the event's fields only when there is something to say
	if err != nil {
		log = a.log.With("type", env.Type, "subject", msg.Subject(), "event", env.ID, "delivery", meta.NumDelivered)
	}
	switch {
	case err == nil:
		_ = msg.Ack()
	case a.ctx.Err() != nil:
		// Stopped: the delivery is redelivered (to another replica) after
		// its ack wait.
		result = "retry"
		log.Info("handler stopped with the consumer; the event will be delivered again", "err", err)
		_ = msg.NakWithDelay(250 * time.Millisecond)
	case IsPermanent(err) || int(meta.NumDelivered) >= a.spec.MaxDeliver:
		if dlErr := a.deadLetter(ctx, msg, meta, env, err); dlErr != nil {
			// Not dropped: delivered again until a dead letter can be
			// written (the server's MaxDeliver is unlimited).
			result = "retry"
			delay := backoff(int(meta.NumDelivered), 250*time.Millisecond, 30*time.Second)
			log.Error("dead letter not written; the event will be delivered again", "err", err, "deadletter_err", dlErr, "retry_in", delay)
			_ = msg.NakWithDelay(delay)
			break
		}
		result = "deadletter"
		log.Error("event moved to the dead letters", "err", err, "permanent", IsPermanent(err), "deadletter", a.spec.Durable+"."+strconv.FormatUint(meta.Sequence.Stream, 10))
		_ = msg.TermWithReason(truncate(err.Error(), 200))
	default:
		result = "retry"
		delay := backoff(int(meta.NumDelivered), 250*time.Millisecond, 30*time.Second)
		log.Warn("handler failed; the event will be delivered again", "err", err, "retry_in", delay, "max_deliver", a.spec.MaxDeliver)
		_ = msg.NakWithDelay(delay)
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, result)
	}
	a.bus.metrics.handled(a.spec.Durable, env.Type, result, time.Since(start))
}

// run calls the handler, turning a panic into a permanent error. (The
// consumer extends the ack deadline of every message it holds, this one
// included.)
func (a *adapter) run(ctx context.Context, call func(context.Context) error) (err error) {
	defer func() {
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
