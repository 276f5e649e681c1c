package images

import (
	"sync"
	"time"
)

// metadata is what discovery learns about an immutable manifest (by
// digest, for one platform): whether it offers the platform and when it
// was built. A digest never changes content, so entries never go stale.
type metadata struct {
	match   bool
	created time.Time
	// hasCreated: created was read from the config blob (NewestBuild and
	// platform checks need it; other strategies do not fetch it).
	hasCreated bool
}

// cache maps keys to values, holding at most size entries (random
// eviction beyond that): "<digest>|<platform>" to metadata, and
// "<repository>:<tag>" to the digest last seen for a tag.
type cache[V any] struct {
	mu      sync.Mutex
	size    int
	entries map[string]V
}

func newCache[V any](size int) *cache[V] {
	return &cache[V]{size: max(size, 1), entries: map[string]V{}}
}

func (c *cache[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.entries[key]
	return m, ok
}

func (c *cache[V]) put(key string, m V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.size {
		for k := range c.entries { // map order is random: random eviction
			delete(c.entries, k)
			break
		}
	}
	c.entries[key] = m
}

// Len is the number of cached entries.
func (c *cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
