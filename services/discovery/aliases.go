package discovery

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/kvindex"
	"github.com/caravan-cd/caravan/pkg/state"
)

// aliasTimeout bounds how long choosing an alias waits for the alias index
// to catch up before it reads the project's Freight from KV instead.
const aliasTimeout = 3 * time.Second

// aliasIndex knows every Freight alias in use, per project, from a watch on
// the Freight bucket (kept by kvindex, which starts the watch again
// whenever it ends or stalls), so choosing the alias of new Freight does
// not read every Freight of the project. Two Freight getting the same
// random alias between a write and its arrival here is unlikely enough
// (and the gateway checks uniqueness when an alias is changed by hand).
type aliasIndex struct {
	ix     *kvindex.Index[*aliasSets]
	loaded chan struct{} // closed once the bucket was first loaded
}

// aliasSets is the index's structure: safe for concurrent use.
type aliasSets struct {
	mu    sync.RWMutex
	byKey map[string]string          // freight key → alias
	inUse map[string]map[string]bool // project → alias → true
}

func newAliasIndex(kv jetstream.KeyValue) *aliasIndex {
	return &aliasIndex{ix: kvindex.New(kv, func() *aliasSets {
		return &aliasSets{byKey: map[string]string{}, inUse: map[string]map[string]bool{}}
	}, (*aliasSets).apply), loaded: make(chan struct{})}
}

// Run keeps the index current until ctx ends.
func (x *aliasIndex) Run(ctx context.Context) { x.ix.Run(ctx, x.loaded, time.Second) }

func (s *aliasSets) apply(e jetstream.KeyValueEntry) {
	key := e.Key()
	project := state.Untoken(key[:max(strings.IndexByte(key, '.'), 0)])
	alias := ""
	if e.Operation() == jetstream.KeyValuePut {
		var v struct {
			Alias string `json:"alias"`
		}
		if json.Unmarshal(e.Value(), &v) == nil {
			alias = v.Alias
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.byKey[key]; ok {
		delete(s.inUse[project], old)
		delete(s.byKey, key)
	}
	if alias != "" {
		s.byKey[key] = alias
		if s.inUse[project] == nil {
			s.inUse[project] = map[string]bool{}
		}
		s.inUse[project][alias] = true
	}
}

// taken returns whether an alias is in use in project, once the index
// shows every Freight written before the call; it fails with an error
// wrapping kvindex.ErrNotCurrent when the index cannot (the caller reads
// KV instead).
func (x *aliasIndex) taken(ctx context.Context, project string) (func(string) bool, error) {
	ctx, cancel := context.WithTimeout(ctx, aliasTimeout)
	defer cancel()
	select {
	case <-x.loaded: // at start, wait for the first load rather than read KV
	case <-ctx.Done():
	}
	s, err := x.ix.Sync(ctx, aliasTimeout)
	if err != nil {
		return nil, err
	}
	return func(alias string) bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.inUse[project][alias]
	}, nil
}
