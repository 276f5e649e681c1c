package gitmirror

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

// A mirror that fetches and records pushes for long keeps few packs and
// loose objects: past the limits a fetch writes the packs beside the
// clone's and the loose objects as one pack, and removes them. Reads that
// run meanwhile all succeed, and every commit stays readable.
func TestMirrorCompacts(t *testing.T) {
	t.Parallel()
	files := map[string]string{}
	for i := range 50 {
		files[fmt.Sprintf("base/f%02d.txt", i)] = strings.Repeat(fmt.Sprintf("line %d\n", i), 50)
	}
	f := newRepoFixture(t, files)
	f.m.maxPacks, f.m.maxLoose = 3, 6
	first := f.checkout(t, CheckoutOptions{Branch: "main"})
	mi := first.mirror
	clonePacks := packFiles(t, mi.dir)
	if len(clonePacks) != 1 {
		t.Fatalf("after the clone: packs %v, want one", clonePacks)
	}

	// Readers going through every commit the mirror has, all the while.
	var commits atomic.Pointer[[]plumbing.Hash]
	commits.Store(&[]plumbing.Hash{first.Head()})
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var reads atomic.Int64
	readErrs := make(chan error, 100)
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, h := range *commits.Load() {
					mi.store.cache.Clear() // read from the packs every time
					if _, err := mi.store.get(h); err != nil {
						readErrs <- fmt.Errorf("read commit %s: %w", h, err)
						return
					}
					if !mi.store.has(h) {
						readErrs <- fmt.Errorf("commit %s not found", h)
						return
					}
					reads.Add(1)
				}
			}
		})
	}

	var all []plumbing.Hash
	for i := range 9 {
		// Another writer: the next fetch adds a pack.
		all = append(all, plumbing.NewHash(f.git.Seed(t, "app", map[string]string{fmt.Sprintf("up/%d.txt", i): fmt.Sprint(i)}, fmt.Sprint("upstream ", i))))
		// A push of this process: recorded as loose objects.
		r := f.checkout(t, CheckoutOptions{Branch: "main"})
		write(t, r, fmt.Sprintf("ours/%d.txt", i), fmt.Sprint(i))
		commit(t, r, fmt.Sprint("ours ", i))
		pushed, err := r.Push(t.Context(), "main", false, 5)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, pushed)
		snapshot := append([]plumbing.Hash{first.Head()}, all...)
		commits.Store(&snapshot)
		if packs := packFiles(t, mi.dir); len(packs) > f.m.maxPacks+2 {
			t.Errorf("round %d: %d packs, want at most %d", i, len(packs), f.m.maxPacks+2)
		}
		if n := looseObjects(t, mi.dir); n > f.m.maxLoose+8 {
			t.Errorf("round %d: %d loose objects, want at most about %d", i, n, f.m.maxLoose)
		}
	}
	close(stop)
	readers.Wait()
	close(readErrs)
	for err := range readErrs {
		t.Error(err)
	}
	if reads.Load() == 0 {
		t.Error("no reads ran beside the fetches")
	}
	packs := packFiles(t, mi.dir)
	if !strings.Contains(strings.Join(packs, ","), clonePacks[0]) {
		t.Errorf("the clone's pack %s was rewritten: packs now %v", clonePacks[0], packs)
	}
	if len(packs) > f.m.maxPacks+1 {
		t.Errorf("%d packs at the end, want at most %d", len(packs), f.m.maxPacks+1)
	}
	// Every commit checks out from what is left, and a fresh process
	// reads the mirror as it is on disk.
	m2, err := NewManager(filepath.Dir(mi.dir), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Manager{f.m, m2} {
		mi, err := m.Sync(t.Context(), "demo", f.url, f.auth)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range all {
			r, err := mi.Checkout(t.Context(), t.TempDir(), CheckoutOptions{Commit: h.String()})
			if err != nil {
				t.Fatalf("checkout %s: %v", h, err)
			}
			r.Close()
		}
	}
}

func packFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "objects", "pack", "pack-*.pack"))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	return names
}

func looseObjects(t *testing.T, dir string) int {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "objects", "[0-9a-f][0-9a-f]", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return len(names)
}

// BenchmarkReadAfterCompaction reads every object of a mirror that has
// fetched 256 times (256 packs beside the clone's), then compacts it and
// reads them again: the read time per object before and after (the
// baseline is the same mirror uncompacted, in the same run) and what the
// compaction took.
func BenchmarkReadAfterCompaction(b *testing.B) {
	const fetches = 256
	files := map[string]string{}
	for i := range 200 {
		files[fmt.Sprintf("base/f%03d.txt", i)] = strings.Repeat(fmt.Sprintf("line %d\n", i), 100)
	}
	g := testenv.GitServer(b)
	url := g.CreateRepo(b, "app")
	g.Seed(b, "app", files, "init")
	m, err := NewManager(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	m.maxPacks, m.maxLoose = 1<<20, 1<<20 // none until asked
	mi, err := m.Sync(b.Context(), "demo", url, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range fetches {
		g.Seed(b, "app", map[string]string{fmt.Sprintf("up/%d.txt", i): fmt.Sprint(i)}, fmt.Sprint("upstream ", i))
		if _, err := m.Sync(b.Context(), "demo", url, nil); err != nil {
			b.Fatal(err)
		}
	}
	var hashes []plumbing.Hash
	for _, p := range *mi.store.packs.Load() {
		entries, err := p.idx.Entries()
		if err != nil {
			b.Fatal(err)
		}
		for e, err := entries.Next(); err == nil; e, err = entries.Next() {
			hashes = append(hashes, e.Hash)
		}
	}
	readAll := func() time.Duration {
		mi.store.cache.Clear()
		start := time.Now()
		for _, h := range hashes {
			if _, err := mi.store.get(h); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	var before, after, compaction time.Duration
	packsBefore := len(*mi.store.packs.Load())
	for b.Loop() {
		before += readAll()
	}
	mi.fetchMu.Lock()
	m.maxPacks, m.maxLoose = maxPacks, maxLoose
	start := time.Now()
	err = mi.compact()
	compaction = time.Since(start)
	mi.fetchMu.Unlock()
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		after += readAll()
	}
	n := float64(b.N) * float64(len(hashes))
	b.ReportMetric(float64(packsBefore), "packs-before")
	b.ReportMetric(float64(len(*mi.store.packs.Load())), "packs-after")
	b.ReportMetric(float64(before.Nanoseconds())/n, "ns/read-before")
	b.ReportMetric(float64(after.Nanoseconds())/n, "ns/read-after")
	b.ReportMetric(float64(after)/float64(before), "ratio")
	b.ReportMetric(float64(compaction.Milliseconds()), "compaction-ms")
}
