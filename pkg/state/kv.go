package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Sentinel errors.
var (
	// ErrNotFound: the key does not exist (or was deleted).
	ErrNotFound = errors.New("not found")
	// ErrExists: Create found the key already there.
	ErrExists = errors.New("already exists")
	// ErrNoChange, returned by an Update function, skips the write.
	ErrNoChange = errors.New("no change")
	// ErrConflict: the entry kept changing under Update until it gave up.
	ErrConflict = errors.New("conflicting updates")
)

// KV is the part of a JetStream KeyValue bucket this package uses.
type KV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error)
	Bucket() string
}

// Get decodes the JSON value at key and returns its revision.
func Get[T any](ctx context.Context, kv KV, key string) (T, uint64, error) {
	var v T
	e, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return v, 0, fmt.Errorf("%s %s: %w", kv.Bucket(), key, ErrNotFound)
		}
		return v, 0, fmt.Errorf("get %s %s: %w", kv.Bucket(), key, err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("decode %s %s: %w", kv.Bucket(), key, err)
	}
	return v, e.Revision(), nil
}

// Create stores v at key if the key does not exist (ErrExists otherwise).
func Create[T any](ctx context.Context, kv KV, key string, v T) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s %s: %w", kv.Bucket(), key, err)
	}
	rev, err := kv.Create(ctx, key, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("create %s %s: %w", kv.Bucket(), key, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("create %s %s: %w", kv.Bucket(), key, err)
	}
	return rev, nil
}

// Put stores v at key unconditionally. Prefer Update for anything that
// reads before it writes.
func Put[T any](ctx context.Context, kv KV, key string, v T) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s %s: %w", kv.Bucket(), key, err)
	}
	rev, err := kv.Put(ctx, key, b)
	if err != nil {
		return 0, fmt.Errorf("put %s %s: %w", kv.Bucket(), key, err)
	}
	return rev, nil
}

// Update reads key, calls fn with the current value (exists false and the
// zero value when absent) and writes fn's result only if the entry is still
// at the revision read; on a conflict it reads again and calls fn again, so
// fn must be a pure function of its input. fn returning ErrNoChange skips
// the write and returns the current value; any other error aborts.
func Update[T any](ctx context.Context, kv KV, key string, fn func(cur T, exists bool) (T, error)) (T, uint64, error) {
	const maxAttempts = 1000
	for attempt := 1; ; attempt++ {
		cur, rev, err := Get[T](ctx, kv, key)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return cur, 0, err
		}
		next, err := fn(cur, exists)
		if errors.Is(err, ErrNoChange) {
			return cur, rev, nil
		}
		if err != nil {
			return cur, rev, err
		}
		b, err := json.Marshal(next)
		if err != nil {
			return cur, rev, fmt.Errorf("encode %s %s: %w", kv.Bucket(), key, err)
		}
		var newRev uint64
		if exists {
			newRev, err = kv.Update(ctx, key, b, rev)
		} else {
			newRev, err = kv.Create(ctx, key, b)
		}
		if err == nil {
			return next, newRev, nil
		}
		if !isConflict(err) {
			return cur, rev, fmt.Errorf("update %s %s: %w", kv.Bucket(), key, err)
		}
		if attempt == maxAttempts {
			return cur, rev, fmt.Errorf("update %s %s: %w after %d attempts", kv.Bucket(), key, ErrConflict, attempt)
		}
		// Back off a little, with jitter, so contending writers spread out.
		delay := time.Duration(rand.Int64N(int64(min(attempt, 20))*int64(time.Millisecond) + 1))
		select {
		case <-ctx.Done():
			return cur, rev, fmt.Errorf("update %s %s: %w", kv.Bucket(), key, ctx.Err())
		case <-time.After(delay):
		}
	}
}

func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Delete removes key. With revision > 0 it deletes only if the entry is
// still at that revision.
func Delete(ctx context.Context, kv KV, key string, revision uint64) error {
	var opts []jetstream.KVDeleteOpt
	if revision > 0 {
		opts = append(opts, jetstream.LastRevision(revision))
	}
	if err := kv.Delete(ctx, key, opts...); err != nil {
		if isConflict(err) {
			return fmt.Errorf("delete %s %s: %w", kv.Bucket(), key, ErrConflict)
		}
		return fmt.Errorf("delete %s %s: %w", kv.Bucket(), key, err)
	}
	return nil
}

// Keys lists the keys matching filter (">" for all), sorted.
func Keys(ctx context.Context, kv KV, filter string) ([]string, error) {
	lister, err := kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("list %s %s: %w", kv.Bucket(), filter, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}

// Item is one listed entry.
type Item[T any] struct {
	Key      string
	Revision uint64
	Value    T
}

// List returns up to limit entries matching filter whose keys sort after
// `after` (a continue token; "" starts at the beginning), and the token of
// the next page ("" when there is none). limit <= 0 lists everything.
func List[T any](ctx context.Context, kv KV, filter string, limit int, after string) ([]Item[T], string, error) {
	keys, err := Keys(ctx, kv, filter)
	if err != nil {
		return nil, "", err
	}
	if after != "" {
		i, _ := slices.BinarySearch(keys, after)
		for i < len(keys) && keys[i] <= after {
			i++
		}
		keys = keys[i:]
	}
	items := make([]Item[T], 0, min(len(keys), max(limit, 0)))
	for _, k := range keys {
		if limit > 0 && len(items) == limit {
			return items, items[len(items)-1].Key, nil
		}
		v, rev, err := Get[T](ctx, kv, k)
		if errors.Is(err, ErrNotFound) {
			continue // deleted while listing
		}
		if err != nil {
			return nil, "", err
		}
		items = append(items, Item[T]{Key: k, Revision: rev, Value: v})
	}
	return items, "", nil
}

// LastToken returns the last dot-separated token of key, unescaped.
func LastToken(key string) string {
	return Untoken(key[strings.LastIndexByte(key, '.')+1:])
}
