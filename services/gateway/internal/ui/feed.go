package ui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/state"
)

// feedBuckets are the buckets the pipeline page shows: stage and warehouse
// specs (and the ProjectConfig) in Resources, their status, freight and
// promotions.
var feedBuckets = []state.Bucket{state.Resources, state.Stages, state.Warehouses, state.Freight, state.Promotions}

// feedKeep is how many changes the feed keeps per project; a page that
// last looked further back reads the project anew.
const feedKeep = 4096

// Feed follows the buckets a project's pipeline shows (KV watches) and
// tells the UI which keys of a project changed since it last looked, so
// that a page re-reads only those objects (through the API, as everything
// else it reads) instead of every stage and freight. It holds keys only,
// never values.
type Feed struct {
	kvs map[state.Bucket]jetstream.KeyValue

	mu      sync.Mutex
	changed *sync.Cond
	seen    map[state.Bucket]uint64 // last revision applied, per bucket
	err     error                   // a watch ended
	seq     uint64                  // changes seen, all projects
	log     map[string]*projectLog
}

type projectLog struct {
	// dropped is the seq of the newest change no longer kept.
	dropped uint64
	changes []change
}

type change struct {
	seq    uint64
	bucket state.Bucket
	key    string
}

// NewFeed starts watching the store's buckets until ctx ends.
func NewFeed(ctx context.Context, store *state.Store) (*Feed, error) {
	f := &Feed{kvs: map[state.Bucket]jetstream.KeyValue{}, seen: map[state.Bucket]uint64{}, log: map[string]*projectLog{}}
	f.changed = sync.NewCond(&f.mu)
	for _, b := range feedBuckets {
		kv := store.KV(b)
		w, err := kv.WatchAll(ctx, jetstream.MetaOnly())
		if err != nil {
			return nil, fmt.Errorf("watch %s: %w", b, err)
		}
		f.kvs[b] = kv
		go f.run(ctx, b, w)
	}
	return f, nil
}

func (f *Feed) run(ctx context.Context, b state.Bucket, w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			f.fail(ctx.Err())
			return
		case e, ok := <-w.Updates():
			if !ok {
				f.fail(errors.New("ui feed: watch closed"))
				return
			}
			if e != nil {
				f.apply(b, e.Key(), e.Revision())
			}
		}
	}
}

func (f *Feed) fail(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
	f.changed.Broadcast()
}

func (f *Feed) apply(b state.Bucket, key string, rev uint64) {
	project, ok := state.ProjectOfKey(b, key)
	f.mu.Lock()
	if ok {
		f.seq++
		l := f.log[project]
		if l == nil {
			l = &projectLog{}
			f.log[project] = l
		}
		if len(l.changes) >= feedKeep {
			n := len(l.changes) / 2
			l.dropped = l.changes[n-1].seq
			l.changes = append(l.changes[:0], l.changes[n:]...)
		}
		l.changes = append(l.changes, change{seq: f.seq, bucket: b, key: key})
	}
	f.seen[b] = max(f.seen[b], rev)
	f.mu.Unlock()
	f.changed.Broadcast()
}

// sync waits until the feed has seen every write the buckets held when
// sync was called, and returns its position.
func (f *Feed) sync(ctx context.Context) (uint64, error) {
	last := make(map[state.Bucket]uint64, len(f.kvs))
	for b, kv := range f.kvs {
		st, err := kv.Status(ctx)
		if err != nil {
			return 0, fmt.Errorf("ui feed sync: %w", err)
		}
		bs, ok := st.(*jetstream.KeyValueBucketStatus)
		if !ok {
			return 0, errors.New("ui feed sync: unexpected bucket status")
		}
		last[b] = bs.StreamInfo().State.LastSeq
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stop := context.AfterFunc(ctx, f.changed.Broadcast)
	defer stop()
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		behind := false
		for b, l := range last {
			if f.seen[b] < l {
				behind = true
			}
		}
		switch {
		case !behind:
			return f.seq, nil
		case f.err != nil:
			return 0, fmt.Errorf("ui feed sync: %w", f.err)
		case ctx.Err() != nil:
			return 0, fmt.Errorf("ui feed sync: %w", ctx.Err())
		}
		f.changed.Wait()
	}
}

// since returns the project's changes after position from; ok is false
// when some of them are no longer kept.
func (f *Feed) since(project string, from uint64) (out []change, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.log[project]
	if l == nil {
		return nil, true
	}
	if from < l.dropped {
		return nil, false
	}
	for i := len(l.changes) - 1; i >= 0 && l.changes[i].seq > from; i-- {
		out = append(out, l.changes[i])
	}
	return out, true
}

// keyParts splits a key of bucket b into its kind ("" outside Resources)
// and name.
func keyParts(b state.Bucket, key string) (kind, name string) {
	tokens := strings.Split(key, ".")
	if b == state.Resources {
		if len(tokens) != 3 {
			return "", ""
		}
		return tokens[1], state.Untoken(tokens[2])
	}
	if len(tokens) != 2 {
		return "", ""
	}
	return "", state.Untoken(tokens[1])
}
