// Package ratelimit limits the request rate to each remote host separately:
// one slow or strict registry never throttles the others.
package ratelimit

import (
	"net/http"
	"sync"

	"golang.org/x/time/rate"
)

// Hosts hands out one token bucket per host. It is safe for concurrent use.
type Hosts struct {
	rps   float64
	burst int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

// New returns per-host limiters allowing rps requests a second with bursts
// of burst (burst < 1: one). rps <= 0 disables limiting.
func New(rps float64, burst int) *Hosts {
	return &Hosts{rps: rps, burst: max(burst, 1), limiters: map[string]*rate.Limiter{}}
}

// For returns host's limiter.
func (h *Hosts) For(host string) *rate.Limiter {
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.limiters[host]
	if !ok {
		limit := rate.Limit(h.rps)
		if h.rps <= 0 {
			limit = rate.Inf
		}
		l = rate.NewLimiter(limit, h.burst)
		h.limiters[host] = l
	}
	return l
}

// Transport waits for a token of the request's host before each request.
type Transport struct {
	Hosts *Hosts
	Base  http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.Hosts.For(req.URL.Host).Wait(req.Context()); err != nil {
		return nil, err
	}
	return t.Base.RoundTrip(req)
}
