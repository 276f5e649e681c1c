package workdir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tree builds a work dir beside a secret outside it:
//
//	<tmp>/secret
//	<tmp>/work/sub/f          a file
//	<tmp>/work/in -> sub      a link inside
//	<tmp>/work/inner/up -> ../sub
//	<tmp>/work/out -> ../     leaves by ..
//	<tmp>/work/leak -> ../secret
//	<tmp>/work/abs -> <tmp>/secret
//	<tmp>/work/dangling -> nothere
//	<tmp>/work/dangout -> ../nothere
//	<tmp>/work/loop -> loop
//	<tmp>/work/chain0 -> chain1 -> … -> chain8 -> sub
func tree(t testing.TB) (d *Dir, outside string) {
	t.Helper()
	outside = t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("admin-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(outside, "work")
	for _, dir := range []string{"sub", "inner"} {
		if err := os.MkdirAll(filepath.Join(work, dir), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(work, "sub", "f"), []byte("inside"), 0o600); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"in": "sub", "inner/up": "../sub", "out": "../", "leak": "../secret",
		"abs": filepath.Join(outside, "secret"), "dangling": "nothere", "dangout": "../nothere",
		"loop": "loop", "chain8": "sub",
	}
	for i := range 8 {
		links["chain"+string(rune('0'+i))] = "chain" + string(rune('1'+i))
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(work, name)); err != nil {
			t.Fatal(err)
		}
	}
	d, err := Open(work)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d, outside
}

func TestResolve(t *testing.T) {
	t.Parallel()
	d, _ := tree(t)
	for name, want := range map[string]string{
		"sub/f":             "sub/f",
		"./in/f":            "sub/f",
		"in/../in/f":        "sub/f",
		"inner/up/f":        "sub/f",
		"inner/up/../inner": "inner",
		"new/dir/file":      "new/dir/file",
		"new/../sub":        "sub",
		"dangling":          "nothere",
		".":                 ".",
		"sub/f/x":           "sub/f/x",
		"chain1":            "sub",
	} {
		got, err := d.Resolve(name)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	for name, link := range map[string]string{
		"../x":           "",
		"sub/../../x":    "",
		"/etc/passwd":    "",
		"out":            "out",
		"out/work/sub":   "out",
		"leak":           "leak",
		"in/../leak":     "leak",
		"abs":            "abs",
		"dangout":        "dangout",
		"inner/up/../..": "",
	} {
		_, err := d.Resolve(name)
		var oe *OutsideError
		if !errors.As(err, &oe) || !errors.Is(err, ErrOutside) {
			t.Errorf("Resolve(%q): %v, want an OutsideError", name, err)
			continue
		}
		if oe.Link != link {
			t.Errorf("Resolve(%q) blames link %q, want %q (%v)", name, oe.Link, link, err)
		}
	}
	for _, name := range []string{"", "loop", "chain0"} {
		if _, err := d.Resolve(name); err == nil || errors.Is(err, ErrOutside) {
			t.Errorf("Resolve(%q): %v, want an error other than leaving the work dir", name, err)
		}
	}
}

// Every operation refuses a path leaving the work dir, names it relative
// to the work dir, and leaves what is outside alone.
func TestOperationsStayInside(t *testing.T) {
	t.Parallel()
	d, outside := tree(t)
	ops := map[string]func(name string) error{
		"ReadFile":  func(n string) error { _, err := d.ReadFile(n); return err },
		"WriteFile": func(n string) error { return d.WriteFile(n, []byte("x")) },
		"Open":      func(n string) error { f, err := d.Open(n); closeIf(f); return err },
		"Create":    func(n string) error { f, err := d.Create(n, 0o644); closeIf(f); return err },
		"MkdirAll":  func(n string) error { return d.MkdirAll(n + "/x") },
		"Stat":      func(n string) error { _, err := d.Stat(n); return err },
		"ReadDir":   func(n string) error { _, err := d.ReadDir(n); return err },
		"Check":     d.Check,
		"Symlink":   func(n string) error { return d.Symlink("../../"+n, "inner/new") },
	}
	for op, fn := range ops {
		for _, name := range []string{"leak", "abs", "out/secret", "dangout", "../secret", "in/../../secret"} {
			err := fn(name)
			if !errors.Is(err, ErrOutside) {
				t.Errorf("%s(%q): %v, want ErrOutside", op, name, err)
				continue
			}
			if strings.Contains(err.Error(), outside) {
				t.Errorf("%s(%q): %q shows an absolute path", op, name, err)
			}
		}
	}
	if got, err := os.ReadFile(filepath.Join(outside, "secret")); err != nil || string(got) != "admin-token" {
		t.Fatalf("the file outside changed: %q %v", got, err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 2 {
		t.Fatalf("files created outside the work dir: %v", entries)
	}
	// Links inside work.
	if err := d.WriteFile("in/g", []byte("via link")); err != nil {
		t.Fatal(err)
	}
	if b, err := d.ReadFile("inner/up/g"); err != nil || string(b) != "via link" {
		t.Fatalf("read through a link inside: %q %v", b, err)
	}
	if err := d.Symlink("../sub/f", "inner/ok"); err != nil {
		t.Fatal(err)
	}
	if b, err := d.ReadFile("inner/ok"); err != nil || string(b) != "inside" {
		t.Fatalf("a created link: %q %v", b, err)
	}
}

func closeIf(f *os.File) {
	if f != nil {
		_ = f.Close()
	}
}

func TestErrorsNameRelativePaths(t *testing.T) {
	t.Parallel()
	d, _ := tree(t)
	_, err1 := d.ReadFile("sub")         // a directory: the error comes from the open file
	_, err2 := d.ReadFile("sub/missing") // from the root
	err3 := d.WriteFile("sub/f/x", nil)
	for _, err := range []error{err1, err2, err3} {
		if err == nil || strings.Contains(err.Error(), d.Path()) {
			t.Errorf("error %v", err)
		}
	}
	if !strings.HasPrefix(err2.Error(), "open sub/missing: ") {
		t.Errorf("error %q", err2)
	}
	if got := d.Scrub("render " + d.Path() + "/sub/f: bad; in " + d.Path()); got != "render sub/f: bad; in ." {
		t.Errorf("Scrub: %q", got)
	}
}

func TestRemoveAllKeepsTheWorkDir(t *testing.T) {
	t.Parallel()
	d, _ := tree(t)
	for _, name := range []string{".", "sub/..", "sub/f/../..", "./"} {
		if err := d.RemoveAll(name); err == nil {
			t.Errorf("RemoveAll(%q) succeeded", name)
		}
	}
	if _, err := d.Stat("sub/f"); err != nil {
		t.Fatalf("the work dir was emptied: %v", err)
	}
	if err := d.RemoveAll("in"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat("sub/f"); err != nil {
		t.Fatalf("removing a link removed its target: %v", err)
	}
	if err := d.RemoveAll("leak"); err != nil { // the link, not what it points at
		t.Fatal(err)
	}
}

func TestWalkFollowsLinksInside(t *testing.T) {
	t.Parallel()
	d, _ := tree(t)
	var seen []string
	err := d.Walk("inner", func(p string, info fs.FileInfo) error {
		seen = append(seen, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(seen, ","); got != "inner,inner/up,inner/up/f" {
		t.Fatalf("walked %s", got)
	}
	if err := d.Check("inner"); err != nil {
		t.Fatal(err)
	}
	if err := d.Check("."); !errors.Is(err, ErrOutside) {
		t.Fatalf("Check of a tree with links out: %v", err)
	}
	if err := d.Symlink(".", "sub/self"); err != nil {
		t.Fatal(err)
	}
	if err := d.Walk("sub", func(string, fs.FileInfo) error { return nil }); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Fatalf("a link to its own directory: %v", err)
	}
}

func TestRelativeWorkDir(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.MkdirAll(filepath.Join(".caravan", "work", "p"), 0o750); err != nil {
		t.Fatal(err)
	}
	d, err := Open("./.caravan/work/p")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	if !filepath.IsAbs(d.Path()) {
		t.Fatalf("Path %q is relative", d.Path())
	}
	if err := d.WriteFile("a/b.yaml", []byte("x: 1\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Real("a/b.yaml"); err != nil || got != filepath.Join(d.Path(), "a", "b.yaml") {
		t.Fatalf("Real: %q %v", got, err)
	}
}

// FuzzResolve checks Resolve against os.Root on a tree with links inside,
// out and in loops, plus one link whose target is fuzzed: whatever os.Root
// opens, Resolve resolves to a path inside the work dir naming the same
// file, and what Resolve says leaves the work dir os.Root does not open.
func FuzzResolve(f *testing.F) {
	for _, seed := range []struct{ name, target string }{
		{"sub/f", "sub"}, {"fz/f", "sub"}, {"fz/f", "../sub"}, {"inner/fz", "../leak"},
		{"fz", "/etc/passwd"}, {"fz/../../secret", "in"}, {"in/../out/secret", "."},
		{"inner/up/../../x", "fz"}, {"chain0/f", "chain1"}, {"fz/fz/fz", ".."},
		{"./in//f/", "sub/"}, {"dangling/..", "x"}, {"loop/x", "loop"},
	} {
		f.Add(seed.name, seed.target)
	}
	d, _ := tree(f)
	f.Fuzz(func(t *testing.T, name, target string) {
		if strings.ContainsRune(target, 0) || target == "" {
			return
		}
		link := filepath.Join(d.Path(), "inner", "fz")
		_ = os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			return // a target the system refuses
		}
		name = strings.ReplaceAll(name, "fz", "inner/fz")
		got, err := d.Resolve(name)
		if err == nil && got != "." && !filepath.IsLocal(got) {
			t.Fatalf("Resolve(%q) = %q: not inside the work dir", name, got)
		}
		info, rootErr := d.root.Stat(name)
		if rootErr == nil {
			if err != nil {
				t.Fatalf("os.Root opens %q, Resolve fails: %v", name, err)
			}
			same, serr := d.root.Stat(got)
			if serr != nil || !os.SameFile(info, same) {
				t.Fatalf("Resolve(%q) = %q: not the file os.Root opens (%v)", name, got, serr)
			}
			if l, err := d.root.Lstat(got); err != nil || l.Mode()&fs.ModeSymlink != 0 {
				t.Fatalf("Resolve(%q) = %q ends in a link", name, got)
			}
		}
		if errors.Is(err, ErrOutside) && rootErr == nil {
			t.Fatalf("Resolve(%q) leaves the work dir but os.Root opens it", name)
		}
	})
}
