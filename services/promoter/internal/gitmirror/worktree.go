package gitmirror

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// worktree is the files of a checkout on disk. It remembers what it wrote
// (hash, mode and file status, as git's index does), so that finding what
// a promotion changed reads only files whose status changed, however big
// the tree.
type worktree struct {
	dir  string
	root *os.Root
	// scope limits a sparse checkout (nil: everything).
	scope func(string) scopeMatch
	files map[string]trackedFile
	// stamp is a file time taken after the files were last written: a
	// file whose times are not older than it may have changed within the
	// file system's clock tick and is read to be sure ("racy git").
	stamp int64
}

type trackedFile struct {
	hash plumbing.Hash
	mode filemode.FileMode
	stat fileStat
}

func newWorktree(dir string, sparse []string) (*worktree, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &worktree{dir: dir, root: root, scope: sparseScope(sparse), files: map[string]trackedFile{}}, nil
}

func (w *worktree) close() { _ = w.root.Close() }

func (w *worktree) inScope(p string) bool { return w.scope == nil || w.scope(p) == scopeAll }

// checkout writes the files of tree (in scope) into the empty work tree,
// several at a time.
func (w *worktree) checkout(ctx context.Context, s storer.EncodedObjectStorer, tree plumbing.Hash) error {
	type job struct {
		p string
		e object.TreeEntry
	}
	var jobs []job
	dirs := map[string]bool{}
	err := treeFiles(s, tree, "", w.scope, func(p string, e object.TreeEntry) error {
		jobs = append(jobs, job{p, e})
		if d := path.Dir(p); d != "." {
			dirs[d] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	for d := range dirs {
		if err := w.root.MkdirAll(filepath.FromSlash(d), 0o750); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	var (
		mu   sync.Mutex
		errs []error
		next = make(chan job)
		wg   sync.WaitGroup
	)
	for range max(2, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for j := range next {
				tf, err := w.write(s, j.p, j.e)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					w.files[j.p] = tf
				}
				mu.Unlock()
			}
		})
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		next <- j
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return w.restamp()
}

// write writes one file of a tree entry and returns what it wrote.
func (w *worktree) write(s storer.EncodedObjectStorer, p string, e object.TreeEntry) (trackedFile, error) {
	name := filepath.FromSlash(p)
	tf := trackedFile{hash: e.Hash, mode: e.Mode}
	if e.Mode == filemode.Submodule {
		// A submodule stays as the tree has it; its directory is empty.
		return tf, w.root.MkdirAll(name, 0o750)
	}
	o, err := s.EncodedObject(plumbing.BlobObject, e.Hash)
	if err != nil {
		return tf, fmt.Errorf("read %s: %w", p, err)
	}
	r, err := o.Reader()
	if err != nil {
		return tf, err
	}
	defer func() { _ = r.Close() }()
	if e.Mode == filemode.Symlink {
		target, err := io.ReadAll(r)
		if err != nil {
			return tf, err
		}
		if err := w.root.Symlink(string(target), name); err != nil {
			return tf, fmt.Errorf("write %s: %w", p, err)
		}
		fi, err := w.root.Lstat(name)
		if err != nil {
			return tf, err
		}
		tf.stat = statOf(fi)
		return tf, nil
	}
	perm := os.FileMode(0o644)
	if e.Mode == filemode.Executable {
		perm = 0o755
	} else {
		tf.mode = filemode.Regular // deprecated group-writable modes read back as regular files
		if e.Mode != filemode.Regular {
			tf.hash = plumbing.ZeroHash // unlike what is on disk: the next scan reads it
		}
	}
	f, err := w.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return tf, fmt.Errorf("write %s: %w", p, err)
	}
	_, err = io.Copy(f, r)
	var fi fs.FileInfo
	if err == nil {
		fi, err = f.Stat()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return tf, fmt.Errorf("write %s: %w", p, err)
	}
	tf.stat = statOf(fi)
	return tf, nil
}

// restamp takes the file system's time now, from a file created beside
// the work tree.
func (w *worktree) restamp() error {
	f, err := os.CreateTemp(filepath.Dir(w.dir), ".stamp-*")
	if err != nil {
		return fmt.Errorf("time stamp: %w", err)
	}
	fi, err := f.Stat()
	_ = f.Close()
	_ = os.Remove(f.Name())
	if err != nil {
		return fmt.Errorf("time stamp: %w", err)
	}
	st := statOf(fi)
	w.stamp = max(st.mtime, st.ctime)
	return nil
}

// scan compares the work tree with what it tracks and returns the edits
// that turn the tracked tree into what is on disk, storing new blobs in
// s. Files outside a sparse checkout's scope, and untracked files git
// would ignore, are left out. It does not change what is tracked (see
// track).
func (w *worktree) scan(s storer.EncodedObjectStorer) (map[string]*object.TreeEntry, map[string]trackedFile, error) {
	edits := map[string]*object.TreeEntry{}
	seen := map[string]trackedFile{}
	err := w.walk("", nil, false, func(p string, fi fs.FileInfo) error {
		mode, ok := modeOf(fi)
		if !ok {
			return nil
		}
		st := statOf(fi)
		old, tracked := w.files[p]
		if tracked && old.mode == mode && old.stat == st && !old.hash.IsZero() && max(st.mtime, st.ctime) < w.stamp {
			seen[p] = old
			return nil
		}
		h, err := w.hashFile(s, p, mode)
		if err != nil {
			return err
		}
		seen[p] = trackedFile{hash: h, mode: mode, stat: st}
		if !tracked || old.hash != h || old.mode != mode {
			edits[p] = &object.TreeEntry{Mode: mode, Hash: h}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for p, tf := range w.files {
		if tf.mode == filemode.Submodule {
			seen[p] = tf
			continue
		}
		if _, ok := seen[p]; !ok && w.inScope(p) {
			edits[p] = nil
		}
	}
	return edits, seen, nil
}

// track records the files scan saw as the tracked state.
func (w *worktree) track(files map[string]trackedFile) error {
	w.files = files
	return w.restamp()
}

// walk visits the regular files and links below dir (a slash path, "" for
// the top), skipping .git, what is out of scope and untracked files the
// .gitignore files ignore.
func (w *worktree) walk(dir string, patterns []gitignore.Pattern, ignored bool, fn func(p string, fi fs.FileInfo) error) error {
	name := "."
	var domain []string
	if dir != "" {
		name = filepath.FromSlash(dir)
		domain = strings.Split(dir, "/")
	}
	d, err := w.root.Open(name)
	if err != nil {
		return err
	}
	entries, err := d.ReadDir(-1)
	_ = d.Close()
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == ".gitignore" && e.Type().IsRegular() {
			ps, err := w.readIgnore(path.Join(dir, e.Name()), domain)
			if err != nil {
				return err
			}
			patterns = append(patterns[:len(patterns):len(patterns)], ps...)
		}
	}
	matcher := gitignore.NewMatcher(patterns)
	for _, e := range entries {
		if e.Name() == ".git" {
			continue
		}
		p := path.Join(dir, e.Name())
		if e.IsDir() {
			if tf, ok := w.files[p]; ok && tf.mode == filemode.Submodule {
				continue
			}
			m := scopeAll
			if w.scope != nil {
				m = w.scope(p)
			}
			if m == scopeNone {
				continue
			}
			sub := ignored || matcher.Match(append(domain[:len(domain):len(domain)], e.Name()), true)
			if err := w.walk(p, patterns, sub, fn); err != nil {
				return err
			}
			continue
		}
		if !w.inScope(p) {
			continue
		}
		if _, tracked := w.files[p]; !tracked && (ignored || matcher.Match(append(domain[:len(domain):len(domain)], e.Name()), false)) {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(p, fi); err != nil {
			return err
		}
	}
	return nil
}

func (w *worktree) readIgnore(p string, domain []string) ([]gitignore.Pattern, error) {
	b, err := w.root.ReadFile(filepath.FromSlash(p))
	if err != nil {
		return nil, err
	}
	var ps []gitignore.Pattern
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ps = append(ps, gitignore.ParsePattern(line, domain))
	}
	return ps, nil
}

// modeOf maps a file's type to a tree entry mode; false for what git does
// not track (sockets, devices, ...).
func modeOf(fi fs.FileInfo) (filemode.FileMode, bool) {
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		return filemode.Symlink, true
	case m.IsRegular() && m&0o100 != 0:
		return filemode.Executable, true
	case m.IsRegular():
		return filemode.Regular, true
	}
	return 0, false
}

// hashFile stores the blob of a file (a link's target for a link) and
// returns its hash.
func (w *worktree) hashFile(s storer.EncodedObjectStorer, p string, mode filemode.FileMode) (plumbing.Hash, error) {
	name := filepath.FromSlash(p)
	var content []byte
	var err error
	if mode == filemode.Symlink {
		var target string
		target, err = w.root.Readlink(name)
		content = []byte(target)
	} else {
		content, err = w.root.ReadFile(name)
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("read %s: %w", p, err)
	}
	return storeBlob(s, content)
}

// storeBlob stores content as a blob.
func storeBlob(s storer.EncodedObjectStorer, content []byte) (plumbing.Hash, error) {
	o := s.NewEncodedObject()
	o.SetType(plumbing.BlobObject)
	o.SetSize(int64(len(content)))
	wr, err := o.Writer()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := wr.Write(content); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := wr.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	return s.SetEncodedObject(o)
}

// update makes the files on disk go from tree from to tree to (both
// commits' trees), touching only the paths that differ, and tracks the
// result.
func (w *worktree) update(s storer.EncodedObjectStorer, from, to plumbing.Hash) error {
	if from == to {
		return nil
	}
	a, err := readTree(s, from)
	if err != nil {
		return err
	}
	b, err := readTree(s, to)
	if err != nil {
		return err
	}
	changes, err := object.DiffTree(a, b)
	if err != nil {
		return fmt.Errorf("diff trees: %w", err)
	}
	for _, ch := range changes {
		p := ch.To.Name
		if p == "" {
			p = ch.From.Name
		}
		if !w.inScope(p) {
			continue
		}
		if ch.From.Name != "" {
			_ = w.root.Remove(filepath.FromSlash(ch.From.Name))
			delete(w.files, ch.From.Name)
		}
		if ch.To.Name == "" {
			continue
		}
		for _, part := range strings.Split(ch.To.Name, "/") {
			if !validName(part) {
				return fmt.Errorf("%w: %q", errUnsafePath, ch.To.Name)
			}
		}
		if d := path.Dir(ch.To.Name); d != "." {
			if err := w.root.MkdirAll(filepath.FromSlash(d), 0o750); err != nil {
				return err
			}
		}
		tf, err := w.write(s, ch.To.Name, ch.To.TreeEntry)
		if err != nil {
			return err
		}
		w.files[ch.To.Name] = tf
	}
	return w.restamp()
}
