package lease_test

import (
	"errors"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/lease"
)

func TestLeaseRules(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ttl := 10 * time.Second
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"a free lease is taken with a token above the entry's revision", func(t *testing.T) {
			var l lease.Lease
			g, err := l.Take("a", 41, ttl, now)
			if err != nil || g.Token != 42 || l.Holder != "a" || !l.Held(g) {
				t.Fatalf("take: %+v %+v %v", g, l, err)
			}
		}},
		{"a live lease of another holder is refused with the holder", func(t *testing.T) {
			l := lease.Lease{Holder: "b", Token: 3, Expires: now.Add(time.Second)}
			_, err := l.Take("a", 5, ttl, now)
			var held *lease.HeldError
			if !errors.Is(err, lease.ErrHeld) || !errors.As(err, &held) || held.Holder != "b" {
				t.Fatalf("take a held lease: %v", err)
			}
		}},
		{"an expired lease is taken with a higher token, fencing the old grant", func(t *testing.T) {
			l := lease.Lease{Holder: "b", Token: 7, Expires: now.Add(-time.Second)}
			old := lease.Grant{Holder: "b", Token: 7}
			g, err := l.Take("a", 3, ttl, now)
			if err != nil || g.Token != 8 {
				t.Fatalf("take: %+v %v", g, err)
			}
			if err := l.Check(old); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("old grant still checks: %v", err)
			}
			if _, err := l.Renew(old, ttl, now); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("old grant renewed: %v", err)
			}
		}},
		{"the same holder restarted takes its lease anew", func(t *testing.T) {
			l := lease.Lease{Holder: "a", Token: 9, Expires: now.Add(time.Hour)}
			g, err := l.Take("a", 2, ttl, now)
			if err != nil || g.Token != 10 {
				t.Fatalf("take: %+v %v", g, err)
			}
		}},
		{"a renewal keeps the token; a lapsed lease nobody took renews", func(t *testing.T) {
			var l lease.Lease
			g, _ := l.Take("a", 0, ttl, now)
			g2, err := l.Renew(g, ttl, now.Add(time.Minute))
			if err != nil || g2.Token != g.Token || !g2.Expires.Equal(now.Add(time.Minute+ttl)) {
				t.Fatalf("renew: %+v %v", g2, err)
			}
		}},
		{"a release keeps the token for the next grant", func(t *testing.T) {
			var l lease.Lease
			g, _ := l.Take("a", 0, ttl, now)
			if !l.Release(g) || l.Holder != "" || l.Token != g.Token {
				t.Fatalf("release: %+v", l)
			}
			g2, _ := l.Take("b", 0, ttl, now)
			if g2.Token <= g.Token {
				t.Fatalf("token after release %d, before %d", g2.Token, g.Token)
			}
			if l.Release(g) {
				t.Fatal("a stale grant released the lease")
			}
		}},
		{"admit refuses a write under an older token", func(t *testing.T) {
			var fence uint64
			if err := lease.Admit(&fence, lease.Grant{Token: 4}); err != nil || fence != 4 {
				t.Fatalf("admit: %d %v", fence, err)
			}
			if err := lease.Admit(&fence, lease.Grant{Token: 4}); err != nil {
				t.Fatalf("admit same token: %v", err)
			}
			if err := lease.Admit(&fence, lease.Grant{Token: 3}); !errors.Is(err, lease.ErrFenced) || fence != 4 {
				t.Fatalf("admit older: %d %v", fence, err)
			}
		}},
		{"a grant is valid until its expiry less the margin", func(t *testing.T) {
			g := lease.Grant{Token: 1, Expires: now.Add(10 * time.Second)}
			if !g.Valid(now, 5*time.Second) || g.Valid(now.Add(6*time.Second), 5*time.Second) || (lease.Grant{}).Valid(now, 0) {
				t.Fatal("validity")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t)
		})
	}
}
