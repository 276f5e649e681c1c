package discovery

import (
	"context"
	"encoding/json"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/state"
)

// aliasIndex knows every Freight alias in use, per project, from a watch on
// the Freight bucket, so choosing the alias of new Freight does not read
// every Freight of the project. It may lag a write by a moment; two
// Freight getting the same random alias in that moment is unlikely enough
// (and the gateway checks uniqueness when an alias is changed by hand).
type aliasIndex struct {
	mu    sync.RWMutex
	byKey map[string]string          // freight key → alias
	inUse map[string]map[string]bool // project → alias → true
	ready chan struct{}
}

func watchAliases(ctx context.Context, kv jetstream.KeyValue) (*aliasIndex, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, err
	}
	idx := &aliasIndex{byKey: map[string]string{}, inUse: map[string]map[string]bool{}, ready: make(chan struct{})}
	go func() {
		defer func() { _ = w.Stop() }()
		initial := true
		for e := range w.Updates() {
			if e == nil {
				if initial {
					initial = false
					close(idx.ready)
				}
				continue
			}
			idx.apply(e)
		}
		if initial {
			close(idx.ready)
		}
	}()
	return idx, nil
}

func (x *aliasIndex) apply(e jetstream.KeyValueEntry) {
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
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.byKey[key]; ok {
		delete(x.inUse[project], old)
		delete(x.byKey, key)
	}
	if alias != "" {
		x.byKey[key] = alias
		if x.inUse[project] == nil {
			x.inUse[project] = map[string]bool{}
		}
		x.inUse[project][alias] = true
	}
}

// taken returns whether alias is in use in project, once the initial
// values have been read.
func (x *aliasIndex) taken(ctx context.Context, project string) (func(string) bool, error) {
	select {
	case <-x.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return func(alias string) bool {
		x.mu.RLock()
		defer x.mu.RUnlock()
		return x.inUse[project][alias]
	}, nil
}
