// Package lease runs a periodic job on one replica at a time: the replica
// holding a time-limited lease in the caravan-promoter bucket (key
// job.<name>) runs it; the lease passes to another replica when its holder
// stops renewing it.
package lease

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/caravan-cd/caravan/pkg/state"
)

type record struct {
	Holder  string    `json:"holder"`
	Expires time.Time `json:"expires"`
}

var errHeld = errors.New("held by another replica")

// Acquire takes or renews the lease name for holder until now+ttl; false
// when another holder's lease is still valid.
func Acquire(ctx context.Context, kv state.KV, name, holder string, ttl time.Duration) (bool, error) {
	_, _, err := state.Update(ctx, kv, "job."+name, func(cur record, _ bool) (record, error) {
		now := time.Now()
		if cur.Holder != "" && cur.Holder != holder && now.Before(cur.Expires) {
			return cur, errHeld
		}
		return record{Holder: holder, Expires: now.Add(ttl)}, nil
	})
	if errors.Is(err, errHeld) {
		return false, nil
	}
	return err == nil, err
}

// Every runs job every interval (and once at start) while holder holds the
// lease name, until ctx ends. The lease lasts two intervals, so it passes
// on when its holder missed a turn.
func Every(ctx context.Context, kv state.KV, name, holder string, interval time.Duration, log *slog.Logger, job func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := Acquire(ctx, kv, name, holder, 2*interval)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("job lease", "job", name, "err", err)
		case ok:
			if err := job(ctx); err != nil && ctx.Err() == nil {
				log.Warn("job failed", "job", name, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
