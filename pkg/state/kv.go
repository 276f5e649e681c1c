package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
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

// Get decodes the JSON value at key and returns its revision. On a
// replicated bucket of a Store it reads from the stream leader, so it sees
// every write acknowledged before it began.
func Get[T any](ctx context.Context, kv KV, key string) (T, uint64, error) {
	var v T
	raw, rev, err := getRaw(ctx, kv, key)
	if err != nil {
		return v, 0, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, 0, fmt.Errorf("decode %s %s: %w", kv.Bucket(), key, err)
	}
	return v, rev, nil
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
//
// A write whose outcome is unknown (a timeout, the stream leader changing)
// is not reported as an error while ctx lives: Update reads again (from
// the leader on a replicated bucket) and, unless the value stored is the
// one it wrote, calls fn again on what it finds. fn therefore sees the
// latest acknowledged value on every call and may see its own earlier
// write: make it idempotent (applying it to its own result changes
// nothing), as every caller in Caravan is.
func Update[T any](ctx context.Context, kv KV, key string, fn func(cur T, exists bool) (T, error)) (T, uint64, error) {
	return UpdateRev(ctx, kv, key, func(cur T, rev uint64) (T, error) { return fn(cur, rev > 0) })
}

// UpdateRev is Update with the revision of the entry fn is given (0 when
// the key is absent) instead of a presence flag: leases derive their
// fencing tokens from it.
func UpdateRev[T any](ctx context.Context, kv KV, key string, fn func(cur T, rev uint64) (T, error)) (T, uint64, error) {
	const maxAttempts = 1000
	var unsure []byte      // the value of a write whose outcome is unknown
	var troubled time.Time // when the first transient error was seen
	patient := func(err error) bool {
		if !transient(ctx, err) {
			return false
		}
		if troubled.IsZero() {
			troubled = time.Now()
		}
		if time.Since(troubled) >= TransientPatience {
			return false
		}
		// A leader election: do not spin.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		return true
	}
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, OpTimeout)
		raw, rev, err := getRaw(actx, kv, key)
		cancel()
		if err != nil && !errors.Is(err, ErrNotFound) {
			if patient(err) && attempt < maxAttempts {
				if werr := wait(ctx, attempt); werr != nil {
					return *new(T), 0, fmt.Errorf("update %s %s: %w", kv.Bucket(), key, werr)
				}
				continue
			}
			return *new(T), 0, err
		}
		var cur T
		if rev > 0 {
			if err := json.Unmarshal(raw, &cur); err != nil {
				return cur, rev, fmt.Errorf("decode %s %s: %w", kv.Bucket(), key, err)
			}
		}
		if unsure != nil && rev > 0 && bytes.Equal(raw, unsure) {
			// The write whose answer was lost landed.
			return cur, rev, nil
		}
		unsure = nil
		next, err := fn(cur, rev)
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
		actx, cancel = context.WithTimeout(ctx, OpTimeout)
		if rev > 0 {
			newRev, err = kv.Update(actx, key, b, rev)
		} else {
			newRev, err = kv.Create(actx, key, b)
		}
		cancel()
		if err == nil {
			return next, newRev, nil
		}
		switch {
		case attempt == maxAttempts:
			if isConflict(err) {
				return cur, rev, fmt.Errorf("update %s %s: %w after %d attempts", kv.Bucket(), key, ErrConflict, attempt)
			}
			return cur, rev, fmt.Errorf("update %s %s: %w", kv.Bucket(), key, err)
		case isConflict(err):
		case patient(err):
			// The write may have landed: the next read tells.
			unsure = b
		default:
			return cur, rev, fmt.Errorf("update %s %s: %w", kv.Bucket(), key, err)
		}
		if err := wait(ctx, attempt); err != nil {
			return cur, rev, fmt.Errorf("update %s %s: %w", kv.Bucket(), key, err)
		}
	}
}

// OpTimeout bounds each read and write Update makes: a request in flight
// to a stream leader that goes away would otherwise wait for all of ctx.
var OpTimeout = 5 * time.Second

// TransientPatience is how long Update keeps trying through transient
// errors (a stream leader election takes up to several seconds) before it
// returns one.
var TransientPatience = 30 * time.Second

// wait backs off a little before attempt+1, with jitter, so contending
// writers spread out.
func wait(ctx context.Context, attempt int) error {
	delay := time.Duration(rand.Int64N(int64(min(attempt, 20))*int64(time.Millisecond) + 1))
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(delay):
		return nil
	}
}

// getRaw reads key's value and revision (0 and ErrNotFound when absent).
func getRaw(ctx context.Context, kv KV, key string) ([]byte, uint64, error) {
	e, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil, 0, fmt.Errorf("%s %s: %w", kv.Bucket(), key, ErrNotFound)
		}
		return nil, 0, fmt.Errorf("get %s %s: %w", kv.Bucket(), key, err)
	}
	return e.Value(), e.Revision(), nil
}

// isConflict reports a compare-and-set that lost: the entry is not at the
// revision written against. A replicated stream reports it with another
// error code (10164) than a single server (10071).
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// transient reports an error after which a write may or may not have
// landed and trying again is right: a timeout (while ctx lives), no stream
// leader for now, the cluster busy electing one, the connection
// reconnecting.
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case clusterNotAvailable, clusterNotLeader, lastSeqNotReady:
			return true
		}
	}
	return false
}

// JetStream API error codes of a cluster between leaders.
const (
	clusterNotAvailable jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	clusterNotLeader    jetstream.ErrorCode = 10009 // JetStream cluster can not handle request
	lastSeqNotReady     jetstream.ErrorCode = 10163 // expected last sequence per subject temporarily unavailable
)

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
