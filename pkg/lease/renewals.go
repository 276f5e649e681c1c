package lease

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caravan-cd/caravan/pkg/state"
)

// Renewals tracks whether a replica's lease writes land, for its
// readiness: its leases work while the last write succeeded, or the last
// success is less than a TTL old. A lease held by another replica, lost or
// unchanged is an answer, not a failure. A nil Renewals records nothing
// and is always healthy. Safe for concurrent use.
type Renewals struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	ok      time.Time // the last success
	failing time.Time // the first failure since it (zero: none)
	err     error     // the last failure
}

// NewRenewals returns a tracker of leases lasting ttl.
func NewRenewals(ttl time.Duration) *Renewals { return &Renewals{ttl: ttl, now: time.Now} }

// Record notes the outcome of a lease write (a take, renewal or release).
func (r *Renewals) Record(err error) {
	if r == nil {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil || errors.Is(err, ErrHeld) || errors.Is(err, ErrLost) || errors.Is(err, ErrFenced) || errors.Is(err, state.ErrNoChange) {
		r.ok, r.failing, r.err = now, time.Time{}, nil
		return
	}
	if r.failing.IsZero() {
		r.failing = now
	}
	r.err = err
}

// Healthy is nil unless lease writes have failed since the last success
// and that success (or, without one, the first failure) is a TTL old.
func (r *Renewals) Healthy() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing.IsZero() {
		return nil
	}
	since := r.ok
	if since.IsZero() {
		since = r.failing
	}
	if r.now().Sub(since) < r.ttl {
		return nil
	}
	return fmt.Errorf("lease writes failing since %s: %w", r.failing.UTC().Format(time.RFC3339), r.err)
}
