// Package lease gives one discovery replica at a time the right to work a
// Warehouse. A lease is a KV entry {holder, expires} written with
// compare-and-set (state.Update): a replica takes a lease that is absent,
// its own or expired, and renews it well before it expires; a replica that
// dies stops renewing and another takes over once the lease has expired.
// Expiry compares wall clocks, so replicas' clocks must agree to well
// within the TTL.
package lease

import (
	"context"
	"errors"
	"time"

	"github.com/caravan-cd/caravan/pkg/state"
)

// errHeld: another replica holds an unexpired lease.
var errHeld = errors.New("held by another replica")

// Record is a lease's stored value.
type Record struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

// Leases takes and renews leases as one holder.
type Leases struct {
	kv     state.KV
	holder string
	ttl    time.Duration
}

// New returns the leases of holder (a unique replica ID) in kv.
func New(kv state.KV, holder string, ttl time.Duration) *Leases {
	return &Leases{kv: kv, holder: holder, ttl: ttl}
}

// Holder is this replica's ID.
func (l *Leases) Holder() string { return l.holder }

// TTL is how long a lease lasts without renewal.
func (l *Leases) TTL() time.Duration { return l.ttl }

// Acquire takes or renews the lease on key. It reports false, with the
// current holder, when another replica holds it.
func (l *Leases) Acquire(ctx context.Context, key string) (bool, string, error) {
	var other string
	_, _, err := state.Update(ctx, l.kv, key, func(cur Record, exists bool) (Record, error) {
		now := time.Now()
		if exists && cur.Holder != l.holder && cur.Expires.After(now) {
			other = cur.Holder
			return cur, errHeld
		}
		return Record{Holder: l.holder, Expires: now.Add(l.ttl)}, nil
	})
	if errors.Is(err, errHeld) {
		return false, other, nil
	}
	if err != nil {
		return false, "", err
	}
	return true, l.holder, nil
}

// Current returns the unexpired holder of key ("" when none).
func (l *Leases) Current(ctx context.Context, key string) (string, error) {
	rec, _, err := state.Get[Record](ctx, l.kv, key)
	if errors.Is(err, state.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if rec.Expires.Before(time.Now()) {
		return "", nil
	}
	return rec.Holder, nil
}

// Release gives key's lease up if this replica holds it.
func (l *Leases) Release(ctx context.Context, key string) error {
	rec, rev, err := state.Get[Record](ctx, l.kv, key)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if rec.Holder != l.holder {
		return nil
	}
	if err := state.Delete(ctx, l.kv, key, rev); err != nil && !errors.Is(err, state.ErrConflict) {
		return err
	}
	return nil
}
