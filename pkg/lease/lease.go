// Package lease gives one replica at a time the right to work something:
// a Warehouse (discovery), a stage's promotion queue (promoter), a
// verification (verifier), a periodic job. It is Caravan's one lease
// implementation.
//
// A lease is a value (Lease) kept in a KV entry: on its own (Leases, a
// record per key) or embedded in the record it guards (a stage's queue
// record, a verification record). Every change is a compare-and-set
// (state.UpdateRev), so replicas agree on the holder.
//
// Fencing. Every time a lease changes hands it gets a new token, higher
// than any before it on that entry (the entry's revision, which JetStream
// never reuses, or the previous token, plus one). The holder keeps its
// Grant and makes every write conditional on it: to the lease's own record
// with Lease.Check, to other records with Admit, which refuses a write
// carrying an older token than the last one the record took. A replica
// that paused or was partitioned past its lease's expiry therefore cannot
// write once another took over and wrote: it gets ErrLost or ErrFenced.
//
// Expiry compares wall clocks, so replicas' clocks must agree to well
// within the TTLs. A holder renews every third of the TTL and gives up
// (stops acting) when it could not renew for two thirds of it.
package lease

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors.
var (
	// ErrHeld: another holder has a live lease.
	ErrHeld = errors.New("lease held by another replica")
	// ErrLost: the caller's grant is no longer the lease's (it expired and
	// another replica took it, or it was released).
	ErrLost = errors.New("lease lost")
	// ErrFenced: the record was written under a newer grant than the
	// caller's.
	ErrFenced = errors.New("fenced off: a newer lease holder wrote this record")
)

// HeldError is ErrHeld with the holder.
type HeldError struct {
	Holder  string
	Expires time.Time
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%s: %s until %s", ErrHeld, e.Holder, e.Expires.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrHeld) true.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Lease is the lease part of a record.
type Lease struct {
	// Holder is the replica ID of the holder ("" when free).
	Holder string `json:"holder,omitempty"`
	// Token is the fencing token of the current (or last) grant.
	Token uint64 `json:"token,omitempty"`
	// Expires is when the holder's lease lapses unless renewed.
	Expires time.Time `json:"expires,omitzero"`
}

// Grant is what a holder keeps of a lease it took: its writes carry the
// token.
type Grant struct {
	Holder  string
	Token   uint64
	Expires time.Time
}

// Valid reports whether the grant may still be acted on at now, keeping
// margin before its expiry (a holder that could not renew stops early).
func (g Grant) Valid(now time.Time, margin time.Duration) bool {
	return g.Token != 0 && now.Before(g.Expires.Add(-margin))
}

// Live reports whether someone holds the lease at now.
func (l Lease) Live(now time.Time) bool { return l.Holder != "" && now.Before(l.Expires) }

// Held reports whether g is the lease's current grant.
func (l Lease) Held(g Grant) bool { return g.Token != 0 && l.Holder == g.Holder && l.Token == g.Token }

// Check returns ErrLost unless g is the lease's current grant.
func (l Lease) Check(g Grant) error {
	if !l.Held(g) {
		return fmt.Errorf("%w (now %q, token %d; ours %d)", ErrLost, l.Holder, l.Token, g.Token)
	}
	return nil
}

// Take gives the lease to holder until now+ttl with a new token, unless
// another holder's lease is live (a HeldError). A lease holder holds
// already is taken anew: that is an earlier run of the same replica (a
// restart; two live processes with one replica ID are refused at start,
// see Claim), and the new token fences the earlier run's writes off. rev is
// the revision of the entry the lease is read from (0 when absent): the
// token is above both it and the previous token, so tokens only grow, even
// when the entry is deleted and written again.
func (l *Lease) Take(holder string, rev uint64, ttl time.Duration, now time.Time) (Grant, error) {
	if l.Live(now) && l.Holder != holder {
		return Grant{}, &HeldError{Holder: l.Holder, Expires: l.Expires}
	}
	l.Holder, l.Token, l.Expires = holder, max(l.Token, rev)+1, now.Add(ttl)
	return Grant{Holder: holder, Token: l.Token, Expires: l.Expires}, nil
}

// Renew extends g's lease until now+ttl (ErrLost when g is not the
// current grant). A lapsed lease nobody took is renewed: nobody else
// wrote under it.
func (l *Lease) Renew(g Grant, ttl time.Duration, now time.Time) (Grant, error) {
	if err := l.Check(g); err != nil {
		return g, err
	}
	l.Expires = now.Add(ttl)
	g.Expires = l.Expires
	return g, nil
}

// Release frees the lease if g holds it, keeping the token so the next
// grant's is higher; false when g did not hold it.
func (l *Lease) Release(g Grant) bool {
	if !l.Held(g) {
		return false
	}
	l.Holder, l.Expires = "", time.Time{}
	return true
}

// Admit fences a write to a record other than the lease's own: fence is
// the record's token of its last write under this lease (0 when none). A
// write under an older grant gets ErrFenced; otherwise the record takes
// g's token.
func Admit(fence *uint64, g Grant) error {
	if *fence > g.Token {
		return fmt.Errorf("%w (record at token %d, ours %d)", ErrFenced, *fence, g.Token)
	}
	*fence = g.Token
	return nil
}
