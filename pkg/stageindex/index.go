package stageindex

import (
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/kvindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// ErrNotCurrent is returned by Sync when the index cannot show every write
// in time: its watch lags, ended, or is being resynced. List KV instead.
var ErrNotCurrent = kvindex.ErrNotCurrent

// Index keeps Sets current through a KV watch of the resources bucket
// (keys project.kind.name; only Stages are indexed): Run watches,
// resyncing from scratch whenever the watch ends; Sync waits until it has
// caught up (see kvindex.Index).
type Index struct {
	*kvindex.Index[*Sets]
}

// New returns an index of the stages in the resources bucket kv; it is
// empty (and Sync fails) until Run has loaded it.
func New(kv jetstream.KeyValue) *Index {
	return &Index{kvindex.New(kv, NewSets, apply)}
}

// stageToken is the kind token of the keys of Stages.
var stageToken = "." + state.Token(model.KindStage) + "."

// apply records one entry of the resources bucket in s: a Stage put or
// deleted; other kinds are not indexed.
func apply(s *Sets, e jetstream.KeyValueEntry) {
	key := e.Key()
	tok, rest, ok := strings.Cut(key, ".")
	if !ok || !strings.HasPrefix("."+rest, stageToken) {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		s.deleteKey(key)
		return
	}
	// As state.Store.ListObjects decodes it.
	obj, err := model.DecodeJSONObject(e.Value())
	st, isStage := obj.(*model.Stage)
	if err != nil || !isStage {
		s.deleteKey(key) // not a stage: not indexed
		return
	}
	s.putKey(key, state.Untoken(tok), Of(st))
}
