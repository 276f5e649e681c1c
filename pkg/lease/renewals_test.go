package lease

import (
	"errors"
	"testing"
	"time"
)

// Leases work while writes land or the last success is younger than the
// TTL; an answer that the lease is someone else's is not a failure.
func TestRenewals(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	r := NewRenewals(time.Second)
	r.now = func() time.Time { return now }
	if r.Healthy() != nil {
		t.Fatal("unhealthy before any write")
	}
	down := errors.New("nats: timeout")
	for _, tc := range []struct {
		name    string
		advance time.Duration
		record  error
		healthy bool
	}{
		{"a success", 0, nil, true},
		{"a failure within the ttl", 500 * time.Millisecond, down, true},
		{"failing past the ttl", 600 * time.Millisecond, down, false},
		{"held by another replica: the store answered", 0, &HeldError{Holder: "b"}, true},
		{"failing again, within the ttl", 900 * time.Millisecond, down, true},
		{"still failing past it", 200 * time.Millisecond, down, false},
	} {
		now = now.Add(tc.advance)
		r.Record(tc.record)
		if err := r.Healthy(); (err == nil) != tc.healthy {
			t.Fatalf("%s: Healthy() = %v", tc.name, err)
		}
	}
	var none *Renewals
	none.Record(down)
	if none.Healthy() != nil {
		t.Fatal("a nil tracker is unhealthy")
	}
}
