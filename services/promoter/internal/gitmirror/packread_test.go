package gitmirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/klauspost/compress/zlib"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

// TestReadWholeMatchesGoGit reads every object of a mirror's packs (from a
// real git server: blobs, trees, commits, and deltas the server chose)
// with readWhole and with go-git's pack reader: whatever readWhole reads
// is byte for byte what go-git reads, with the hash its content has.
func TestReadWholeMatchesGoGit(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t)
	url := g.CreateRepo(t, "app")
	big := strings.Repeat("a line of a file big enough to be stored as a delta\n", 400)
	for i := range 5 {
		g.Seed(t, "app", map[string]string{
			"big.txt":            big + fmt.Sprintf("revision %d\n", i),
			fmt.Sprintf("%d", i): "small",
			"dir/empty":          "",
		}, fmt.Sprintf("commit %d", i))
	}
	m, err := NewManager(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	mi, err := m.Sync(context.Background(), "demo", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	packs := *mi.store.packs.Load()
	if len(packs) == 0 {
		t.Fatal("the mirror has no pack")
	}
	var whole, deltas int
	for _, p := range packs {
		f, err := os.Open(p.path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		pf, err := osfs.Default.Open(p.path)
		if err != nil {
			t.Fatal(err)
		}
		ref := packfile.NewPackfile(p.idx, nil, pf, 0)
		t.Cleanup(func() { _ = ref.Close() })
		entries, err := p.idx.Entries()
		if err != nil {
			t.Fatal(err)
		}
		for {
			e, err := entries.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got, ok, err := readWhole(f, e.Hash, int64(e.Offset))
			if err != nil {
				t.Fatalf("%s: %v", e.Hash, err)
			}
			if !ok {
				deltas++
				continue
			}
			whole++
			want, err := ref.GetByOffset(int64(e.Offset))
			if err != nil {
				t.Fatal(err)
			}
			gc, wc := content(t, got), content(t, want)
			if got.Type() != want.Type() || got.Size() != want.Size() || !bytes.Equal(gc, wc) {
				t.Fatalf("%s: read %s of %d bytes, go-git %s of %d", e.Hash, got.Type(), got.Size(), want.Type(), want.Size())
			}
			if h := plumbing.ComputeHash(got.Type(), gc); h != e.Hash {
				t.Fatalf("%s: content hashes to %s", e.Hash, h)
			}
		}
	}
	if whole == 0 || deltas == 0 {
		t.Fatalf("%d objects whole, %d deltas: the pack should hold both", whole, deltas)
	}
}

func content(t *testing.T, o plumbing.EncodedObject) []byte {
	t.Helper()
	r, err := o.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadWholeRefusesCorruptObjects: a truncated stream, or one longer
// than its header says, is an error naming the object, not a short read.
func TestReadWholeRefusesCorruptObjects(t *testing.T) {
	t.Parallel()
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	_, _ = zw.Write([]byte("hello, world"))
	_ = zw.Close()
	stream := z.Bytes()
	h := plumbing.ComputeHash(plumbing.BlobObject, []byte("hello, world"))
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"whole":     {append([]byte{0x30 | 12}, stream...), ""},
		"truncated": {append([]byte{0x30 | 12}, stream[:len(stream)-6]...), "inflate object"},
		"longer":    {append([]byte{0x30 | 5}, stream...), "longer than its header says"},
		"shorter":   {append([]byte{0x80 | 0x30 | 12, 1}, stream...), "inflate object"},
		"no header": {nil, "read object"},
	} {
		t.Run(name, func(t *testing.T) {
			path := t.TempDir() + "/pack"
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = f.Close() }()
			o, ok, err := readWhole(f, h, 0)
			if tc.want == "" {
				if err != nil || !ok || string(content(t, o)) != "hello, world" || o.Hash() != h {
					t.Fatalf("got %v %v", ok, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), h.String()) {
				t.Fatalf("error %v, want one naming %s and %q", err, h, tc.want)
			}
		})
	}
}

// BenchmarkReadPacked reads ten 100 KB blobs of a mirror's pack (an
// overlay of the monorepo benchmark) with readWhole beside go-git's pack
// reader in the same run, each without a cache, and reports the ratio.
func BenchmarkReadPacked(b *testing.B) {
	g := testenv.GitServer(b)
	url := g.CreateRepo(b, "app")
	files := map[string]string{}
	for k := range 10 {
		var sb strings.Builder
		for i := 0; sb.Len() < 100<<10; i++ {
			sum := sha256.Sum256(fmt.Appendf(nil, "%d/%d", k, i))
			fmt.Fprintf(&sb, "  key-%05d: %s\n", i, hex.EncodeToString(sum[:12]))
		}
		files[fmt.Sprintf("config-%02d.yaml", k)] = sb.String()
	}
	g.Seed(b, "app", files, "overlay")
	m, err := NewManager(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	mi, err := m.Sync(context.Background(), "demo", url, nil)
	if err != nil {
		b.Fatal(err)
	}
	p := (*mi.store.packs.Load())[0]
	var offsets []int64
	var hashes []plumbing.Hash
	entries, err := p.idx.Entries()
	if err != nil {
		b.Fatal(err)
	}
	for {
		e, err := entries.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if n, err := mi.store.get(e.Hash); err == nil && n.Type() == plumbing.BlobObject && n.Size() > 50<<10 {
			offsets, hashes = append(offsets, int64(e.Offset)), append(hashes, e.Hash)
		}
	}
	if len(offsets) != 10 {
		b.Fatalf("%d big blobs in the pack, want 10", len(offsets))
	}
	f, err := os.Open(p.path)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var whole, goGit time.Duration
	for b.Loop() {
		start := time.Now()
		for i, off := range offsets {
			if _, ok, err := readWhole(f, hashes[i], off); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
		whole += time.Since(start)
		start = time.Now()
		pf, err := osfs.Default.Open(p.path)
		if err != nil {
			b.Fatal(err)
		}
		ref := packfile.NewPackfile(p.idx, nil, pf, 0)
		for _, off := range offsets {
			o, err := ref.GetByOffset(off)
			if err != nil {
				b.Fatal(err)
			}
			o.Hash() // as the object cache does
		}
		_ = ref.Close()
		goGit += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(float64(whole.Microseconds())/n, "readWhole-µs/MB")
	b.ReportMetric(float64(goGit.Microseconds())/n, "go-git-µs/MB")
	b.ReportMetric(float64(whole)/float64(goGit), "ratio")
}
