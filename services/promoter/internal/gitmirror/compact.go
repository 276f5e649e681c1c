package gitmirror

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// A mirror gathers packs and loose objects as it lives: every fetch that
// brings something adds a pack, every push it records adds loose objects,
// and every object read looks in each pack. Past these bounds the fetch
// that crossed them writes the packs beside the largest (the clone's) and
// the loose objects as one pack, and removes what that pack replaces: the
// work is the size of what came since the clone, never the repository's.
const (
	maxPacks = 32   // packs beside the largest
	maxLoose = 2048 // loose objects
	// maxCompactPack is the largest pack rewritten: a bigger one (a
	// fetch that brought much) stays as it is, so the work and the memory
	// of a compaction stay small.
	maxCompactPack = 16 << 20
	// compactWindow is the delta window of the pack written (git's
	// default).
	compactWindow = 10
)

// compact writes the mirror's small packs (all but the largest and any
// over maxCompactPack) and its loose objects as one pack when there are
// more of them than maxPacks or maxLoose, then removes the packs and
// objects it replaced (fetchMu held). Readers never wait: the store's pack set is replaced before a file is removed, and a
// read that fails because its file went reads again from the new set.
func (mi *Mirror) compact() error {
	packs := *mi.store.packs.Load()
	largest, most := -1, int64(-1)
	for i, p := range packs {
		if n, _ := p.idx.Count(); n > most {
			largest, most = i, n
		}
	}
	var small []*pack
	for i, p := range packs {
		if i != largest && p.size <= maxCompactPack {
			small = append(small, p)
		}
	}
	if len(small) <= mi.manager.maxPacks && mi.loose <= mi.manager.maxLoose {
		return nil
	}
	start := time.Now()
	seen := map[plumbing.Hash]struct{}{}
	var hashes []plumbing.Hash
	add := func(h plumbing.Hash) {
		if _, ok := seen[h]; !ok {
			seen[h] = struct{}{}
			hashes = append(hashes, h)
		}
	}
	for _, p := range small {
		entries, err := p.idx.Entries()
		if err != nil {
			return fmt.Errorf("list pack %s: %w", p.hash, err)
		}
		for {
			e, err := entries.Next()
			if err != nil {
				break // io.EOF: every entry read
			}
			add(e.Hash)
		}
		_ = entries.Close()
	}
	los, ok := mi.repo.Storer.(storer.LooseObjectStorer)
	if !ok {
		return errors.New("mirror storage keeps no loose objects")
	}
	var loose []plumbing.Hash
	if err := los.ForEachObjectHash(func(h plumbing.Hash) error {
		loose = append(loose, h)
		add(h)
		return nil
	}); err != nil {
		return fmt.Errorf("list loose objects: %w", err)
	}
	if len(hashes) == 0 {
		mi.loose = 0
		return nil
	}

	pw, ok := mi.repo.Storer.(storer.PackfileWriter)
	if !ok {
		return errors.New("mirror storage writes no packs")
	}
	w, err := pw.PackfileWriter()
	if err != nil {
		return fmt.Errorf("start pack: %w", err)
	}
	written, err := packfile.NewEncoder(w, mi.repo.Storer, false).Encode(hashes, compactWindow)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write pack of %d objects: %w", len(hashes), err)
	}

	// The new set (the new pack in, the replaced ones out) is in place
	// before a file goes.
	if _, err := mi.store.reload(); err != nil {
		return err
	}
	gone := map[plumbing.Hash]bool{}
	for _, p := range small {
		if p.hash != written {
			gone[p.hash] = true
		}
	}
	mi.store.retire(gone)
	pos, ok := mi.repo.Storer.(storer.PackedObjectStorer)
	if !ok {
		return errors.New("mirror storage keeps no packs")
	}
	var errs []error
	for h := range gone {
		if err := pos.DeleteOldObjectPackAndIndex(h, time.Time{}); err != nil {
			errs = append(errs, fmt.Errorf("remove pack %s: %w", h, err))
		}
	}
	for _, h := range loose {
		if err := los.DeleteLooseObject(h); err != nil {
			errs = append(errs, fmt.Errorf("remove loose object %s: %w", h, err))
		}
	}
	if ri, ok := mi.repo.Storer.(interface{ Reindex() }); ok {
		ri.Reindex() // go-git's own index of packs
	}
	mi.loose = 0
	size, _ := dirUsage(mi.dir)
	mi.size.Store(size)
	mi.measured = time.Now()
	mi.manager.log.Debug("git mirror compacted", "repo", mi.url, "packs", len(small), "loose", len(loose), "objects", len(hashes), "pack", written, "bytes", size, "took", time.Since(start))
	return errors.Join(errs...)
}

// retire replaces the pack set with one without the packs gone names and
// closes their idle readers (a reader in use keeps its open file, which
// outlives the file's removal).
func (s *objectStore) retire(gone map[plumbing.Hash]bool) {
	cur := *s.packs.Load()
	next := make([]*pack, 0, len(cur))
	var old []*pack
	for _, p := range cur {
		if gone[p.hash] {
			old = append(old, p)
		} else {
			next = append(next, p)
		}
	}
	s.packs.Store(&next)
	closePacks(old)
}
