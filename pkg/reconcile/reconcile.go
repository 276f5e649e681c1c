// Package reconcile is the backstop loop every service runs beside its
// event handlers: a pass re-reads the full state of what the service owns
// and drives each object to where it should be. Events are the fast path;
// a pass runs at start, when woken (a KV watch saw a change, an event
// handler asks) and at least every interval, so a lost event costs at most
// one interval, never the work.
package reconcile

import (
	"context"
	"math/rand/v2"
	"time"
)

// DefaultInterval is CARAVAN_RECONCILE_INTERVAL's default.
const DefaultInterval = 30 * time.Second

// Loop runs passes. Create it with New; it is safe for concurrent use.
type Loop struct {
	interval time.Duration
	wake     chan struct{}
}

// New returns a loop passing at least every interval (DefaultInterval when
// not positive), 0–20% sooner at random so replicas spread out.
func New(interval time.Duration) *Loop {
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Loop{interval: interval, wake: make(chan struct{}, 1)}
}

// Interval is the loop's interval.
func (l *Loop) Interval() time.Duration { return l.interval }

// Wake asks for a pass soon. Wakes during a pass are coalesced into one
// more pass after it.
func (l *Loop) Wake() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Run calls pass at once, then after every Wake and at least every
// interval, until ctx ends. A pass's error goes to failed (nil: dropped)
// and does not stop the loop: the next pass tries again.
func (l *Loop) Run(ctx context.Context, pass func(context.Context) error, failed func(error)) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.wake:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
		if err := pass(ctx); err != nil && ctx.Err() == nil && failed != nil {
			failed(err)
		}
		t.Reset(Jitter(l.interval))
	}
}

// Jitter returns d shortened by 0–20% at random: never longer than d, so
// a pass comes at least every interval.
func Jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.2*rand.Float64()))
}
