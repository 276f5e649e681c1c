// Package notify sends a project's events to the receivers its
// ProjectConfig subscribes (spec.notifications): CloudEvents over HTTP,
// Slack-compatible incoming webhooks and HMAC-signed generic webhooks.
//
// It is level-triggered. A durable JetStream consumer (gateway-notifications)
// records one delivery per event and subscription in the
// caravan-notifications bucket before it acknowledges the event; a sender
// works every pending record whose time has come, on every replica, each
// record claimed by one replica at a time (compare-and-set with an expiry),
// and moves it to sent or, after the subscription's attempts, to dead. A
// restart loses no record and sends a notification again only when it
// stopped between the request and the record's update (at-least-once:
// receivers deduplicate by the CloudEvent id / X-Caravan-Delivery).
package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Delivery statuses; each is also the first token of the record's key.
const (
	StatusPending   = "pending"
	StatusDelivered = "sent"
	StatusDead      = "dead"
)

// Statuses lists the delivery statuses.
var Statuses = []string{StatusPending, StatusDelivered, StatusDead}

// Delivery is one notification of one event to one subscription.
type Delivery struct {
	// ID is "<subscription>.<event id>".
	ID           string                  `json:"id"`
	Project      string                  `json:"project"`
	Subscription string                  `json:"subscription"`
	Event        model.NotificationEvent `json:"event"`
	EventID      string                  `json:"eventID"`
	Subject      events.Ref              `json:"subject"`
	Status       string                  `json:"status"`
	Attempts     int                     `json:"attempts"`
	// NextAttempt is when a pending delivery is tried next.
	NextAttempt *time.Time `json:"nextAttempt,omitempty"`
	// LastError is why the last attempt failed (secrets redacted).
	LastError string `json:"lastError,omitempty"`
	// LastStatus is the receiver's HTTP status of the last attempt.
	LastStatus  int        `json:"lastStatus,omitempty"`
	CreatedAt   time.Time  `json:"createdAt"`
	UpdatedAt   time.Time  `json:"updatedAt"`
	DeliveredAt *time.Time `json:"deliveredAt,omitempty"`
	// Reason is why a rollback was made (Rollback only).
	Reason string `json:"reason,omitempty"`
	// Envelope is the event; the API leaves it out.
	Envelope *events.Envelope `json:"envelope,omitempty"`
	// ClaimedUntil and Claim hold the replica sending it right now.
	ClaimedUntil *time.Time `json:"claimedUntil,omitempty"`
	Claim        string     `json:"claim,omitempty"`
}

// Options configure a Notifier.
type Options struct {
	Store *state.Store
	Bus   *events.Bus
	// Egress is the policy every request passes (nil: the default).
	Egress *egress.Policy
	Logger *slog.Logger
	// Backoff is the delay before the second attempt, doubled after each
	// failure up to MaxBackoff (defaults 5s and 10m).
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one request (default 30s).
	Timeout time.Duration
	// Interval is how often pending deliveries are looked at besides the
	// wake-ups events give (default: Backoff, at most 5s).
	Interval time.Duration
	// Source is the CloudEvents source prefix (default "caravan").
	Source string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Notifier records and sends notifications.
type Notifier struct {
	o      Options
	kv     state.KV
	client *http.Client
	wake   chan struct{}
}

// New returns a Notifier; Start runs it.
func New(o Options) *Notifier {
	if o.Backoff <= 0 {
		o.Backoff = 5 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Interval <= 0 {
		o.Interval = min(o.Backoff, 5*time.Second)
	}
	if o.Source == "" {
		o.Source = "caravan"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := o.Egress.Client(false)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Notifier{o: o, kv: o.Store.KV(state.Notifications), client: c, wake: make(chan struct{}, 1)}
}

// Start binds the durable consumer and runs the sender until ctx ends. It
// returns the consumer (for readiness checks).
func (n *Notifier) Start(ctx context.Context) (*events.Consumer, error) {
	c, err := events.ConsumeEnvelopes(ctx, n.o.Bus, events.GatewayNotifications, n.handle)
	if err != nil {
		return nil, fmt.Errorf("notifications: %w", err)
	}
	go n.run(ctx)
	return c, nil
}

// handle records the deliveries an event gives rise to.
func (n *Notifier) handle(ctx context.Context, env events.Envelope) error {
	pc, _, err := state.GetAs[*model.ProjectConfig](ctx, n.o.Store, env.Project, model.KindProjectConfig, env.Project)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load project config %q: %w", env.Project, err)
	}
	if len(pc.Spec.Notifications) == 0 {
		return nil
	}
	ev, reason, ok, err := n.classify(ctx, env)
	if err != nil || !ok {
		return err
	}
	return n.record(ctx, pc, ev, env, reason)
}

// record creates a pending delivery of env for each subscription of pc
// that wants ev (none when one was sent or dead-lettered already).
func (n *Notifier) record(ctx context.Context, pc *model.ProjectConfig, ev model.NotificationEvent, env events.Envelope, reason string) error {
	created := false
	for _, sub := range pc.Spec.Notifications {
		if !sub.Wants(ev) {
			continue
		}
		now := n.o.Now().UTC()
		e := env
		d := Delivery{ID: sub.Name + "." + env.ID, Project: env.Project, Subscription: sub.Name, Event: ev, EventID: env.ID,
			Subject: env.Subject, Status: StatusPending, NextAttempt: &now, CreatedAt: now, UpdatedAt: now, Reason: reason, Envelope: &e}
		if n.exists(ctx, d) {
			continue
		}
		if _, err := state.Create(ctx, n.kv, key(StatusPending, d), d); err != nil && !errors.Is(err, state.ErrExists) {
			return fmt.Errorf("record notification %s: %w", d.ID, err)
		}
		created = true
	}
	if created {
		n.poke()
	}
	return nil
}

// exists says whether d was already sent or dead-lettered (a redelivered
// event then records nothing new).
func (n *Notifier) exists(ctx context.Context, d Delivery) bool {
	for _, st := range []string{StatusDelivered, StatusDead} {
		if _, err := n.kv.Get(ctx, key(st, d)); err == nil {
			return true
		}
	}
	return false
}

// classify maps an event to the notification it is, if any.
func (n *Notifier) classify(ctx context.Context, env events.Envelope) (model.NotificationEvent, string, bool, error) {
	switch env.Type {
	case events.TypePromotionSucceeded:
		return model.NotifyPromotionSucceeded, "", true, nil
	case events.TypePromotionFailed:
		return model.NotifyPromotionFailed, "", true, nil
	case events.TypeFreightDiscovered:
		return model.NotifyFreightDiscovered, "", true, nil
	case events.TypeStageVerified:
		var sv events.StageVerified
		if err := env.Decode(&sv); err != nil {
			return "", "", false, events.Permanent(err)
		}
		failed := sv.Phase == string(model.VerificationPhaseFailed) || sv.Phase == string(model.VerificationPhaseError)
		return model.NotifyVerificationFailed, "", failed, nil
	case events.TypePromotionRequested:
		var pr events.PromotionRequested
		if err := env.Decode(&pr); err != nil {
			return "", "", false, events.Permanent(err)
		}
		p, _, err := state.GetAs[*model.Promotion](ctx, n.o.Store, env.Project, model.KindPromotion, pr.Promotion)
		if errors.Is(err, state.ErrNotFound) {
			return "", "", false, nil
		}
		if err != nil {
			return "", "", false, fmt.Errorf("load promotion %q: %w", pr.Promotion, err)
		}
		reason, ok := p.Annotations[model.AnnotationRollback]
		return model.NotifyRollback, reason, ok, nil
	}
	return "", "", false, nil
}

func (n *Notifier) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// key is where d is kept in status: the event id is one token (the
// promoter's deterministic ids hold dots).
func key(status string, d Delivery) string {
	return status + "." + state.Token(d.Project) + "." + state.Token(d.Subscription) + "." + state.Token(d.EventID)
}

// run sends pending deliveries until ctx ends.
func (n *Notifier) run(ctx context.Context) {
	t := time.NewTicker(n.o.Interval)
	defer t.Stop()
	for {
		n.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := n.windows(ctx); err != nil && ctx.Err() == nil {
				n.o.Logger.Warn("promotion windows of notifications", "err", err)
			}
		case <-n.wake:
		}
	}
}

// pass tries every pending delivery whose time has come.
func (n *Notifier) pass(ctx context.Context) {
	keys, err := state.Keys(ctx, n.kv, StatusPending+".>")
	if err != nil {
		if ctx.Err() == nil {
			n.o.Logger.Warn("list pending notifications", "err", err)
		}
		return
	}
	// A few at once, so that one slow receiver does not hold up the others.
	sem := make(chan struct{}, senders)
	var wg sync.WaitGroup
	for _, k := range keys {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := n.attempt(ctx, k); err != nil && ctx.Err() == nil {
				n.o.Logger.Warn("notification", "key", k, "err", err)
			}
		})
	}
	wg.Wait()
}

// senders is how many deliveries one replica sends at once.
const senders = 4

func newClaim() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// attempt claims the pending delivery at k when it is due and not claimed,
// sends it and records the outcome.
func (n *Notifier) attempt(ctx context.Context, k string) error {
	claim := newClaim()
	now := n.o.Now().UTC()
	d, _, err := state.Update(ctx, n.kv, k, func(d Delivery, exists bool) (Delivery, error) {
		switch {
		case !exists:
			return d, state.ErrNoChange
		case d.Claim == claim:
			return d, nil // our own write, seen again
		case d.NextAttempt != nil && d.NextAttempt.After(now), d.ClaimedUntil != nil && d.ClaimedUntil.After(now):
			return d, state.ErrNoChange
		}
		until := now.Add(n.o.Timeout + 30*time.Second)
		d.Claim, d.ClaimedUntil = claim, &until
		return d, nil
	})
	if errors.Is(err, state.ErrNoChange) || errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if d.Claim != claim {
		return nil
	}
	res := n.send(ctx, d)
	select {
	case <-ctx.Done():
		return nil // stopping: the claim expires and another pass sends it
	default:
		return n.finish(ctx, k, d, res)
	}
}

// finish stores the outcome of an attempt: sent, dead, or pending again
// after a backoff.
func (n *Notifier) finish(ctx context.Context, k string, d Delivery, res result) error {
	now := n.o.Now().UTC()
	d.Attempts++
	d.LastStatus, d.LastError, d.UpdatedAt = res.status, res.errText, now
	d.Claim, d.ClaimedUntil = "", nil
	next := ""
	switch {
	case res.errText == "":
		d.Status, d.DeliveredAt, d.NextAttempt = StatusDelivered, &now, nil
		next = StatusDelivered
	case res.permanent || d.Attempts >= res.attempts:
		d.Status, d.NextAttempt = StatusDead, nil
		next = StatusDead
	default:
		at := now.Add(n.backoff(d.Attempts))
		d.NextAttempt = &at
		if _, err := state.Put(ctx, n.kv, k, d); err != nil {
			return fmt.Errorf("record attempt %d of %s: %w", d.Attempts, d.ID, err)
		}
		return nil
	}
	if next == StatusDead {
		n.o.Logger.Warn("notification dead-lettered", "project", d.Project, "subscription", d.Subscription, "event", d.EventID, "attempts", d.Attempts, "err", d.LastError)
	}
	if _, err := state.Put(ctx, n.kv, key(next, d), d); err != nil {
		return fmt.Errorf("record %s %s: %w", next, d.ID, err)
	}
	if err := n.kv.Delete(ctx, k); err != nil {
		return fmt.Errorf("remove pending %s: %w", d.ID, err)
	}
	return nil
}

// backoff is the delay after the attempt-th failure.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.o.Backoff
	for i := 1; i < attempt && d < n.o.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, n.o.MaxBackoff)
}

// List returns a project's deliveries of the given status ("" for all),
// newest first, without their events.
func (n *Notifier) List(ctx context.Context, project, status string) ([]Delivery, error) {
	statuses := Statuses
	if status != "" {
		statuses = []string{status}
	}
	var out []Delivery
	for _, st := range statuses {
		items, _, err := state.List[Delivery](ctx, n.kv, st+"."+state.Token(project)+".>", 0, "")
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			d := it.Value
			d.Envelope, d.Claim = nil, ""
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b Delivery) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}
