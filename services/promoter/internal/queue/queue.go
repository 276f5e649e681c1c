// Package queue is a stage's promotion queue as one record in the
// caravan-promoter bucket (key queue.<project>.<stage>): the pending
// promotions in creation order, the running one, and the lease of the
// promoter replica working the stage. Every change is a compare-and-set, so
// any number of replicas agree on who runs what: at most one promotion of a
// stage runs at a time.
package queue

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/state"
)

// KeyPrefix starts every queue key.
const KeyPrefix = "queue."

// Key returns the key of a stage's queue record.
func Key(project, stage string) string { return KeyPrefix + state.Key(project, stage) }

// Parse returns the project and stage of a queue key.
func Parse(key string) (project, stage string, ok bool) {
	rest, found := strings.CutPrefix(key, KeyPrefix)
	if !found {
		return "", "", false
	}
	p, s, found := strings.Cut(rest, ".")
	if !found {
		return "", "", false
	}
	return state.Untoken(p), state.Untoken(s), true
}

// Entry is a queued promotion.
type Entry struct {
	Name    string    `json:"name"`
	Freight string    `json:"freight,omitempty"`
	Created time.Time `json:"created"`
	// TraceParent is the trace context of the request that queued it (W3C
	// traceparent), so that its run continues the request's trace.
	TraceParent string `json:"traceparent,omitempty"`
}

// Record is a stage's queue.
type Record struct {
	// Pending promotions, oldest first.
	Pending []Entry `json:"pending,omitempty"`
	// Running is the promotion being run (or to resume), if any.
	Running *Entry `json:"running,omitempty"`
	// Lease is the replica working the stage: its token fences the
	// writes of the promotions it runs.
	lease.Lease
	// Blocked says why the next promotion waits with no holder (the stage
	// is verifying); StageVerified lifts it.
	Blocked string `json:"blocked,omitempty"`
	// Nudge counts the verifications that ended, so a replica blocking the
	// queue notices one that ended while it looked.
	Nudge uint64 `json:"nudge,omitempty"`
	// Abort lists running promotions asked to abort.
	Abort []string `json:"abort,omitempty"`
}

// Active reports whether the stage has work: a running or pending promotion.
func (r *Record) Active() bool { return r.Running != nil || len(r.Pending) > 0 }

// Has reports whether the promotion is queued or running.
func (r *Record) Has(name string) bool {
	if r.Running != nil && r.Running.Name == name {
		return true
	}
	return slices.ContainsFunc(r.Pending, func(e Entry) bool { return e.Name == name })
}

// HasFreight reports whether a promotion of freight is queued or running.
func (r *Record) HasFreight(freight string) bool {
	if r.Running != nil && r.Running.Freight == freight {
		return true
	}
	return slices.ContainsFunc(r.Pending, func(e Entry) bool { return e.Freight == freight })
}

// Add queues e in creation order (then name order); false when it is
// already queued or running.
func (r *Record) Add(e Entry) bool {
	if r.Has(e.Name) {
		return false
	}
	r.Pending = append(r.Pending, e)
	slices.SortStableFunc(r.Pending, func(a, b Entry) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return true
}

// Remove drops the promotion from the pending list, the running slot and
// the abort list; false when it was in none of them.
func (r *Record) Remove(name string) bool {
	n := len(r.Pending) + len(r.Abort)
	r.Pending = slices.DeleteFunc(r.Pending, func(e Entry) bool { return e.Name == name })
	r.Abort = slices.DeleteFunc(r.Abort, func(s string) bool { return s == name })
	removed := n != len(r.Pending)+len(r.Abort)
	if r.Running != nil && r.Running.Name == name {
		r.Running = nil
		removed = true
	}
	return removed
}

// AbortRequested reports whether the running promotion name is to abort.
func (r *Record) AbortRequested(name string) bool { return slices.Contains(r.Abort, name) }

// ErrNotHolder: the replica no longer holds the stage (lease.ErrLost).
var ErrNotHolder = lease.ErrLost

// Update changes a stage's record with state.Update.
func Update(ctx context.Context, kv state.KV, project, stage string, fn func(r *Record, exists bool) error) (Record, error) {
	return UpdateRev(ctx, kv, project, stage, func(r *Record, rev uint64) error { return fn(r, rev > 0) })
}

// UpdateRev is Update with the record's revision (0: absent), to take its
// lease (lease.Lease.Take).
func UpdateRev(ctx context.Context, kv state.KV, project, stage string, fn func(r *Record, rev uint64) error) (Record, error) {
	r, _, err := state.UpdateRev(ctx, kv, Key(project, stage), func(cur Record, rev uint64) (Record, error) {
		next := cur
		next.Pending = slices.Clone(cur.Pending)
		next.Abort = slices.Clone(cur.Abort)
		if cur.Running != nil {
			e := *cur.Running
			next.Running = &e
		}
		if err := fn(&next, rev); err != nil {
			return cur, err
		}
		return next, nil
	})
	return r, err
}

// Get reads a stage's record (the zero Record when there is none).
func Get(ctx context.Context, kv state.KV, project, stage string) (Record, error) {
	r, _, err := state.Get[Record](ctx, kv, Key(project, stage))
	if errors.Is(err, state.ErrNotFound) {
		return Record{}, nil
	}
	return r, err
}
