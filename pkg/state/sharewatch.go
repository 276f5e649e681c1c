package state

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ShareWatchJoin is how long a shared watch waits for the watches it
// expects (see Store.ShareWatch) after the first one before it starts with
// those that came.
const ShareWatchJoin = 5 * time.Second

// ShareWatch makes the first watches of every key of bucket b
// (KV(b).WatchAll without options) in this process share one watch of the
// bucket: one subscription receives each value once and hands the same
// entry to each of them, instead of each receiving (and holding while it
// lags) its own copy. caravan server's indexes of the freight bucket (the
// gateway's list index, the promoter's auto-promotion index, discovery's
// aliases) share one this way.
//
// The shared watch starts once n watches joined, or ShareWatchJoin after
// the first did, with those that came; each sees what a watch of its own
// would: every key's value, the nil marker, then every change in order.
// A slow watcher slows the others (the shared subscription waits, as each
// would have waited for its own). Watches asked for later (a watcher
// resyncing after its watch ended) and watches with options are the
// bucket's own. When the shared watch ends (the subscription closes) every
// watcher sharing it ends; it stops once they all stopped. Call ShareWatch
// before the watches are made.
func (s *Store) ShareWatch(b Bucket, n int) {
	if kv := s.kvs[b]; kv != nil {
		s.kvs[b] = &sharedWatchKV{KeyValue: kv, want: n}
	}
}

// sharedWatchKV is a bucket whose first WatchAll calls share one watch.
type sharedWatchKV struct {
	jetstream.KeyValue
	want int

	mu      sync.Mutex
	joined  []*sharedWatcher
	left    chan struct{} // told when one of joined stops
	timer   *time.Timer
	started bool
}

// sharedWatcher is one watcher of a shared watch.
type sharedWatcher struct {
	updates chan jetstream.KeyValueEntry
	once    sync.Once
	stopped chan struct{}
	left    chan<- struct{} // told when the watcher stops
}

func (w *sharedWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.updates }

// Stop stops the watcher; its updates channel closes soon after.
func (w *sharedWatcher) Stop() error {
	w.once.Do(func() {
		close(w.stopped)
		select {
		case w.left <- struct{}{}:
		default:
		}
	})
	return nil
}

func (k *sharedWatchKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	k.mu.Lock()
	if len(opts) > 0 || k.started {
		k.mu.Unlock()
		return k.KeyValue.WatchAll(ctx, opts...)
	}
	if k.joined == nil {
		k.timer = time.AfterFunc(ShareWatchJoin, k.start)
		// Buffered, so that Stop never blocks.
		k.left = make(chan struct{}, 1)
	}
	w := &sharedWatcher{updates: make(chan jetstream.KeyValueEntry, 256), stopped: make(chan struct{}), left: k.left}
	k.joined = append(k.joined, w)
	full := len(k.joined) >= k.want
	k.mu.Unlock()
	context.AfterFunc(ctx, func() { _ = w.Stop() })
	if full {
		k.start()
	}
	return w, nil
}

// start begins the shared watch for the watchers that joined (once).
func (k *sharedWatchKV) start() {
	k.mu.Lock()
	if k.started {
		k.mu.Unlock()
		return
	}
	k.started = true
	k.timer.Stop()
	watchers, left := k.joined, k.left
	k.joined = nil
	k.mu.Unlock()
	go k.run(watchers, left)
}

// run hands every entry of one watch of the bucket to each watcher still
// watching, until the watch closes or every watcher stopped. A watcher's
// channel closes once it stopped, or when the watch ends.
func (k *sharedWatchKV) run(active []*sharedWatcher, left <-chan struct{}) {
	defer func() {
		for _, w := range active {
			close(w.updates)
		}
	}()
	// drop closes the channels of the watchers that stopped.
	drop := func() {
		active = slices.DeleteFunc(active, func(w *sharedWatcher) bool {
			select {
			case <-w.stopped:
				close(w.updates)
				return true
			default:
				return false
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := k.KeyValue.WatchAll(ctx)
	if err != nil {
		return // the watchers see their watch end, as when it closes
	}
	defer func() { _ = src.Stop() }()
	for drop(); len(active) > 0; {
		select {
		case <-left:
			drop()
		case e, ok := <-src.Updates():
			if !ok {
				return
			}
			for _, w := range active {
				select {
				case w.updates <- e:
				case <-w.stopped:
				}
			}
		}
	}
}
