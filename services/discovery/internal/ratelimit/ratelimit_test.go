package ratelimit

import "testing"

// Each host has its own bucket: exhausting one leaves the others alone.
func TestPerHost(t *testing.T) {
	t.Parallel()
	h := New(0.001, 1)
	if !h.For("a:5000").Allow() {
		t.Fatal("first request to a refused")
	}
	if h.For("a:5000").Allow() {
		t.Fatal("second request to a allowed beyond the burst")
	}
	if !h.For("b:5000").Allow() {
		t.Fatal("b throttled by a's requests")
	}
	if !New(0, 1).For("c").Allow() || !New(-1, 1).For("c").Allow() {
		t.Fatal("unlimited limiter refused")
	}
}
