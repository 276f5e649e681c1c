package kvindex_test

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/kvindex"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// values is the simplest structure an index can keep: the bucket's values
// by key.
type values struct {
	mu sync.Mutex
	m  map[string]string
}

func (v *values) snapshot() map[string]string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return maps.Clone(v.m)
}

// newIndex returns an index of kv's values; loads counts the structures
// it makes (one per load of the bucket).
func newIndex(kv jetstream.KeyValue, loads *atomic.Int32) *kvindex.Index[*values] {
	return kvindex.New(kv, func() *values {
		loads.Add(1)
		return &values{m: map[string]string{}}
	}, func(v *values, e jetstream.KeyValueEntry) {
		v.mu.Lock()
		defer v.mu.Unlock()
		if e.Operation() == jetstream.KeyValuePut {
			v.m[e.Key()] = string(e.Value())
		} else {
			delete(v.m, e.Key())
		}
	})
}

// TestIndexReadsItsWrites: every write acknowledged before Sync is in the
// structure Sync returns, puts and deletes alike; before the first load
// Sync refuses at once. After the server restarts, the watch (which would
// resume by itself only once its heartbeats are missed) is found stalled
// by Sync and started again: the bucket is loaded a second time and the
// write made after the restart is in it.
func TestIndexReadsItsWrites(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testenv.NATS(t)
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "kvindex-test", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	put := func(k, v string) {
		t.Helper()
		testenv.Eventually(t, "put "+k, func() error {
			_, err := kv.Put(ctx, k, []byte(v))
			return err
		})
	}
	put("a", "1")

	var loads atomic.Int32
	ix := newIndex(kv, &loads)
	if _, err := ix.Sync(ctx, time.Second); !errors.Is(err, kvindex.ErrNotCurrent) {
		t.Fatalf("Sync before loading: %v, want ErrNotCurrent", err)
	}
	ready := make(chan struct{})
	go ix.Run(ctx, ready, 10*time.Millisecond)
	<-ready

	check := func(want map[string]string) {
		t.Helper()
		var got map[string]string
		deadline := time.Now().Add(time.Minute)
		for {
			v, err := ix.Sync(ctx, 10*time.Second)
			if err == nil {
				if got = v.snapshot(); maps.Equal(got, want) {
					return
				}
				t.Fatalf("index %v after Sync, want %v", got, want)
			}
			if !errors.Is(err, kvindex.ErrNotCurrent) || time.Now().After(deadline) {
				t.Fatalf("Sync: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	check(map[string]string{"a": "1"})
	put("b", "2")
	put("a", "3")
	check(map[string]string{"a": "3", "b": "2"})
	if err := kv.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	check(map[string]string{"a": "3"})
	if err := kv.Purge(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	check(map[string]string{})

	before := loads.Load()
	srv.Restart(t)
	put("c", "4")
	check(map[string]string{"c": "4"})
	if loads.Load() == before {
		t.Fatal("after the restart the index caught up without a new watch: the stalled one was not started again")
	}
}

// TestSyncGivesUpWhenBehind: an index whose watch has stopped does not
// wait for writes it will never see: Sync answers ErrNotCurrent within its
// timeout, and the caller reads KV instead.
func TestSyncGivesUpWhenBehind(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	js, err := jetstream.New(testenv.NATS(t).Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "kvindex-test"})
	if err != nil {
		t.Fatal(err)
	}
	ix := newIndex(kv, new(atomic.Int32))
	wctx, stop := context.WithCancel(ctx)
	ready, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); ix.Run(wctx, ready, 10*time.Millisecond) }()
	<-ready
	stop()
	<-done
	if _, err := kv.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Sync(ctx, 100*time.Millisecond); !errors.Is(err, kvindex.ErrNotCurrent) {
		t.Fatalf("Sync behind the bucket: %v, want ErrNotCurrent", err)
	}
}
