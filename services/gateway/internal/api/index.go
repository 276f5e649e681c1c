package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/kvindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Index keeps the freight, promotion and resource buckets (and the stage
// and warehouse status buckets, as raw JSON) in memory,
// current through KV watches, so that lists do not scan KV keys. Every
// gateway replica keeps its own; before answering a list it waits until it
// has seen the bucket's last revision (one stream-info request), so a list
// on any replica shows every write acknowledged before it began.
type Index struct {
	buckets map[state.Bucket]*bucketIndex
	// freight holds the freight bucket's objects again by origin and
	// stage (the same objects, not copies): what ?stage= lists read.
	freight *freightindex.Sets
	// promotions holds the promotions' keys by project and stage.
	promotions *byStage
}

type entry struct {
	rev uint64
	raw []byte
	obj model.Object
}

type bucketIndex struct {
	kv jetstream.KeyValue

	mu      sync.RWMutex
	changed *sync.Cond
	keys    []string // sorted
	entries map[string]entry
	seen    uint64 // last revision applied
	applied uint64 // entries applied: the watch's progress
	err     error  // the index stopped (its context ended)
	// live: the current watch has delivered the bucket's values. While a
	// new one loads them (a second or so), SyncBucket waits.
	live bool
	// restart asks the watch to end and a new one to start: SyncBucket
	// saw it make no progress while behind the bucket (kvindex.Stall).
	restart chan struct{}
	// raw buckets hold values that are not objects (status).
	raw bool
	// keepRaw: the stored JSON is kept beside the object (to make fresh
	// copies, or as the value of raw buckets).
	keepRaw bool
	// onApply, when set, hears of every object put (obj not nil) or
	// deleted, in order, before Sync sees it.
	onApply func(key string, obj model.Object)
	// shared, for the freight bucket, holds the freight other indexes in
	// the process hold too (nil: none).
	shared *freightindex.Shared
}

// indexed are the buckets the index serves; rawBuckets hold status.
var (
	indexed    = []state.Bucket{state.Freight, state.Promotions, state.Resources, state.Stages, state.Warehouses}
	rawBuckets = map[state.Bucket]bool{state.Stages: true, state.Warehouses: true}
)

// NewIndex loads the buckets and keeps watching them until ctx ends.
// shared, when not nil, holds the freight that other indexes of the
// freight bucket in this process (caravan server's promoter) hold too.
func NewIndex(ctx context.Context, store *state.Store, shared *freightindex.Shared) (*Index, error) {
	ix := &Index{buckets: map[state.Bucket]*bucketIndex{}, freight: freightindex.NewSets(), promotions: newByStage()}
	for _, b := range indexed {
		bi := &bucketIndex{kv: store.KV(b), entries: map[string]entry{}, raw: rawBuckets[b], keepRaw: rawBuckets[b] || b == state.Resources}
		switch b {
		case state.Freight:
			bi.onApply = ix.applyFreight
			bi.shared = shared
		case state.Promotions:
			bi.onApply = ix.promotions.apply
		}
		bi.changed = sync.NewCond(bi.mu.RLocker())
		bi.restart = make(chan struct{}, 1)
		w, err := bi.kv.WatchAll(ctx)
		if err != nil {
			return nil, fmt.Errorf("watch %s: %w", b, err)
		}
		go bi.run(ctx, w)
		ix.buckets[b] = bi
	}
	return ix, nil
}

// rewatchWait is the pause before a new watch after one ended.
const rewatchWait = time.Second

// run follows the bucket until ctx ends: whenever a watch ends (closed,
// or stalled) it starts a new one and brings the index to the bucket's
// values, so nothing missed meanwhile stays missed.
func (bi *bucketIndex) run(ctx context.Context, w jetstream.KeyWatcher) {
	for {
		bi.follow(ctx, w)
		bi.mu.Lock()
		bi.live = false
		bi.mu.Unlock()
		bi.changed.Broadcast()
		for w = nil; w == nil; {
			select {
			case <-ctx.Done():
				bi.fail(ctx.Err())
				return
			case <-time.After(rewatchWait):
			}
			w, _ = bi.kv.WatchAll(ctx) // failed: tried again
		}
	}
}

// follow applies the entries of one watch until it ends. The keys it
// loads replace those of the watch before: any other key was deleted
// meanwhile.
func (bi *bucketIndex) follow(ctx context.Context, w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	select {
	case <-bi.restart: // asked of the watch before this one
	default:
	}
	loaded := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-bi.restart:
			return
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return
			case e == nil && loaded != nil:
				bi.prune(loaded)
				loaded = nil
			case e == nil:
			default:
				if loaded != nil {
					loaded[e.Key()] = true
				}
				bi.apply(e)
			}
		}
	}
}

// prune removes the keys a new watch did not load (deleted while no watch
// ran) and marks the index live.
func (bi *bucketIndex) prune(loaded map[string]bool) {
	bi.mu.Lock()
	var gone []string
	for _, k := range bi.keys {
		if !loaded[k] {
			gone = append(gone, k)
		}
	}
	for _, k := range gone {
		bi.shared.Forget(k, bi.entries[k].rev+1)
		if bi.onApply != nil {
			bi.onApply(k, nil)
		}
		delete(bi.entries, k)
	}
	bi.keys = slices.DeleteFunc(bi.keys, func(k string) bool { return !loaded[k] })
	bi.live = true
	bi.mu.Unlock()
	bi.changed.Broadcast()
}

func (bi *bucketIndex) fail(err error) {
	bi.mu.Lock()
	bi.err = err
	bi.mu.Unlock()
	bi.changed.Broadcast()
}

func (bi *bucketIndex) apply(e jetstream.KeyValueEntry) {
	key := e.Key()
	var obj model.Object
	del := e.Operation() != jetstream.KeyValuePut
	if del {
		bi.shared.Forget(key, e.Revision())
	}
	if !del && !bi.raw {
		if f := bi.shared.Get(key, e.Revision(), e.Value()); f != nil {
			obj = f
		} else if o, err := model.DecodeJSONObject(e.Value()); err != nil {
			del = true // not an object: not listed
		} else {
			o.GetObjectMeta().ResourceVersion = strconv.FormatUint(e.Revision(), 10)
			if f, ok := o.(*model.Freight); ok {
				freightindex.Compact(f)
			}
			obj = o
		}
	}
	raw := e.Value()
	if !bi.keepRaw {
		raw = nil // the object is enough
	}
	bi.mu.Lock()
	if bi.onApply != nil {
		bi.onApply(key, obj)
	}
	i, found := slices.BinarySearch(bi.keys, key)
	switch {
	case del && found:
		bi.keys = slices.Delete(bi.keys, i, i+1)
		delete(bi.entries, key)
	case !del:
		if !found {
			bi.keys = slices.Insert(bi.keys, i, key)
		}
		bi.entries[key] = entry{rev: e.Revision(), raw: raw, obj: obj}
	}
	bi.seen = max(bi.seen, e.Revision())
	bi.applied++
	bi.mu.Unlock()
	bi.changed.Broadcast()
}

// Serves reports whether lists of kind come from the index.
func (ix *Index) Serves(kind string) bool {
	return kind != model.KindSecret && ix.buckets[state.BucketOf(kind)] != nil
}

// Sync waits until the index has applied every write the bucket of kind
// held when Sync was called.
func (ix *Index) Sync(ctx context.Context, kind string) error {
	return ix.SyncBucket(ctx, state.BucketOf(kind))
}

// Raw returns the value of key in bucket b as last seen.
func (ix *Index) Raw(b state.Bucket, key string) ([]byte, bool) {
	bi := ix.buckets[b]
	if bi == nil {
		return nil, false
	}
	bi.mu.RLock()
	defer bi.mu.RUnlock()
	e, ok := bi.entries[key]
	return e.raw, ok
}

// SyncBucket waits until the index has applied every write bucket b held
// when SyncBucket was called.
func (ix *Index) SyncBucket(ctx context.Context, b state.Bucket) error {
	bi := ix.buckets[b]
	st, err := bi.kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("index sync: %w", err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return errors.New("index sync: unexpected bucket status")
	}
	last := bs.StreamInfo().State.LastSeq
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stop := context.AfterFunc(ctx, bi.changed.Broadcast)
	defer stop()
	bi.mu.RLock()
	defer bi.mu.RUnlock()
	if bi.seen >= last && bi.live {
		return nil // the usual case: no timer for a list
	}
	// A watch that delivers nothing while behind has stalled: a new one
	// catches up at once.
	stall := kvindex.NewStall(bi.changed, bi.restart)
	defer stall.Stop()
	for bi.seen < last || !bi.live {
		switch {
		case bi.err != nil:
			return fmt.Errorf("index sync: %w", bi.err)
		case ctx.Err() != nil:
			return fmt.Errorf("index sync: revision %d of %d: %w", bi.seen, last, ctx.Err())
		}
		stall.Check(bi.applied)
		bi.changed.Wait()
	}
	return nil
}

// ListObjects is state.Store.ListObjects over the index. Freight and
// promotions are shared with the index and must not be modified; other
// kinds are fresh copies.
func (ix *Index) ListObjects(ctx context.Context, project, kind string, limit int, after string) ([]model.Object, string, error) {
	return ix.list(project, kind, limit, after, state.BucketOf(kind) == state.Resources)
}

// ListShared is ListObjects returning the index's own objects of every
// kind, which must not be modified: to order, filter and present a list
// without decoding it again.
func (ix *Index) ListShared(_ context.Context, project, kind string, limit int, after string) ([]model.Object, string, error) {
	return ix.list(project, kind, limit, after, false)
}

func (bi *bucketIndex) fresh(e entry) (model.Object, error) {
	obj, err := model.DecodeJSONObject(json.RawMessage(e.raw))
	if err != nil {
		return nil, err
	}
	obj.GetObjectMeta().ResourceVersion = strconv.FormatUint(e.rev, 10)
	return obj, nil
}

func (ix *Index) list(project, kind string, limit int, after string, fresh bool) ([]model.Object, string, error) {
	bi := ix.buckets[state.BucketOf(kind)]
	filter := state.KindFilter(project, kind)
	prefix := strings.TrimSuffix(filter, ">")
	bi.mu.RLock()
	defer bi.mu.RUnlock()
	start := max(after, prefix)
	i, _ := slices.BinarySearch(bi.keys, start)
	var out []model.Object
	for ; i < len(bi.keys); i++ {
		k := bi.keys[i]
		if !strings.HasPrefix(k, prefix) {
			break
		}
		if k <= after {
			continue
		}
		if limit > 0 && len(out) == limit {
			return out, state.KeyOf(out[len(out)-1]), nil
		}
		e := bi.entries[k]
		if fresh {
			obj, err := bi.fresh(e)
			if err != nil {
				continue
			}
			out = append(out, obj)
			continue
		}
		out = append(out, e.obj)
	}
	return out, "", nil
}

// applyFreight keeps the freight sets in step with the freight bucket.
func (ix *Index) applyFreight(key string, obj model.Object) {
	tok, _, _ := strings.Cut(key, ".")
	project := state.Untoken(tok)
	if f, ok := obj.(*model.Freight); ok {
		ix.freight.Put(project, f)
		return
	}
	ix.freight.Delete(project, state.LastToken(key))
}

// Freight returns the freight sets once they hold every write the
// freight bucket held when it was called.
func (ix *Index) Freight(ctx context.Context) (*freightindex.Sets, error) {
	if err := ix.SyncBucket(ctx, state.Freight); err != nil {
		return nil, err
	}
	return ix.freight, nil
}

// byStage holds the keys of the promotions of each project's stage.
type byStage struct {
	mu     sync.RWMutex
	stages map[string]map[string]map[string]bool // project → stage → key
	of     map[string]string                     // key → its stage
}

func newByStage() *byStage {
	return &byStage{stages: map[string]map[string]map[string]bool{}, of: map[string]string{}}
}

func (b *byStage) apply(key string, obj model.Object) {
	tok, _, _ := strings.Cut(key, ".")
	project := state.Untoken(tok)
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.of[key]; ok {
		delete(b.stages[project][old], key)
		if len(b.stages[project][old]) == 0 {
			delete(b.stages[project], old)
		}
		delete(b.of, key)
	}
	p, ok := obj.(*model.Promotion)
	if !ok {
		return
	}
	if b.stages[project] == nil {
		b.stages[project] = map[string]map[string]bool{}
	}
	if b.stages[project][p.Spec.Stage] == nil {
		b.stages[project][p.Spec.Stage] = map[string]bool{}
	}
	b.stages[project][p.Spec.Stage][key] = true
	b.of[key] = p.Spec.Stage
}

// PromotionsOf returns the promotions of a project's stage, in key
// order, shared with the index (not to be modified), once the index holds
// every write the promotions bucket held when it was called.
func (ix *Index) PromotionsOf(ctx context.Context, project, stage string) ([]model.Object, error) {
	if err := ix.SyncBucket(ctx, state.Promotions); err != nil {
		return nil, err
	}
	ix.promotions.mu.RLock()
	keys := make([]string, 0, len(ix.promotions.stages[project][stage]))
	for k := range ix.promotions.stages[project][stage] {
		keys = append(keys, k)
	}
	ix.promotions.mu.RUnlock()
	slices.Sort(keys)
	bi := ix.buckets[state.Promotions]
	bi.mu.RLock()
	defer bi.mu.RUnlock()
	out := make([]model.Object, 0, len(keys))
	for _, k := range keys {
		if e, ok := bi.entries[k]; ok && e.obj != nil {
			out = append(out, e.obj)
		}
	}
	return out, nil
}
