package gitmirror

import (
	"container/list"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
)

// objectCache keeps decoded objects of every mirror in memory, least
// recently used first out, within one byte budget. It is safe for
// concurrent use. Entries are keyed by mirror as well as by hash: one
// mirror never answers a read with an object another mirror loaded, so a
// project cannot read another's objects by naming their hashes.
type objectCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	ll    *list.List
	items map[cacheKey]*list.Element
}

type cacheKey struct {
	mirror uint64
	hash   plumbing.Hash
}

type cacheEntry struct {
	key cacheKey
	obj plumbing.EncodedObject
}

func newObjectCache(maxBytes int64) *objectCache {
	return &objectCache{max: maxBytes, ll: list.New(), items: map[cacheKey]*list.Element{}}
}

func (c *objectCache) get(k cacheKey) (plumbing.EncodedObject, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*cacheEntry).obj, true
}

func (c *objectCache) put(k cacheKey, o plumbing.EncodedObject) {
	n := o.Size()
	if n > c.max/4 {
		return // one object would push out too many others
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.ll.MoveToFront(e)
		return
	}
	c.items[k] = c.ll.PushFront(&cacheEntry{key: k, obj: o})
	c.size += n
	for c.size > c.max {
		last := c.ll.Back()
		if last == nil {
			break
		}
		c.remove(last)
	}
}

func (c *objectCache) remove(e *list.Element) {
	ce := e.Value.(*cacheEntry)
	c.ll.Remove(e)
	delete(c.items, ce.key)
	c.size -= ce.obj.Size()
}

// purge drops every entry of one mirror.
func (c *objectCache) purge(mirror uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.ll.Front(); e != nil; {
		next := e.Next()
		if e.Value.(*cacheEntry).key.mirror == mirror {
			c.remove(e)
		}
		e = next
	}
}

// bytes is the size of the cached objects.
func (c *objectCache) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// mirrorCache is one mirror's view of the shared cache, in the form go-git's
// pack reader takes.
type mirrorCache struct {
	c  *objectCache
	id uint64
}

var _ cache.Object = mirrorCache{}

func (m mirrorCache) Put(o plumbing.EncodedObject) { m.c.put(cacheKey{m.id, o.Hash()}, o) }

func (m mirrorCache) Get(h plumbing.Hash) (plumbing.EncodedObject, bool) {
	return m.c.get(cacheKey{m.id, h})
}

func (m mirrorCache) Clear() { m.c.purge(m.id) }
