package state

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Retry calls fn until it returns nil or an error that is not transient (a
// timeout while ctx lives, no stream leader for now, the cluster electing
// one, the connection reconnecting), for at most TransientPatience,
// backing off between attempts. It returns fn's last error. Start-up calls
// (binding a consumer, starting a watch) use it, so that a service
// restarted while its cluster elects a leader waits for the election
// instead of exiting.
func Retry(ctx context.Context, fn func(context.Context) error) error {
	var troubled time.Time
	wait := 100 * time.Millisecond
	for {
		err := fn(ctx)
		if err == nil || !transient(ctx, err) {
			return err
		}
		if troubled.IsZero() {
			troubled = time.Now()
		}
		if time.Since(troubled) >= TransientPatience {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// retryWatchKV is a bucket whose watches are started with Retry: every
// watch of a Store's bucket is.
type retryWatchKV struct {
	jetstream.KeyValue
}

func (k retryWatchKV) Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (w jetstream.KeyWatcher, err error) {
	err = Retry(ctx, func(ctx context.Context) (err error) {
		w, err = k.KeyValue.Watch(ctx, keys, opts...)
		return err
	})
	return w, err
}

func (k retryWatchKV) WatchAll(ctx context.Context, opts ...jetstream.WatchOpt) (w jetstream.KeyWatcher, err error) {
	err = Retry(ctx, func(ctx context.Context) (err error) {
		w, err = k.KeyValue.WatchAll(ctx, opts...)
		return err
	})
	return w, err
}

func (k retryWatchKV) WatchFiltered(ctx context.Context, keys []string, opts ...jetstream.WatchOpt) (w jetstream.KeyWatcher, err error) {
	err = Retry(ctx, func(ctx context.Context) (err error) {
		w, err = k.KeyValue.WatchFiltered(ctx, keys, opts...)
		return err
	})
	return w, err
}
