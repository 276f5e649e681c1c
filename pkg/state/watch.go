package state

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Change is one change seen by Watch. Deleted changes carry the zero value.
type Change[T any] struct {
	Key      string
	Revision uint64
	Deleted  bool
	// Initial marks the current values sent before ready closes.
	Initial bool
	Value   T
}

// WatchOption tunes Watch.
type WatchOption func(*watchOptions)

type watchOptions struct {
	keysOnly bool
}

// KeysOnly watches keys and revisions only: values are neither fetched
// (jetstream.MetaOnly) nor decoded, and every Change carries the zero
// value.
func KeysOnly() WatchOption { return func(o *watchOptions) { o.keysOnly = true } }

// Watch sends every change of the keys matching filter, starting with the
// current value of each (unless updatesOnly), until ctx ends; then it
// closes the channel. A value that does not decode is skipped. The nil
// marker jetstream sends after the initial values is not forwarded; use
// the returned ready channel, closed once the initial values were sent:
// when it closes, every Initial change is in the channel or taken.
func Watch[T any](ctx context.Context, kv jetstream.KeyValue, filter string, updatesOnly bool, options ...WatchOption) (<-chan Change[T], <-chan struct{}, error) {
	var o watchOptions
	for _, opt := range options {
		opt(&o)
	}
	var opts []jetstream.WatchOpt
	if updatesOnly {
		opts = append(opts, jetstream.UpdatesOnly())
	}
	if o.keysOnly {
		opts = append(opts, jetstream.MetaOnly())
	}
	w, err := kv.Watch(ctx, filter, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("watch %s %s: %w", kv.Bucket(), filter, err)
	}
	out := make(chan Change[T], 64)
	ready := make(chan struct{})
	if updatesOnly {
		close(ready)
	}
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		initial := !updatesOnly
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(ready)
					}
					continue
				}
				c := Change[T]{Key: e.Key(), Revision: e.Revision(), Initial: initial}
				if e.Operation() != jetstream.KeyValuePut {
					c.Deleted = true
				} else if o.keysOnly {
					// No value to decode.
				} else if err := json.Unmarshal(e.Value(), &c.Value); err != nil {
					continue
				}
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, ready, nil
}
