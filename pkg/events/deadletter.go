package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter records an event a consumer gave up on. Its ID is
// "<durable>.<stream sequence>".
type DeadLetter struct {
	ID         string              `json:"id"`
	Consumer   string              `json:"consumer"`
	Subject    string              `json:"subject"`
	Type       Type                `json:"type"`
	EventID    string              `json:"eventID"`
	Project    string              `json:"project,omitempty"`
	Error      string              `json:"error"`
	Deliveries uint64              `json:"deliveries"`
	Sequence   uint64              `json:"sequence"`
	Time       time.Time           `json:"time"`
	Data       json.RawMessage     `json:"data,omitempty"`
	Headers    map[string][]string `json:"headers,omitempty"`
	Replays    int                 `json:"replays,omitempty"`
}

// deadLetter writes the record of an event the consumer gives up on.
func (a *adapter) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, env Envelope, cause error) error {
	d := DeadLetter{
		ID:         a.spec.Durable + "." + strconv.FormatUint(meta.Sequence.Stream, 10),
		Consumer:   a.spec.Durable,
		Subject:    msg.Subject(),
		Type:       env.Type,
		EventID:    env.ID,
		Project:    env.Project,
		Error:      truncate(cause.Error(), 4096),
		Deliveries: meta.NumDelivered,
		Sequence:   meta.Sequence.Stream,
		Time:       time.Now().UTC(),
		Headers:    msg.Headers(),
	}
	if json.Valid(msg.Data()) {
		d.Data = msg.Data()
	}
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode dead letter %s: %w", d.ID, err)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if _, err := a.deadLetters.Put(wctx, d.ID, b); err != nil {
		return fmt.Errorf("write dead letter %s: %w", d.ID, err)
	}
	a.bus.metrics.deadLettered(a.spec.Durable)
	return nil
}

// DeadLetters reads and replays dead-letter records.
type DeadLetters struct {
	bus *Bus
	kv  jetstream.KeyValue
}

// NewDeadLetters binds the dead-letter bucket.
func NewDeadLetters(ctx context.Context, b *Bus) (*DeadLetters, error) {
	kv, err := b.js.KeyValue(ctx, BucketDeadLetters)
	if err != nil {
		return nil, fmt.Errorf("bind dead-letter bucket: %w", err)
	}
	return &DeadLetters{bus: b, kv: kv}, nil
}

// List returns up to limit dead letters whose IDs sort after the cursor
// `after`, in ID order, and the cursor of the next page ("" at the end).
func (d *DeadLetters) List(ctx context.Context, limit int, after string) ([]DeadLetter, string, error) {
	lister, err := d.kv.ListKeys(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("list dead letters: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		if k > after {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []DeadLetter
	next := ""
	for _, k := range keys {
		if limit > 0 && len(out) == limit {
			next = out[len(out)-1].ID
			break
		}
		dl, err := d.Get(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		out = append(out, dl)
	}
	return out, next, nil
}

// Get returns one dead letter.
func (d *DeadLetters) Get(ctx context.Context, id string) (DeadLetter, error) {
	e, err := d.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return DeadLetter{}, fmt.Errorf("dead letter %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("get dead letter %q: %w", id, err)
	}
	var dl DeadLetter
	if err := json.Unmarshal(e.Value(), &dl); err != nil {
		return DeadLetter{}, fmt.Errorf("decode dead letter %q: %w", id, err)
	}
	return dl, nil
}

// Replay publishes the dead letter's event again, with a new message ID so
// the stream does not drop it (the event keeps its ID in Caravan-Id), and
// removes the record. Every consumer whose
// filter matches sees it again; handlers are idempotent.
func (d *DeadLetters) Replay(ctx context.Context, id string) error {
	dl, err := d.Get(ctx, id)
	if err != nil {
		return err
	}
	if len(dl.Data) == 0 {
		return fmt.Errorf("dead letter %q holds no event to replay", id)
	}
	msg := &nats.Msg{Subject: dl.Subject, Data: dl.Data, Header: nats.Header{}}
	for k, v := range dl.Headers {
		if !strings.HasPrefix(k, "Nats-") {
			msg.Header[k] = v
		}
	}
	if _, ok := msg.Header[HeaderID]; !ok && dl.EventID != "" {
		msg.Header[HeaderID] = []string{dl.EventID} // the event keeps its ID
	}
	msgID := fmt.Sprintf("%s-replay-%s-%d", dl.EventID, dl.ID, dl.Replays+1)
	pctx, cancel := context.WithTimeout(ctx, d.bus.timeout)
	defer cancel()
	if _, err := d.bus.js.PublishMsg(pctx, msg, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("replay dead letter %q: %w", id, err)
	}
	if err := d.kv.Delete(ctx, id); err != nil {
		return fmt.Errorf("remove replayed dead letter %q: %w", id, err)
	}
	return nil
}
