package freightindex

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/kvindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// ErrNotCurrent is returned by Sync when the index cannot show every write
// in time: its watch lags, ended, or is being resynced. Read KV instead.
var ErrNotCurrent = kvindex.ErrNotCurrent

// Index keeps Sets current through a KV watch of the freight bucket
// (keys project.name): Run watches, resyncing from scratch whenever the
// watch ends; Sync waits until it has caught up (see kvindex.Index).
type Index struct {
	*kvindex.Index[*Sets]
}

// New returns an index of the freight bucket kv; it is empty (and Sync
// fails) until Run has loaded it. shared, when not nil, holds the freight
// it shares with other indexes of kv in this process.
func New(kv jetstream.KeyValue, shared *Shared) *Index {
	return &Index{kvindex.New(kv, NewSets, func(s *Sets, e jetstream.KeyValueEntry) { apply(s, e, shared) })}
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
