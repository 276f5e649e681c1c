package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrDuplicate: another live process uses the replica ID.
var ErrDuplicate = errors.New("replica ID in use by another live process")

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ClaimPrefix is the core NATS subject prefix on which live replicas
// answer for their IDs: <prefix>.<service>.<replica id, escaped>.
const ClaimPrefix = "caravan.replicas"

// claim is what a replica says of itself.
type claim struct {
	Instance string `json:"instance"`
	Started  int64  `json:"started"` // unix nanoseconds
}

// earlier orders claims by start, then instance.
func (c claim) earlier(o claim) bool {
	if c.Started != o.Started {
		return c.Started < o.Started
	}
	return c.Instance < o.Instance
}

// Replica is a claimed replica ID: it answers other processes asking for
// it until Close.
type Replica struct {
	sub  *nats.Subscription
	once sync.Once
}

// Close gives the ID up.
func (r *Replica) Close() {
	r.once.Do(func() { _ = r.sub.Unsubscribe() })
}

// Claim makes replica id of service known on NATS and refuses it
// (ErrDuplicate) when another live process already uses it. Leases are
// held per replica ID, so two live processes with one ID would both hold
// every lease of that ID; a restarted process with its predecessor's ID (a
// pod name) is welcome: the predecessor no longer answers.
//
// Every claimed ID answers requests on ClaimPrefix.<service>.<id>. Claim
// asks there first; after subscribing it asks again and collects every
// answer for wait, so two processes starting together see each other and
// the later one (by the time it began to answer, then instance) steps
// back. Processes on different hosts compare wall clocks, which must
// agree to well within wait (as lease expiries need anyway).
func Claim(ctx context.Context, nc *nats.Conn, service, id string, wait time.Duration) (*Replica, error) {
	if wait <= 0 {
		wait = 250 * time.Millisecond
	}
	subject := ClaimPrefix + "." + token(service) + "." + token(id)
	me := claim{Instance: randomHex(8)}
	data, err := json.Marshal(me)
	if err != nil {
		return nil, err
	}
	duplicate := func(other claim) error {
		return fmt.Errorf("%s replica %q: %w (instance %s, started %s): give each replica its own ID",
			service, id, ErrDuplicate, other.Instance, time.Unix(0, other.Started).UTC().Format(time.RFC3339))
	}
	// Before answering for the ID: does anyone?
	rctx, cancel := context.WithTimeout(ctx, wait)
	msg, err := nc.RequestWithContext(rctx, subject, data)
	cancel()
	switch {
	case err == nil:
		var other claim
		if json.Unmarshal(msg.Data, &other) == nil {
			return nil, duplicate(other)
		}
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
	default:
		return nil, fmt.Errorf("claim replica ID %q: %w", id, err)
	}
	// Answer from now on. Until the claim's time is known it answers with
	// time 0, which makes a prober step back: safe, never two.
	var answer atomic.Pointer[[]byte]
	first := data
	answer.Store(&first)
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if m.Reply != "" {
			_ = m.Respond(*answer.Load())
		}
	})
	if err != nil {
		return nil, fmt.Errorf("claim replica ID %q: %w", id, err)
	}
	r := &Replica{sub: sub}
	// The claim's time is taken once the server has the subscription: a
	// process with a later time probes after this one answers, so it sees
	// it and steps back.
	if err := nc.FlushTimeout(10 * time.Second); err != nil {
		r.Close()
		return nil, fmt.Errorf("claim replica ID %q: %w", id, err)
	}
	me.Started = time.Now().UnixNano()
	timed, err := json.Marshal(me)
	if err != nil {
		r.Close()
		return nil, err
	}
	answer.Store(&timed)
	// A process that started at the same time: both see each other now.
	inbox := nc.NewRespInbox()
	answers, err := nc.SubscribeSync(inbox)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("claim replica ID %q: %w", id, err)
	}
	defer func() { _ = answers.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, timed); err != nil {
		r.Close()
		return nil, fmt.Errorf("claim replica ID %q: %w", id, err)
	}
	deadline := time.Now().Add(wait)
	for {
		m, err := answers.NextMsg(time.Until(deadline))
		if err != nil {
			break // the wait is over
		}
		var other claim
		// An answer without a time comes from a process that has not
		// timed its claim yet: it will, later than this one, and then see
		// this one's timed answer and step back. Stepping back for it
		// here would let processes starting together refuse each other.
		if json.Unmarshal(m.Data, &other) != nil || other.Instance == me.Instance || other.Started == 0 {
			continue
		}
		if other.earlier(me) {
			r.Close()
			return nil, duplicate(other)
		}
	}
	return r, nil
}

// token makes s one NATS subject token.
func token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, s)
}
