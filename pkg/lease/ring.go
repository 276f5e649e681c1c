package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/state"
)

// MembersToken is the first key token under which the replicas of a Ring
// keep their heartbeats (<token>.<replica id>). Keys a Ring shares out must
// not begin with it (project names cannot start with "_").
const MembersToken = "_replicas"

// Ring shares keys (Warehouses, say) out among the live replicas of a
// service without a per-key renewal:
//
//   - Membership. Each replica keeps one heartbeat record (a Record at
//     MembersToken.<id>, expiring ttl after it was written) and renews it
//     every third of the ttl. Every replica watches the heartbeats, so it
//     knows the live replicas without listing anything.
//   - Ownership. A key belongs to the live replica with the highest hash of
//     (replica, key): rendezvous hashing, so a replica joining or leaving
//     moves only its own share of the keys.
//   - Leases. The owner takes a key's lease (a Record at the key) once, with
//     a compare-and-set and a new fencing token, as Leases does; the lease
//     then lives as long as its holder's heartbeat, so holding ten thousand
//     keys costs one write per renewal period. A replica takes a lease
//     another holds only once that holder's heartbeat expired (or the
//     holder released it), and its grant's token fences the previous
//     holder's writes off (Admit).
//
// A replica that cannot renew its heartbeat loses its grants (Grant reports
// none) a third of the ttl before the heartbeat expires, before another
// replica may take over. Ring is safe for concurrent use.
type Ring struct {
	kv     jetstream.KeyValue
	holder string
	ttl    time.Duration
	now    func() time.Time

	mu      sync.Mutex
	members map[string]time.Time // replica ID → heartbeat expiry
	live    []string             // live replicas at the last look, sorted
	grants  map[string]uint64    // key → token this replica holds
	beat    time.Time            // expiry of this replica's last written heartbeat
	beatErr error                // the last heartbeat's error (nil: it succeeded)
	changes chan struct{}
	done    chan struct{}
}

// NewRing returns the ring of holder (a unique replica ID, see Claim) in kv,
// heartbeats lasting ttl. Call Join before using it as a member; a Ring that
// did not join can still tell who holds a key (Current).
func NewRing(kv jetstream.KeyValue, holder string, ttl time.Duration) *Ring {
	return &Ring{
		kv: kv, holder: holder, ttl: ttl, now: time.Now,
		members: map[string]time.Time{}, grants: map[string]uint64{},
		changes: make(chan struct{}, 1),
	}
}

// Holder is this replica's ID.
func (r *Ring) Holder() string { return r.holder }

// TTL is how long a heartbeat lasts without renewal.
func (r *Ring) TTL() time.Duration { return r.ttl }

// memberKey is the heartbeat key of replica id.
func memberKey(id string) string { return state.Key(MembersToken, id) }

// Join writes this replica's first heartbeat and reads the live replicas,
// then renews the heartbeat every third of the ttl and follows the others'
// until ctx ends; Left is closed then. Leave gives the membership up at once.
func (r *Ring) Join(ctx context.Context) error {
	if err := r.heartbeat(ctx); err != nil {
		return fmt.Errorf("join ring: %w", err)
	}
	w, err := r.kv.Watch(ctx, MembersToken+".*")
	if err != nil {
		return fmt.Errorf("join ring: watch replicas: %w", err)
	}
	// The current heartbeats, up to the marker after them.
	for initial := true; initial; {
		select {
		case <-ctx.Done():
			_ = w.Stop()
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("join ring: replica watch closed")
			}
			if e == nil {
				initial = false
				continue
			}
			r.observe(e)
		}
	}
	r.refresh()
	r.done = make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					r.observe(e)
					r.refresh()
				}
			}
		}
	})
	wg.Go(func() {
		t := time.NewTicker(max(r.ttl/3, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_ = r.heartbeat(ctx)
			r.refresh() // heartbeats that expired without a change
		}
	})
	go func() {
		wg.Wait()
		close(r.done)
	}()
	return nil
}

// Left is closed once the goroutines Join started ended (nil before Join).
func (r *Ring) Left() <-chan struct{} { return r.done }

// Leave deletes this replica's heartbeat, so the others take its keys over
// at once instead of after the ttl. Release the keys first.
func (r *Ring) Leave(ctx context.Context) error {
	r.mu.Lock()
	r.beat = time.Time{}
	r.grants = map[string]uint64{}
	r.mu.Unlock()
	return state.Delete(ctx, r.kv, memberKey(r.holder), 0)
}

// heartbeat renews this replica's heartbeat.
func (r *Ring) heartbeat(ctx context.Context) error {
	start := r.now()
	expires := start.Add(r.ttl)
	_, err := state.Put(ctx, r.kv, memberKey(r.holder), Record{Lease: Lease{Holder: r.holder, Expires: expires}})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.beatErr = err
	if err == nil {
		// Counted from before the write: the others may see it that early.
		r.beat = expires
		r.members[r.holder] = expires
	}
	return err
}

// observe notes a heartbeat change seen by the watch.
func (r *Ring) observe(e jetstream.KeyValueEntry) {
	id := state.Untoken(strings.TrimPrefix(e.Key(), MembersToken+"."))
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(r.members, id)
		return
	}
	var rec Record
	if json.Unmarshal(e.Value(), &rec) != nil {
		return
	}
	r.members[id] = rec.Expires
}

// refresh recomputes the live replicas and signals Changes when they
// changed.
func (r *Ring) refresh() {
	now := r.now()
	r.mu.Lock()
	live := make([]string, 0, len(r.members))
	for id, exp := range r.members {
		if now.Before(exp) {
			live = append(live, id)
		}
	}
	sort.Strings(live)
	changed := !equal(live, r.live)
	r.live = live
	r.mu.Unlock()
	if changed {
		select {
		case r.changes <- struct{}{}:
		default:
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Changes receives a value (coalesced) whenever the live replicas change:
// keys may have changed owner. One reader.
func (r *Ring) Changes() <-chan struct{} { return r.changes }

// Live returns the live replicas, sorted.
func (r *Ring) Live() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.live...)
}

// Owner returns the live replica key belongs to ("" when none is live).
func (r *Ring) Owner(key string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Rendezvous(r.live, key)
}

// Rendezvous returns the member of members with the highest hash of
// (member, key) ("" when there are none). Every replica computing it over
// the same members agrees, and removing a member moves only its keys.
func Rendezvous(members []string, key string) string {
	var best string
	var top uint64
	for _, m := range members {
		h := fnv.New64a()
		_, _ = h.Write([]byte(m))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(key))
		s := mix(h.Sum64())
		if best == "" || s > top || s == top && m < best {
			best, top = m, s
		}
	}
	return best
}

// mix spreads FNV's bits (its high bits vary little for similar inputs).
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// Healthy is nil while this replica's heartbeat is renewed in time (its
// grants may be acted on), otherwise why not.
func (r *Ring) Healthy() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.valid(r.now()) {
		return nil
	}
	if r.beatErr != nil {
		return fmt.Errorf("lease heartbeat of %s not renewed: %w", r.holder, r.beatErr)
	}
	return fmt.Errorf("lease heartbeat of %s not renewed since %s", r.holder, r.beat.Add(-r.ttl).UTC().Format(time.RFC3339))
}

// valid reports whether grants may be acted on at now: the heartbeat is a
// third of the ttl or more from its expiry. r.mu held.
func (r *Ring) valid(now time.Time) bool {
	return !r.beat.IsZero() && now.Before(r.beat.Add(-r.ttl/3))
}

// Grant returns this replica's grant on key while it holds the lease and
// its heartbeat is renewed in time.
func (r *Ring) Grant(key string) (Grant, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tok, ok := r.grants[key]
	if !ok || !r.valid(r.now()) {
		return Grant{}, false
	}
	return Grant{Holder: r.holder, Token: tok, Expires: r.beat}, true
}

// Held returns the keys whose lease this replica holds.
func (r *Ring) Held() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.grants))
	for k := range r.grants {
		out = append(out, k)
	}
	return out
}

// alive reports whether replica id's heartbeat is live. The watch may lag
// a write, so a heartbeat that looks expired is read once more.
func (r *Ring) alive(ctx context.Context, id string) (bool, time.Time, error) {
	now := r.now()
	r.mu.Lock()
	exp, ok := r.members[id]
	r.mu.Unlock()
	if ok && now.Before(exp) {
		return true, exp, nil
	}
	rec, _, err := state.Get[Record](ctx, r.kv, memberKey(id))
	if errors.Is(err, state.ErrNotFound) {
		return false, time.Time{}, nil
	}
	if err != nil {
		return false, time.Time{}, err
	}
	return rec.Live(now), rec.Expires, nil
}

// Acquire takes key's lease for this replica: at once when it holds it
// already (no write), with one compare-and-set when it is free, was this
// replica's in an earlier run, or its holder's heartbeat expired. A lease
// another live replica holds gives a HeldError (errors.Is ErrHeld).
func (r *Ring) Acquire(ctx context.Context, key string) (Grant, error) {
	if g, ok := r.Grant(key); ok {
		return g, nil
	}
	r.mu.Lock()
	ok := r.valid(r.now())
	r.mu.Unlock()
	if !ok {
		return Grant{}, fmt.Errorf("lease %s: %w", key, r.Healthy())
	}
	var tok uint64
	_, _, err := state.UpdateRev(ctx, r.kv, key, func(cur Record, rev uint64) (Record, error) {
		if cur.Holder != "" && cur.Holder != r.holder {
			live, exp, err := r.alive(ctx, cur.Holder)
			if err != nil {
				return cur, err
			}
			if live {
				return cur, &HeldError{Holder: cur.Holder, Expires: exp}
			}
		}
		// The lease lives with the holder's heartbeat: no expiry of its own.
		cur.Holder, cur.Token, cur.Expires = r.holder, max(cur.Token, rev)+1, time.Time{}
		tok = cur.Token
		return cur, nil
	})
	if err != nil {
		return Grant{}, err
	}
	r.mu.Lock()
	r.grants[key] = tok
	g := Grant{Holder: r.holder, Token: tok, Expires: r.beat}
	r.mu.Unlock()
	return g, nil
}

// Forget drops this replica's grant on key without writing (its heartbeat
// failed, say: the lease lapses with it).
func (r *Ring) Forget(key string) {
	r.mu.Lock()
	delete(r.grants, key)
	r.mu.Unlock()
}

// Release gives key's lease up if this replica holds it, so its next owner
// takes it at once. The entry keeps its token.
func (r *Ring) Release(ctx context.Context, key string) error {
	r.mu.Lock()
	tok, had := r.grants[key]
	delete(r.grants, key)
	r.mu.Unlock()
	if !had {
		return nil
	}
	_, _, err := state.Update(ctx, r.kv, key, func(cur Record, exists bool) (Record, error) {
		if !exists || cur.Holder != r.holder || cur.Token != tok {
			return cur, state.ErrNoChange
		}
		cur.Holder = ""
		return cur, nil
	})
	if errors.Is(err, state.ErrNoChange) {
		return nil
	}
	return err
}

// Current returns the holder of key's lease whose heartbeat is live (""
// when none). A Ring that did not join may ask.
func (r *Ring) Current(ctx context.Context, key string) (string, error) {
	rec, _, err := state.Get[Record](ctx, r.kv, key)
	if errors.Is(err, state.ErrNotFound) {
		return "", nil
	}
	if err != nil || rec.Holder == "" {
		return "", err
	}
	live, _, err := r.alive(ctx, rec.Holder)
	if err != nil || !live {
		return "", err
	}
	return rec.Holder, nil
}
