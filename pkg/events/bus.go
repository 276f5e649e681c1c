package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

const instrumentation = "github.com/caravan-cd/caravan/pkg/events"

// Bus publishes and consumes Caravan events on JetStream. It is safe for
// concurrent use. Create the stream first with Setup.
type Bus struct {
	js         jetstream.JetStream
	source     string
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	metrics    *Metrics
	timeout    time.Duration
	attempts   int
	log        *slog.Logger
}

// Option configures a Bus.
type Option func(*Bus)

// WithTracerProvider sets the tracer provider (default: otel's global).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(b *Bus) { b.tracer = tp.Tracer(instrumentation) }
}

// WithPropagator sets the propagator (default: otel's global).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(b *Bus) { b.propagator = p }
}

// WithLogger sets where consumers report handler errors, retries and dead
// letters (default: nowhere). The package itself never logs elsewhere.
func WithLogger(l *slog.Logger) Option { return func(b *Bus) { b.log = l } }

// WithMetrics records publish and handle metrics.
func WithMetrics(m *Metrics) Option { return func(b *Bus) { b.metrics = m } }

// WithPublishTimeout bounds each publish attempt (default 2s) and sets how
// many attempts a publish makes (default 5), each with the same message ID.
func WithPublishTimeout(perAttempt time.Duration, attempts int) Option {
	return func(b *Bus) { b.timeout, b.attempts = perAttempt, attempts }
}

// NewBus returns a Bus publishing as source (the service name).
func NewBus(js jetstream.JetStream, source string, opts ...Option) *Bus {
	b := &Bus{
		js:         js,
		source:     source,
		tracer:     otel.GetTracerProvider().Tracer(instrumentation),
		propagator: otel.GetTextMapPropagator(),
		timeout:    2 * time.Second,
		attempts:   5,
		log:        slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(b)
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b
}

// With returns a copy of the bus with opts applied: a service hands its
// logger to the bus it was given (bus.With(events.WithLogger(log))).
func (b *Bus) With(opts ...Option) *Bus {
	c := *b
	for _, o := range opts {
		o(&c)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return &c
}

// JetStream returns the JetStream handle the bus uses.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Source returns the service name the bus publishes as.
func (b *Bus) Source() string { return b.source }

// Publish seals ev in a new envelope about (project, subject) and publishes
// it. See PublishEnvelope.
func (b *Bus) Publish(ctx context.Context, project string, subject Ref, ev Event) (Envelope, error) {
	env, err := Seal("", b.source, project, subject, ev)
	if err != nil {
		return Envelope{}, err
	}
	return env, b.PublishEnvelope(ctx, env)
}

// PublishWithID is Publish with a caller-chosen event ID: a second publish of
// the same ID within the stream's duplicate window is dropped by JetStream.
func (b *Bus) PublishWithID(ctx context.Context, id, project string, subject Ref, ev Event) (Envelope, error) {
	env, err := Seal(id, b.source, project, subject, ev)
	if err != nil {
		return Envelope{}, err
	}
	return env, b.PublishEnvelope(ctx, env)
}

// PublishEnvelope publishes env with Nats-Msg-Id set to its ID, so
// JetStream drops duplicates. Each attempt has its own timeout; a failed
// attempt is retried with the same ID (a stream leader may be failing over)
// until the attempts are spent or ctx ends; while the stream answers with
// no responders (no leader), until attempts × timeout have passed.
func (b *Bus) PublishEnvelope(ctx context.Context, env Envelope) error {
	subject := Subject(env.Project, env.Type, env.Subject)
	ctx, span := b.tracer.Start(ctx, publishNames.name(string(env.Type)), producer)
	defer span.End()
	if span.IsRecording() { // no attributes built for a span nobody keeps
		span.SetAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", subject),
			attribute.String("messaging.message.id", env.ID),
			attribute.String("caravan.project", env.Project),
		)
	}

	// The payload is the message's data; the envelope's other fields are
	// its subject and headers (wire.go). Nats-Msg-Id is a header set here
	// rather than with jetstream.WithMsgID: a publish without options
	// skips their allocations.
	data := []byte(env.Payload)
	if len(data) == 0 {
		data = []byte("null")
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: newHeaders(ctx, b.propagator, &env)}

	start := time.Now()
	// A stream with no leader (one SIGKILLed, the next not yet elected:
	// seconds on a cluster) answers at once with no responders: such
	// failures do not spend the attempts until the time the attempts
	// would take at their timeout has passed.
	budget := start.Add(time.Duration(b.attempts) * b.timeout)
	var lastErr error
	tries := 0
	for attempt := 0; attempt < b.attempts; attempt++ {
		if tries > 0 {
			select {
			case <-ctx.Done():
				lastErr = errors.Join(lastErr, ctx.Err())
				attempt = b.attempts
				continue
			case <-time.After(backoff(tries, 50*time.Millisecond, time.Second)):
			}
		}
		tries++
		actx, cancel := context.WithTimeout(ctx, b.timeout)
		_, err := b.js.PublishMsg(actx, msg) // Nats-Msg-Id is in msg.Header
		cancel()
		if err == nil {
			b.metrics.published(env.Type, time.Since(start), nil)
			return nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) && time.Now().Before(budget) {
			attempt-- // no leader yet: wait for one within the budget
		}
		b.log.Warn("publish attempt failed; trying again with the same ID", "type", env.Type, "event", env.ID, "subject", subject, "attempt", attempt+1, "attempts", b.attempts, "err", err)
	}
	err := fmt.Errorf("publish %s %s on %s: %w", env.Type, env.ID, subject, lastErr)
	span.RecordError(err)
	span.SetStatus(codes.Error, "publish failed")
	b.metrics.published(env.Type, time.Since(start), err)
	return err
}

// spanNamer builds the span names of one verb ("publish <type>"), each
// once: a hop builds none. Types are a fixed set, but a subject from the
// wire may carry any: past maxSpanNames names they are built every time
// rather than kept.
type spanNamer struct {
	verb  string
	mu    sync.Mutex
	names atomic.Pointer[map[string]string] // copied on write
}

const maxSpanNames = 256

var (
	publishNames = &spanNamer{verb: "publish "}
	processNames = &spanNamer{verb: "process "}
)

func (n *spanNamer) name(typ string) string {
	if m := n.names.Load(); m != nil {
		if s, ok := (*m)[typ]; ok {
			return s
		}
	}
	s := n.verb + typ
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.names.Load()
	if old != nil && len(*old) >= maxSpanNames {
		return s
	}
	m := make(map[string]string, 1)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[typ] = s
	n.names.Store(&m)
	return s
}

var (
	producer = trace.WithSpanKind(trace.SpanKindProducer)
	consumer = trace.WithSpanKind(trace.SpanKindConsumer)
)

// backoff returns an exponential delay for the given attempt (1-based),
// capped at max.
func backoff(attempt int, base, maxDelay time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}
