package events

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
)

// Ref names the resource an event is about.
type Ref struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// Envelope is the versioned wrapper every event travels in. Its ID is the
// JetStream Nats-Msg-Id, so a republished envelope is dropped as a duplicate.
type Envelope struct {
	ID      string          `json:"id"`
	Type    Type            `json:"type"`
	Version int             `json:"version"`
	Time    time.Time       `json:"time"`
	Source  string          `json:"source"`
	Project string          `json:"project,omitempty"`
	Subject Ref             `json:"subject"`
	Payload json.RawMessage `json:"payload"`
}

// MarshalJSON writes the envelope with its payload as it is: the payload
// was produced by json.Marshal, so it is not scanned again. The bytes are
// those encoding/json would write.
func (e Envelope) MarshalJSON() ([]byte, error) {
	payload := e.Payload
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	out := make([]byte, 0, 160+len(e.ID)+len(e.Source)+len(e.Project)+len(e.Subject.Kind)+len(e.Subject.Name)+len(payload))
	out, err := appendHead(out, envelopeHead{e.ID, e.Type, e.Version, e.Time, e.Source, e.Project, e.Subject})
	if err != nil {
		return nil, err
	}
	out = append(out, `,"payload":`...)
	out = append(out, payload...)
	return append(out, '}'), nil
}

// UnmarshalJSON reads an envelope as encoding/json would, directly when
// its fields have the usual shape.
func (e *Envelope) UnmarshalJSON(data []byte) error {
	h := envelopeHead{e.ID, e.Type, e.Version, e.Time, e.Source, e.Project, e.Subject}
	if payload, ok := scanEnvelope(data, &h); ok && (payload == nil || json.Valid(payload)) {
		e.ID, e.Type, e.Version, e.Time, e.Source, e.Project, e.Subject = h.ID, h.Type, h.Version, h.Time, h.Source, h.Project, h.Subject
		if payload != nil {
			e.Payload = append(e.Payload[:0], payload...)
		}
		return nil
	}
	type plain Envelope // without this method
	return json.Unmarshal(data, (*plain)(e))
}

type envelopeHead struct {
	ID      string    `json:"id"`
	Type    Type      `json:"type"`
	Version int       `json:"version"`
	Time    time.Time `json:"time"`
	Source  string    `json:"source"`
	Project string    `json:"project,omitempty"`
	Subject Ref       `json:"subject"`
}

// Event is implemented by every typed event payload.
type Event interface {
	// EventType names the event; it is the envelope's type and part of its
	// NATS subject. It must not depend on the receiver's value.
	EventType() Type
}

// Type is an event type name such as "FreightDiscovered".
type Type string

// NewID returns a new, time-ordered event ID (a ULID).
func NewID() string {
	return ulid.MustNew(ulid.Timestamp(time.Now()), rand.Reader).String()
}

// Seal wraps ev in an envelope. id may be empty, in which case a new ULID is
// used; pass a deterministic id when the same logical event may be produced
// twice (for example by two replicas) so that JetStream drops the second.
func Seal(id, source, project string, subject Ref, ev Event) (Envelope, error) {
	payload, err := json.Marshal(ev)
	if err != nil {
		return Envelope{}, fmt.Errorf("encode %s payload: %w", ev.EventType(), err)
	}
	if id == "" {
		id = NewID()
	}
	return Envelope{
		ID:      id,
		Type:    ev.EventType(),
		Version: versionOf(ev.EventType()),
		Time:    time.Now().UTC(),
		Source:  source,
		Project: project,
		Subject: subject,
		Payload: payload,
	}, nil
}

// Decode unmarshals the envelope's payload into ev, checking the type.
func (e Envelope) Decode(ev Event) error {
	if e.Type != ev.EventType() {
		return fmt.Errorf("envelope %s: type %s, want %s", e.ID, e.Type, ev.EventType())
	}
	if err := json.Unmarshal(e.Payload, ev); err != nil {
		return fmt.Errorf("decode %s payload of %s: %w", e.Type, e.ID, err)
	}
	return nil
}

type envelopeKey struct{}

// WithEnvelope returns ctx carrying env; handlers read it with FromContext.
func WithEnvelope(ctx context.Context, env Envelope) context.Context {
	return context.WithValue(ctx, envelopeKey{}, env)
}

// FromContext returns the envelope of the event being handled, if any.
func FromContext(ctx context.Context) (Envelope, bool) {
	env, ok := ctx.Value(envelopeKey{}).(Envelope)
	return env, ok
}
