// Package audit is Caravan's audit log: an append-only JetStream stream
// holding one record per change a person or token made through the API and
// per decision a service made on its own (auto-promotion, rollback, a
// promotion waiting for its window). The stream denies deletes and purges
// and the API has no route that writes to it, so a record, once appended,
// stays until its age passes the retention.
package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/caravan-cd/caravan/pkg/state"
)

// Stream is the audit stream; SubjectRoot.<project> its subjects.
const (
	Stream      = "CARAVAN_AUDIT"
	SubjectRoot = "caravan.audit"
	// Cluster is the project token of records about no project
	// (cluster-scoped kinds, dead letters).
	Cluster = "_cluster"
)

// Actions recorded. API records use the route's action; automatic
// decisions these.
const (
	ActionAutoPromotion = "auto-promotion"
	ActionRollback      = "rollback"
	ActionWindowWait    = "window-wait"
)

// Record is one entry of the audit log.
type Record struct {
	// Seq is the record's sequence in the stream (set when read).
	Seq  uint64    `json:"seq,omitempty"`
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Actor is who made the change ("system:<service>" for decisions).
	Actor   string `json:"actor"`
	Project string `json:"project,omitempty"`
	// Action is what was done: apply, delete, promote, approve, abort,
	// override, token-create, token-revoke, …, auto-promotion, rollback,
	// window-wait.
	Action string `json:"action"`
	// Object is what it was done to ("Stage/prod", "Promotion/…").
	Object string `json:"object,omitempty"`
	// Method, Route and Status describe an API call.
	Method string `json:"method,omitempty"`
	Route  string `json:"route,omitempty"`
	Status int    `json:"status,omitempty"`
	// Automatic marks decisions no person made.
	Automatic bool   `json:"automatic,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Hashes says what Before and After hash: HashesObject (the changed
	// object's canonical JSON, see CanonicalHash) or HashesCall (the
	// request body and the answer, for calls that change nothing stored
	// themselves).
	Hashes string `json:"hashes,omitempty"`
	// Before and After are hex SHA-256 hashes before and after the change
	// ("" where the object did not exist, or no longer does). A record of
	// several objects leaves them empty and holds each in Objects.
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
	// Objects holds the hashes of each object an apply or delete touched
	// in the record's project.
	Objects []ObjectHashes `json:"objects,omitempty"`
}

// What a record's Before and After hash.
const (
	HashesObject = "object"
	HashesCall   = "call"
)

// ObjectHashes are one object's hashes before and after a change.
type ObjectHashes struct {
	Object string `json:"object"`
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
}

// CanonicalHash returns the hex SHA-256 of v's canonical JSON: v encoded
// as JSON, then re-encoded compact with object keys sorted, numbers as
// written and no HTML escaping (what `jq -cjS .` prints), so a reader can
// check a hash against the object the API returns.
func CanonicalHash(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode object: %w", err)
	}
	c, err := Canonical(b)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c)
	return hex.EncodeToString(sum[:]), nil
}

// Canonical re-encodes JSON compact, with object keys sorted, numbers as
// written and no HTML escaping.
func Canonical(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode object: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode object: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Hash returns the hex SHA-256 of b ("" for no bytes).
func Hash(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Log appends to and reads the audit stream.
type Log struct {
	js jetstream.JetStream
}

// Setup declares the audit stream, keeping records for maxAge (0: for
// ever), and returns its Log. Existing streams get maxAge and replicas
// updated. caravan setup (and the all-in-one caravan server) run it; the
// services only Check the stream.
func Setup(ctx context.Context, js jetstream.JetStream, maxAge time.Duration, replicas int) (*Log, error) {
	cfg := jetstream.StreamConfig{
		Name:        Stream,
		Description: "Caravan audit log (append-only)",
		Subjects:    []string{SubjectRoot + ".>"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      maxAge,
		Duplicates:  2 * time.Minute,
		Replicas:    max(replicas, 1),
		Storage:     jetstream.FileStorage,
		DenyDelete:  true,
		DenyPurge:   true,
	}
	if s, err := js.Stream(ctx, Stream); err == nil {
		cur := s.CachedInfo().Config
		if cur.MaxAge == cfg.MaxAge && cur.Replicas == cfg.Replicas {
			return New(js), nil
		}
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return nil, fmt.Errorf("declare stream %s: %w", Stream, err)
	}
	return New(js), nil
}

// New returns the Log of the audit stream Setup declared; it does not
// look the stream up (the services check the layout at start).
func New(js jetstream.JetStream) *Log { return &Log{js: js} }

// DefaultMaxAge is how long records are kept by default (90 days).
const DefaultMaxAge = 90 * 24 * time.Hour

func subject(project string) string {
	if project == "" {
		project = Cluster
	}
	return SubjectRoot + "." + state.Token(project)
}

// Append adds a record; r.ID (set when empty) makes a repeat within two
// minutes a no-op, so a retried decision is recorded once.
func (l *Log) Append(ctx context.Context, r Record) error {
	if r.ID == "" {
		r.ID = newID()
	}
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	r.Seq = 0
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(subject(r.Project))
	msg.Data = b
	msg.Header.Set(jetstream.MsgIDHeader, r.ID)
	if _, err := l.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("append audit record: %w", err)
	}
	return nil
}

// Filter selects records; zero fields select all.
type Filter struct {
	Actor  string
	Action string
	// Object matches records whose object is it or starts with it
	// ("Stage/" for every Stage).
	Object string
	Since  time.Time
	Until  time.Time
	// Before pages: only records with a lower sequence.
	Before uint64
	// Limit bounds the answer (default 100).
	Limit int
}

func (f Filter) match(r Record) bool {
	return (f.Actor == "" || r.Actor == f.Actor) &&
		(f.Action == "" || r.Action == f.Action) &&
		(f.Object == "" || strings.HasPrefix(r.Object, f.Object)) &&
		(f.Until.IsZero() || !r.Time.After(f.Until)) &&
		(f.Before == 0 || r.Seq < f.Before)
}

// List returns the project's records that f selects, newest first.
func (l *Log) List(ctx context.Context, project string, f Filter) ([]Record, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject(project)}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !f.Since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &f.Since
	}
	cons, err := l.js.OrderedConsumer(ctx, Stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	pending := info.NumPending
	var out []Record
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 500)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r Record
			if json.Unmarshal(m.Data(), &r) != nil {
				continue
			}
			if md, err := m.Metadata(); err == nil {
				r.Seq = md.Sequence.Stream
				pending = md.NumPending
			}
			if f.match(r) {
				out = append(out, r)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		if n == 0 {
			break
		}
	}
	// Newest first, at most Limit.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

func newID() string {
	return ulid.MustNew(ulid.Timestamp(time.Now()), rand.Reader).String()
}
