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
	Value    T
}

// Watch sends every change of the keys matching filter, starting with the
// current value of each (unless updatesOnly), until ctx ends; then it
// closes the channel. A value that does not decode is skipped. The nil
// marker jetstream sends after the initial values is not forwarded; use
// the returned ready channel, closed once the initial values were sent.
func Watch[T any](ctx context.Context, kv jetstream.KeyValue, filter string, updatesOnly bool) (<-chan Change[T], <-chan struct{}, error) {
	var opts []jetstream.WatchOpt
	if updatesOnly {
		opts = append(opts, jetstream.UpdatesOnly())
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
				c := Change[T]{Key: e.Key(), Revision: e.Revision()}
				if e.Operation() != jetstream.KeyValuePut {
					c.Deleted = true
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
