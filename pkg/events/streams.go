package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/state"
)

// Stream and bucket names.
const (
	// StreamEvents holds every event (subjects SubjectRoot.>).
	StreamEvents = "CARAVAN_EVENTS"
	// BucketDeadLetters is the KV bucket of events no handler could take.
	BucketDeadLetters = "caravan-deadletters"
)

// StreamConfig sizes the event stream. It is embedded in every service's
// configuration, so the variables are shared by all of them.
type StreamConfig struct {
	// Replicas of every stream and bucket: 1 on one node, 3 on a cluster.
	Replicas int `envconfig:"JS_REPLICAS" default:"1" desc:"replicas of JetStream streams and KV buckets (1 on one node, 3 on a cluster)"`
	// MaxAge is how long events are kept.
	MaxAge time.Duration `envconfig:"EVENTS_MAX_AGE" default:"168h" desc:"how long the event stream keeps events"`
	// MaxBytes bounds the event stream's size; the oldest events go first.
	MaxBytes int64 `envconfig:"EVENTS_MAX_BYTES" default:"1073741824" desc:"size limit of the event stream in bytes; oldest events are dropped first"`
	// DuplicateWindow is how long a published event ID is remembered.
	DuplicateWindow time.Duration `envconfig:"EVENTS_DUPLICATE_WINDOW" default:"2m" desc:"how long JetStream remembers event IDs to drop duplicates"`
	// DeadLetterMaxAge is how long dead letters are kept.
	DeadLetterMaxAge time.Duration `envconfig:"DEADLETTER_MAX_AGE" default:"720h" desc:"how long dead-letter records are kept"`
}

// DefaultStreamConfig is the configuration envconfig's defaults give.
func DefaultStreamConfig() StreamConfig {
	return StreamConfig{Replicas: 1, MaxAge: 7 * 24 * time.Hour, MaxBytes: 1 << 30, DuplicateWindow: 2 * time.Minute, DeadLetterMaxAge: 30 * 24 * time.Hour}
}

// Validate reports a configuration JetStream would refuse.
func (c StreamConfig) Validate() error {
	var errs []error
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("CARAVAN_JS_REPLICAS: %d is not between 1 and 5", c.Replicas))
	}
	if c.MaxAge <= 0 {
		errs = append(errs, errors.New("CARAVAN_EVENTS_MAX_AGE: must be positive"))
	}
	if c.MaxBytes <= 0 {
		errs = append(errs, errors.New("CARAVAN_EVENTS_MAX_BYTES: must be positive"))
	}
	if c.DuplicateWindow <= 0 || c.DuplicateWindow > c.MaxAge {
		errs = append(errs, errors.New("CARAVAN_EVENTS_DUPLICATE_WINDOW: must be positive and below CARAVAN_EVENTS_MAX_AGE"))
	}
	return errors.Join(errs...)
}

// Setup declares the event stream and the dead-letter bucket, creating or
// updating them. It is idempotent; every service calls it at start.
func Setup(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) error {
	want := jetstream.StreamConfig{
		Name:        StreamEvents,
		Description: "Caravan events",
		Subjects:    []string{SubjectRoot + ".>"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
		Discard:     jetstream.DiscardOld,
		Duplicates:  cfg.DuplicateWindow,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	}
	// An unchanged stream is left alone: every replica of every service
	// calls Setup at start, and an update that changes nothing would still
	// reconfigure the stream under its consumers.
	unchanged := false
	if s, err := js.Stream(ctx, StreamEvents); err == nil {
		have := s.CachedInfo().Config
		unchanged = have.MaxAge == want.MaxAge && have.MaxBytes == want.MaxBytes && have.Duplicates == want.Duplicates &&
			have.Replicas == want.Replicas && have.Discard == want.Discard && have.Retention == want.Retention &&
			have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects)
	}
	if !unchanged {
		if _, err := js.CreateOrUpdateStream(ctx, want); err != nil {
			return fmt.Errorf("declare stream %s: %w", StreamEvents, err)
		}
	}
	if err := state.DeclareBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      BucketDeadLetters,
		Description: "events that could not be handled",
		TTL:         cfg.DeadLetterMaxAge,
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	}); err != nil {
		return err
	}
	return nil
}

// ConsumerSpec declares one durable pull consumer. Every replica of a
// service binds the same durable, so each event is handled once per
// consumer, by one replica. The durable name is part of the API: renaming
// it replays the stream from the start policy.
type ConsumerSpec struct {
	Durable     string
	Description string
	// Filters are subject filters (see Filter).
	Filters []string
	// MaxDeliver bounds deliveries; the last failed one is dead-lettered.
	// (The server delivers without limit: an event whose dead letter
	// cannot be written is delivered again, never dropped.)
	MaxDeliver int
	// AckWait is how long a delivery may be handled before redelivery.
	AckWait time.Duration
	// MaxAckPending bounds the deliveries in flight across all replicas.
	MaxAckPending int
	// Concurrency is how many handlers run at once in one process.
	Concurrency int
	// Prefetch is how many messages one process holds at most (fetched,
	// waiting for a handler or handled); the consumer extends the ack
	// deadline of every one. Default: 100, at least Concurrency, at most
	// MaxAckPending.
	Prefetch int
	// DeliverAll starts a new durable at the beginning of the stream
	// instead of at new events.
	DeliverAll bool
}

func (s ConsumerSpec) withDefaults() ConsumerSpec {
	if s.MaxDeliver == 0 {
		s.MaxDeliver = 10
	}
	if s.AckWait == 0 {
		s.AckWait = 30 * time.Second
	}
	if s.MaxAckPending == 0 {
		s.MaxAckPending = 1000
	}
	if s.Concurrency == 0 {
		s.Concurrency = 1
	}
	if s.Prefetch == 0 {
		s.Prefetch = 100
	}
	s.Prefetch = max(s.Concurrency, min(s.Prefetch, s.MaxAckPending))
	return s
}

func (s ConsumerSpec) config() jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		Durable:        s.Durable,
		Description:    s.Description,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.AckWait,
		MaxDeliver:     -1, // the adapter gives up after s.MaxDeliver (see handle)
		MaxAckPending:  s.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		FilterSubjects: s.Filters,
	}
	if s.DeliverAll {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	return cfg
}
