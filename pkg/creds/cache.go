package creds

import (
	"context"
	"sync"
	"time"
)

// maxMargin is how long before its expiry a cached token is replaced; a
// token living less than twice that is replaced halfway through its life.
const maxMargin = 5 * time.Minute

// token is an exchanged credential and when it stops working.
type token struct {
	username, password string
	expires            time.Time
}

// tokenCache keeps exchanged tokens by the identity of what they were
// exchanged for, until shortly before they expire. Concurrent callers of
// one key share one exchange.
type tokenCache struct {
	now func() time.Time

	mu      sync.Mutex
	entries map[string]*cacheEntry
}

type cacheEntry struct {
	mu      sync.Mutex // held during an exchange
	tok     token
	refresh time.Time // when tok is to be replaced
}

func newTokenCache(now func() time.Time) *tokenCache {
	return &tokenCache{now: now, entries: map[string]*cacheEntry{}}
}

// get returns the cached token of key, or the one exchange returns (and
// caches it).
func (c *tokenCache) get(ctx context.Context, key string, exchange func(ctx context.Context) (token, error)) (token, error) {
	c.mu.Lock()
	e, ok := c.entries[key]
	if !ok {
		e = &cacheEntry{}
		c.entries[key] = e
	}
	c.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	now := c.now()
	if e.tok.password != "" && now.Before(e.refresh) {
		return e.tok, nil
	}
	tok, err := exchange(ctx)
	if err != nil {
		return token{}, err
	}
	margin := maxMargin
	if life := tok.expires.Sub(now); life < 2*maxMargin {
		margin = life / 2
	}
	e.tok, e.refresh = tok, tok.expires.Add(-margin)
	return tok, nil
}
