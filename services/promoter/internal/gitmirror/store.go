package gitmirror

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/objfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// objectStore reads a mirror's objects without a lock: go-git's filesystem
// storage is not safe for concurrent use, so the mirror's packs are read
// here instead, each read with its own pack reader over an immutable index.
// The set of packs is a snapshot replaced after a fetch (under the fetch
// lock); readers never wait for a fetch.
type objectStore struct {
	dir   string
	cache mirrorCache
	packs atomic.Pointer[[]*pack]

	// recent holds objects this process pushed since the last fetch, so
	// that the next push to the branch can build on them at once.
	recentMu sync.RWMutex
	recent   map[plumbing.Hash]plumbing.EncodedObject
}

// pack is one pack file and its index. Readers take a pack reader from
// free (or open one) and give it back.
type pack struct {
	hash plumbing.Hash
	path string
	size int64 // of the pack file
	idx  *idxfile.MemoryIndex
	free chan *packReader
	// files are open handles of the pack file for readWhole (positioned
	// reads: one handle serves several readers, the pool bounds how many
	// stay open).
	files chan *os.File
}

type packReader struct {
	p    *packfile.Packfile
	uses int
}

// A pack reader remembers the type of every object it read; it is
// dropped after this many reads so that memory stays bounded.
const maxPackReaderUses = 512

func newObjectStore(dir string, c mirrorCache) *objectStore {
	s := &objectStore{dir: dir, cache: c, recent: map[plumbing.Hash]plumbing.EncodedObject{}}
	s.packs.Store(&[]*pack{})
	return s
}

// reload picks up the packs written since the last call and returns the
// disk size of those it found new. It must not run concurrently with
// itself (the mirror calls it under its fetch lock).
func (s *objectStore) reload() (added int64, err error) {
	dir := filepath.Join(s.dir, "objects", "pack")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("list packs: %w", err)
	}
	old := *s.packs.Load()
	have := make(map[plumbing.Hash]*pack, len(old))
	for _, p := range old {
		have[p.hash] = p
	}
	next := make([]*pack, 0, len(entries))
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "pack-") || !strings.HasSuffix(name, ".idx") {
			continue
		}
		h := plumbing.NewHash(strings.TrimSuffix(strings.TrimPrefix(name, "pack-"), ".idx"))
		if h.IsZero() {
			continue
		}
		if p, ok := have[h]; ok {
			next = append(next, p)
			continue
		}
		packPath := filepath.Join(dir, "pack-"+h.String()+".pack")
		fi, err := os.Stat(packPath)
		if err != nil {
			continue // an index being written before its pack
		}
		idx, err := readIndex(filepath.Join(dir, name))
		if err != nil {
			return 0, err
		}
		added += fi.Size()
		if info, err := e.Info(); err == nil {
			added += info.Size()
		}
		next = append(next, &pack{hash: h, path: packPath, size: fi.Size(), idx: idx, free: make(chan *packReader, 4), files: make(chan *os.File, 4)})
	}
	s.packs.Store(&next)
	// What a fetch brought in needs no copy in memory any more.
	s.recentMu.Lock()
	for h := range s.recent {
		if s.inPacks(next, h) {
			delete(s.recent, h)
		}
	}
	s.recentMu.Unlock()
	return added, nil
}

func readIndex(path string) (*idxfile.MemoryIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open pack index: %w", err)
	}
	defer func() { _ = f.Close() }()
	idx := idxfile.NewMemoryIndex()
	if err := idxfile.NewDecoder(f).Decode(idx); err != nil {
		return nil, fmt.Errorf("read pack index %s: %w", filepath.Base(path), err)
	}
	return idx, nil
}

func (s *objectStore) inPacks(packs []*pack, h plumbing.Hash) bool {
	for _, p := range packs {
		if ok, _ := p.idx.Contains(h); ok {
			return true
		}
	}
	return false
}

// has reports whether the mirror (or what this process pushed to it)
// holds h.
func (s *objectStore) has(h plumbing.Hash) bool {
	packs := s.packs.Load()
	if s.hasIn(*packs, h) {
		return true
	}
	// A compaction (compact.go) may have packed a loose object between
	// the two looks: the set it left holds it.
	return s.packs.Load() != packs && s.hasIn(*s.packs.Load(), h)
}

func (s *objectStore) hasIn(packs []*pack, h plumbing.Hash) bool {
	if s.inPacks(packs, h) {
		return true
	}
	s.recentMu.RLock()
	_, ok := s.recent[h]
	s.recentMu.RUnlock()
	if ok {
		return true
	}
	_, err := os.Stat(s.loosePath(h))
	return err == nil
}

// get reads one object. It is safe for concurrent use.
func (s *objectStore) get(h plumbing.Hash) (plumbing.EncodedObject, error) {
	if o, ok := s.cache.Get(h); ok {
		return o, nil
	}
	packs := s.packs.Load()
	o, err := s.getIn(*packs, h)
	if err != nil && s.packs.Load() != packs {
		// A compaction (compact.go) replaced the packs and removed the
		// file this read went to: the set it left holds the object.
		return s.getIn(*s.packs.Load(), h)
	}
	return o, err
}

func (s *objectStore) getIn(packs []*pack, h plumbing.Hash) (plumbing.EncodedObject, error) {
	for _, p := range packs {
		off, err := p.idx.FindOffset(h)
		if err != nil {
			continue
		}
		return s.readPacked(p, h, off)
	}
	s.recentMu.RLock()
	o, ok := s.recent[h]
	s.recentMu.RUnlock()
	if ok {
		return o, nil
	}
	return s.readLoose(h)
}

// readPacked reads the object h at off of p: one stored whole with
// readWhole, a delta with go-git's pack reader.
func (s *objectStore) readPacked(p *pack, h plumbing.Hash, off int64) (plumbing.EncodedObject, error) {
	var f *os.File
	select {
	case f = <-p.files:
	default:
		var err error
		if f, err = os.Open(p.path); err != nil {
			return nil, fmt.Errorf("open pack: %w", err)
		}
	}
	o, whole, err := readWhole(f, h, off)
	select {
	case p.files <- f:
	default:
		_ = f.Close()
	}
	if err != nil {
		return nil, err
	}
	if whole {
		s.cache.Put(o)
		return o, nil
	}
	var r *packReader
	select {
	case r = <-p.free:
	default:
		f, err := osfs.Default.Open(p.path)
		if err != nil {
			return nil, fmt.Errorf("open pack: %w", err)
		}
		// Without a filesystem the reader returns objects in memory.
		r = &packReader{p: packfile.NewPackfileWithCache(p.idx, nil, f, s.cache, 0)}
	}
	o, err = r.p.GetByOffset(off)
	r.uses++
	if err != nil || r.uses >= maxPackReaderUses {
		_ = r.p.Close()
		return o, err
	}
	select {
	case p.free <- r:
	default:
		_ = r.p.Close()
	}
	return o, nil
}

func (s *objectStore) loosePath(h plumbing.Hash) string {
	hex := h.String()
	return filepath.Join(s.dir, "objects", hex[:2], hex[2:])
}

func (s *objectStore) readLoose(h plumbing.Hash) (plumbing.EncodedObject, error) {
	f, err := os.Open(s.loosePath(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, plumbing.ErrObjectNotFound
	}
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	r, err := objfile.NewReader(f)
	if err != nil {
		return nil, err
	}
	defer func() { _ = r.Close() }()
	t, size, err := r.Header()
	if err != nil {
		return nil, err
	}
	o := &plumbing.MemoryObject{}
	o.SetType(t)
	o.SetSize(size)
	if _, err := io.Copy(o, r); err != nil {
		return nil, err
	}
	s.cache.Put(o)
	return o, nil
}

// remember keeps objects this process pushed until a fetch brings them.
func (s *objectStore) remember(objs []plumbing.EncodedObject) {
	s.recentMu.Lock()
	defer s.recentMu.Unlock()
	for _, o := range objs {
		s.recent[o.Hash()] = o
	}
}

// close releases the open pack readers.
func (s *objectStore) close() {
	closePacks(*s.packs.Load())
	s.packs.Store(&[]*pack{})
}

// closePacks closes the idle readers and files of packs.
func closePacks(packs []*pack) {
	for _, p := range packs {
	drain:
		for {
			select {
			case r := <-p.free:
				_ = r.p.Close()
			case f := <-p.files:
				_ = f.Close()
			default:
				break drain
			}
		}
	}
}
