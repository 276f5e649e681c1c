package lease

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/caravan-cd/caravan/pkg/state"
)

// Record is a lease kept on its own, one KV entry per key.
type Record struct {
	Lease
}

// Leases takes, renews and releases leases kept on their own (Record), one
// KV entry per key, as one holder. It remembers its grants. It is safe for
// concurrent use.
type Leases struct {
	kv     state.KV
	holder string
	ttl    time.Duration
	now    func() time.Time
	// renewals tracks whether writes land (Healthy).
	renewals *Renewals

	mu     sync.Mutex
	grants map[string]Grant
}

// New returns the leases of holder (a unique replica ID, see Claim) in kv,
// lasting ttl without renewal.
func New(kv state.KV, holder string, ttl time.Duration) *Leases {
	return &Leases{kv: kv, holder: holder, ttl: ttl, now: time.Now, grants: map[string]Grant{}, renewals: NewRenewals(ttl)}
}

// Holder is this replica's ID.
func (l *Leases) Holder() string { return l.holder }

// TTL is how long a lease lasts without renewal.
func (l *Leases) TTL() time.Duration { return l.ttl }

// Grant returns this holder's grant on key, if it holds one.
func (l *Leases) Grant(key string) (Grant, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.grants[key]
	return g, ok
}

// Acquire renews this holder's lease on key, or takes it when it is free:
// the grant, or a HeldError (errors.Is ErrHeld) naming the holder when
// another replica holds it. A grant lost meanwhile is forgotten and the
// lease taken anew if it is free.
func (l *Leases) Acquire(ctx context.Context, key string) (Grant, error) {
	l.mu.Lock()
	mine, had := l.grants[key]
	l.mu.Unlock()
	var got Grant
	_, _, err := state.UpdateRev(ctx, l.kv, key, func(cur Record, rev uint64) (Record, error) {
		now := l.now()
		var err error
		if had && cur.Held(mine) {
			got, err = cur.Renew(mine, l.ttl, now)
		} else {
			got, err = cur.Take(l.holder, rev, l.ttl, now)
		}
		return cur, err
	})
	l.renewals.Record(err)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if errors.Is(err, ErrHeld) {
			delete(l.grants, key)
		}
		return Grant{}, err
	}
	l.grants[key] = got
	return got, nil
}

// Healthy is nil while this holder's lease writes land (see Renewals).
func (l *Leases) Healthy() error { return l.renewals.Healthy() }

// Current returns the live holder of key ("" when none).
func (l *Leases) Current(ctx context.Context, key string) (string, error) {
	rec, _, err := state.Get[Record](ctx, l.kv, key)
	if errors.Is(err, state.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if !rec.Live(l.now()) {
		return "", nil
	}
	return rec.Holder, nil
}

// Release gives key's lease up if this holder holds it. The entry stays,
// with its token, so the next grant's token is higher.
func (l *Leases) Release(ctx context.Context, key string) error {
	l.mu.Lock()
	mine, had := l.grants[key]
	delete(l.grants, key)
	l.mu.Unlock()
	if !had {
		return nil
	}
	_, _, err := state.Update(ctx, l.kv, key, func(cur Record, exists bool) (Record, error) {
		if !exists || !cur.Release(mine) {
			return cur, state.ErrNoChange
		}
		return cur, nil
	})
	return err
}

// Every runs job every interval (and once at start) while this holder
// holds the lease key, until ctx ends, so that one replica at a time runs
// it. Make the Leases' TTL about two intervals: the lease passes on when
// its holder missed a turn. Errors go to log.
func Every(ctx context.Context, l *Leases, key string, interval time.Duration, log *slog.Logger, job func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_, err := l.Acquire(ctx, key)
		switch {
		case errors.Is(err, ErrHeld):
		case err != nil && ctx.Err() == nil:
			log.Warn("job lease", "lease", key, "err", err)
		case err == nil:
			if err := job(ctx); err != nil && ctx.Err() == nil {
				log.Warn("job failed", "lease", key, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
