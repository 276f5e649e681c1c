package freightindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// ErrNotCurrent is returned by Sync when the index cannot show every write
// in time: its watch lags, ended, or is being resynced. Read KV instead.
var ErrNotCurrent = errors.New("freight index not current")

// Index keeps Sets current through a KV watch of the freight bucket
// (keys project.name). Run watches; Sync waits until it has caught up.
type Index struct {
	kv     jetstream.KeyValue
	shared *Shared

	mu      sync.RWMutex
	changed *sync.Cond
	sets    *Sets
	seen    uint64 // last revision applied
	live    bool   // the current watch has delivered the bucket's values
}

// New returns an index of the freight bucket kv; it is empty (and Sync
// fails) until Run has loaded it. shared, when not nil, holds the freight
// it shares with other indexes of kv in this process.
func New(kv jetstream.KeyValue, shared *Shared) *Index {
	ix := &Index{kv: kv, shared: shared, sets: NewSets()}
	ix.changed = sync.NewCond(ix.mu.RLocker())
	return ix
}

// Run watches the bucket until ctx ends. Whenever the watch ends it starts
// a new one after retry (a second by default) and rebuilds the sets from
// its initial values, so nothing missed meanwhile stays missed; readers
// see the old sets, and Sync fails, until the new ones are complete.
// ready, when not nil, is closed once the bucket's values are loaded the
// first time.
func (ix *Index) Run(ctx context.Context, ready chan<- struct{}, retry time.Duration) {
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

func (ix *Index) watch(ctx context.Context, loaded func()) error {
	w, err := ix.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", ix.kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	fresh, freshSeen := NewSets(), uint64(0)
	initial := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("freight index watch closed")
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
				apply(fresh, e, ix.shared)
				freshSeen = max(freshSeen, e.Revision())
			default:
				ix.mu.RLock()
				sets := ix.sets
				ix.mu.RUnlock()
				apply(sets, e, ix.shared)
				ix.mu.Lock()
				ix.seen = max(ix.seen, e.Revision())
				ix.mu.Unlock()
				ix.changed.Broadcast()
			}
		}
	}
}

// apply records one entry of the freight bucket in s, taking the freight
// from shared when it holds it.
func apply(s *Sets, e jetstream.KeyValueEntry, shared *Shared) {
	tok, _, ok := strings.Cut(e.Key(), ".")
	if !ok {
		return
	}
	projectName, name := state.Untoken(tok), state.LastToken(e.Key())
	if e.Operation() != jetstream.KeyValuePut {
		s.Delete(projectName, name)
		shared.Forget(e.Key(), e.Revision())
		return
	}
	if f := shared.Get(e.Key(), e.Revision(), e.Value()); f != nil {
		s.Put(projectName, f)
		return
	}
	f := &model.Freight{}
	if err := json.Unmarshal(e.Value(), f); err != nil || f.Name == "" {
		s.Delete(projectName, name) // not freight: not indexed
		return
	}
	f.ResourceVersion = strconv.FormatUint(e.Revision(), 10)
	if f.Namespace == "" {
		f.Namespace = projectName
	}
	Compact(f)
	s.Put(projectName, f)
}

// Sync waits until the index has applied every write the bucket held when
// Sync was called (one stream-info request), for at most timeout, and
// returns the sets to read. It returns ErrNotCurrent when the index does
// not catch up in time, and at once while it is (re)loading.
func (ix *Index) Sync(ctx context.Context, timeout time.Duration) (*Sets, error) {
	st, err := ix.kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotCurrent, err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return nil, fmt.Errorf("%w: unexpected bucket status %T", ErrNotCurrent, st)
	}
	last := bs.StreamInfo().State.LastSeq
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, ix.changed.Broadcast)
	defer stop()
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for ix.seen < last {
		// While (re)loading, the writes since the last value applied may
		// be missing for a while: read KV at once instead of waiting.
		if !ix.live || ctx.Err() != nil {
			return nil, fmt.Errorf("%w: revision %d of %d", ErrNotCurrent, ix.seen, last)
		}
		ix.changed.Wait()
	}
	return ix.sets, nil
}
