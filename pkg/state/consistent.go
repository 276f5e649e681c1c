package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// leaderKV is a replicated bucket whose Get asks the stream leader.
//
// JetStream serves a KV Get by "direct get", which any replica answers,
// followers included; a follower may lag the leader by a few writes. A
// decision taken on such a read (is this promotion queued? does this
// verification exist?) may act on state that is already gone. A leader
// read goes through the stream's MSG.GET API, which only the leader
// answers, after the leader has applied every write it acknowledged, so a
// Get returns every write acknowledged before it began (read your writes,
// and everyone else's). On a bucket with one replica the only server is
// the leader, and direct gets are kept.
type leaderKV struct {
	jetstream.KeyValue
	nc      *nats.Conn
	subject string // $JS.API.STREAM.MSG.GET.KV_<bucket>
	prefix  string // $KV.<bucket>.
	timeout time.Duration
}

var _ jetstream.KeyValue = (*leaderKV)(nil)

// consistent wraps kv with leader reads when its stream has more than one
// replica.
func consistent(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) (jetstream.KeyValue, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s status: %w", kv.Bucket(), err)
	}
	if st.Config().Replicas <= 1 {
		return kv, nil
	}
	o := js.Options()
	api := o.APIPrefix
	if o.Domain != "" {
		api = "$JS." + o.Domain + ".API."
	}
	if api == "" {
		api = jetstream.DefaultAPIPrefix
	}
	timeout := o.DefaultTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &leaderKV{
		KeyValue: kv,
		nc:       js.Conn(),
		subject:  api + "STREAM.MSG.GET.KV_" + kv.Bucket(),
		prefix:   "$KV." + kv.Bucket() + ".",
		timeout:  timeout,
	}, nil
}

// Get reads key from the stream leader.
func (l *leaderKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	req, err := json.Marshal(struct {
		LastFor string `json:"last_by_subj"`
	}{l.prefix + key})
	if err != nil {
		return nil, err
	}
	msg, err := l.nc.RequestWithContext(ctx, l.subject, req)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, jetstream.ErrNoStreamResponse
		}
		return nil, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error,omitempty"`
		Message *struct {
			Subject  string    `json:"subject"`
			Sequence uint64    `json:"seq"`
			Header   []byte    `json:"hdrs,omitempty"`
			Data     []byte    `json:"data,omitempty"`
			Time     time.Time `json:"time"`
		} `json:"message,omitempty"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("leader get %s: %w", key, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrKeyNotFound
		}
		return nil, resp.Error
	}
	if resp.Message == nil {
		return nil, jetstream.ErrInvalidJSAck
	}
	e := &entry{bucket: l.Bucket(), key: key, value: resp.Message.Data, revision: resp.Message.Sequence, created: resp.Message.Time, op: jetstream.KeyValuePut}
	if len(resp.Message.Header) > 0 {
		hdr, err := nats.DecodeHeadersMsg(resp.Message.Header)
		if err != nil {
			return nil, fmt.Errorf("leader get %s: %w", key, err)
		}
		switch hdr.Get("KV-Operation") {
		case "DEL":
			e.op = jetstream.KeyValueDelete
		case "PURGE":
			e.op = jetstream.KeyValuePurge
		}
	}
	if e.op != jetstream.KeyValuePut {
		return e, jetstream.ErrKeyDeleted
	}
	return e, nil
}

// entry is a KeyValueEntry read from the leader.
type entry struct {
	bucket, key string
	value       []byte
	revision    uint64
	created     time.Time
	op          jetstream.KeyValueOp
}

func (e *entry) Bucket() string                  { return e.bucket }
func (e *entry) Key() string                     { return e.key }
func (e *entry) Value() []byte                   { return e.value }
func (e *entry) Revision() uint64                { return e.revision }
func (e *entry) Created() time.Time              { return e.created }
func (e *entry) Delta() uint64                   { return 0 }
func (e *entry) Operation() jetstream.KeyValueOp { return e.op }
