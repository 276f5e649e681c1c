// Package kvindex keeps an in-memory structure current through a KV watch
// of one bucket, resynced from scratch whenever the watch ends, and lets
// readers wait until it shows every write acknowledged before they began.
//
// It is the watch machinery shared by the indexes of pkg/freightindex
// (freight by origin and stage) and pkg/stageindex (stages by origin and
// upstream stage); each supplies only its data structure and how one KV
// entry changes it. Readers that cannot wait (Sync fails: the watch lags,
// ended, or is being resynced) read KV instead, so an index is a fast
// path, never the only one.
package kvindex

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotCurrent is returned by Sync when the index cannot show every write
// in time: its watch lags, ended, or is being resynced. Read KV instead.
var ErrNotCurrent = errors.New("index not current")

// Index keeps a structure S current through a watch of a whole KV bucket.
// S must be safe for concurrent use: entries are applied to it while
// readers read it.
type Index[S any] struct {
	kv    jetstream.KeyValue
	empty func() S
	apply func(S, jetstream.KeyValueEntry)

	mu      sync.RWMutex
	changed *sync.Cond
	sets    S
	seen    uint64 // last revision applied
	live    bool   // the current watch has delivered the bucket's values
	// restart asks the watch to end (Run then starts a new one): Sync
	// saw it make no progress while behind the bucket for stallAfter.
	restart chan struct{}
}

// StallAfter is how long a watch behind its bucket may deliver nothing
// before a reader waiting for it has it started again. A watch whose
// server restarted or lost its stream leader resumes by itself only after
// its heartbeats are missed (about 20 s); a new watch takes milliseconds.
const StallAfter = time.Second

// Stall tells a watch to start again when it made no progress for
// StallAfter while a reader waited for it. A reader waiting on a
// sync.Cond makes one, calls Check with the watch's progress (any count
// that grows as it delivers) each time it wakes, and Stop when done; the
// Stall wakes it every StallAfter to check.
type Stall struct {
	cond     *sync.Cond
	restart  chan<- struct{}
	timer    *time.Timer
	progress uint64
	since    time.Time
	started  bool
}

// NewStall returns a Stall that wakes the waiters of cond and asks for a
// restart on restart (a send that never blocks: buffer it).
func NewStall(cond *sync.Cond, restart chan<- struct{}) *Stall {
	return &Stall{cond: cond, restart: restart, timer: time.AfterFunc(StallAfter, cond.Broadcast), since: time.Now()}
}

// Check records the watch's progress and asks for a restart when it has
// not changed for StallAfter.
func (s *Stall) Check(progress uint64) {
	switch {
	case !s.started || progress != s.progress:
		s.started, s.progress, s.since = true, progress, time.Now()
		s.timer.Reset(StallAfter)
	case time.Since(s.since) >= StallAfter:
		select {
		case s.restart <- struct{}{}:
		default:
		}
		s.since = time.Now()
		s.timer.Reset(StallAfter)
	}
}

// Stop stops the Stall's timer.
func (s *Stall) Stop() { s.timer.Stop() }

// New returns an index of the bucket kv: empty makes an empty structure,
// apply records one entry (a put, or a delete or purge) in it, in
// revision order. Every entry of the bucket is applied, whatever its key:
// apply ignores those it does not index. The index is empty (and Sync
// fails) until Run has loaded it.
func New[S any](kv jetstream.KeyValue, empty func() S, apply func(S, jetstream.KeyValueEntry)) *Index[S] {
	ix := &Index[S]{kv: kv, empty: empty, apply: apply, sets: empty(), restart: make(chan struct{}, 1)}
	ix.changed = sync.NewCond(ix.mu.RLocker())
	return ix
}

// Run watches the bucket until ctx ends. Whenever the watch ends it starts
// a new one after retry (a second by default) and rebuilds the structure
// from its initial values, so nothing missed meanwhile stays missed;
// readers see the old structure, and Sync fails, until the new one is
// complete. ready, when not nil, is closed once the bucket's values are
// loaded the first time.
func (ix *Index[S]) Run(ctx context.Context, ready chan<- struct{}, retry time.Duration) {
	if retry <= 0 {
		retry = time.Second
	}
	var once sync.Once
	loaded := func() {
		if ready != nil {
			once.Do(func() { close(ready) })
		}
	}
	for ctx.Err() == nil {
		_ = ix.watch(ctx, loaded)
		ix.mu.Lock()
		ix.live = false
		ix.mu.Unlock()
		ix.changed.Broadcast()
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
}

func (ix *Index[S]) watch(ctx context.Context, loaded func()) error {
	w, err := ix.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", ix.kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	select {
	case <-ix.restart: // asked of the watch before this one
	default:
	}
	fresh, freshSeen := ix.empty(), uint64(0)
	initial := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ix.restart:
			return fmt.Errorf("watch %s stalled behind the bucket", ix.kv.Bucket())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch %s closed", ix.kv.Bucket())
			}
			switch {
			case e == nil && initial:
				initial = false
				ix.mu.Lock()
				ix.sets, ix.seen, ix.live = fresh, freshSeen, true
				ix.mu.Unlock()
				ix.changed.Broadcast()
				loaded()
			case e == nil:
			case initial:
				ix.apply(fresh, e)
				freshSeen = max(freshSeen, e.Revision())
			default:
				ix.mu.RLock()
				sets := ix.sets
				ix.mu.RUnlock()
				ix.apply(sets, e)
				ix.mu.Lock()
				ix.seen = max(ix.seen, e.Revision())
				ix.mu.Unlock()
				ix.changed.Broadcast()
			}
		}
	}
}

// Sync waits until the index has applied every write the bucket held when
// Sync was called (one stream-info request), for at most timeout, and
// returns the structure to read. It returns ErrNotCurrent when the index
// does not catch up in time, and at once while it is (re)loading.
func (ix *Index[S]) Sync(ctx context.Context, timeout time.Duration) (S, error) {
	var none S
	st, err := ix.kv.Status(ctx)
	if err != nil {
		return none, fmt.Errorf("%s %w: %w", ix.kv.Bucket(), ErrNotCurrent, err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return none, fmt.Errorf("%s %w: unexpected bucket status %T", ix.kv.Bucket(), ErrNotCurrent, st)
	}
	last := bs.StreamInfo().State.LastSeq
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, ix.changed.Broadcast)
	defer stop()
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.seen >= last {
		return ix.sets, nil
	}
	// A watch that delivers nothing while behind has stalled: started
	// again, it catches up at once, and Sync reads KV meanwhile.
	stall := NewStall(ix.changed, ix.restart)
	defer stall.Stop()
	for ix.seen < last {
		// While (re)loading, the writes since the last value applied may
		// be missing for a while: read KV at once instead of waiting.
		if !ix.live || ctx.Err() != nil {
			return none, fmt.Errorf("%s %w: revision %d of %d", ix.kv.Bucket(), ErrNotCurrent, ix.seen, last)
		}
		stall.Check(ix.seen)
		ix.changed.Wait()
	}
	return ix.sets, nil
}
