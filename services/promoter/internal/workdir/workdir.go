// Package workdir is the file-system boundary of a promotion: every file a
// promotion step reads or writes goes through a Dir, an os.Root at the
// promotion's work dir. Paths are relative to the work dir; absolute paths,
// ".." above it and symbolic links leading out of it are refused (links
// inside it are followed). Errors name paths relative to the work dir,
// never the absolute path on the server.
package workdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrOutside is matched (errors.Is) by every error for a path that leaves
// the work dir.
var ErrOutside = errors.New("outside the work dir")

// OutsideError is a path that leaves the work dir: an absolute path, one
// climbing above it with "..", or one reaching out through a symbolic link.
type OutsideError struct {
	// Path is the path as the step gave it.
	Path string
	// Link is the symbolic link (a path in the work dir) that leads out;
	// empty when the path itself does.
	Link string
	// Absolute is set when Path (or Link's target) is absolute.
	Absolute bool
}

func (e *OutsideError) Error() string {
	switch {
	case e.Link == "" && e.Absolute:
		return fmt.Sprintf("path %q is absolute: paths are relative to the work dir", e.Path)
	case e.Link == "":
		return fmt.Sprintf("path %q leaves the work dir", e.Path)
	case e.Link == e.Path:
		return fmt.Sprintf("%s is a symbolic link that leaves the work dir", e.Link)
	}
	return fmt.Sprintf("%s: symbolic link %s leaves the work dir", e.Path, e.Link)
}

// Is makes errors.Is(err, ErrOutside) true.
func (e *OutsideError) Is(target error) bool { return target == ErrOutside }

// maxLinks bounds the symbolic links followed in one path, as os.Root does.
const maxLinks = 8

// Dir is a promotion's work dir. It is safe for concurrent use.
type Dir struct {
	root *os.Root
	// path is the absolute path of the work dir; evaluated is the same
	// with its symbolic links resolved.
	path, evaluated string
}

// Open opens the work dir at path (made absolute).
func Open(path string) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("open work dir: %w", err)
	}
	evaluated, err := filepath.EvalSymlinks(abs)
	if err != nil {
		_ = root.Close()
		return nil, fmt.Errorf("open work dir: %w", err)
	}
	return &Dir{root: root, path: abs, evaluated: evaluated}, nil
}

// Close releases the work dir.
func (d *Dir) Close() error { return d.root.Close() }

// Path is the absolute path of the work dir, for a library that needs a
// path on disk (after Check has vetted the tree it will read).
func (d *Dir) Path() string { return d.path }

// Real returns the absolute path on disk of name, its symbolic links
// resolved (see Resolve).
func (d *Dir) Real(name string) (string, error) {
	rel, err := d.Resolve(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(d.path, rel), nil
}

// part is one component of a path being resolved, with the symbolic link
// whose target it came from ("" for the path as given).
type part struct{ name, via string }

func split(p, via string) []part {
	var out []part
	for _, s := range strings.Split(filepath.ToSlash(p), "/") {
		if s != "" && s != "." {
			out = append(out, part{s, via})
		}
	}
	return out
}

// Resolve returns name relative to the work dir with every symbolic link
// resolved, the way os.Root resolves it: ".." goes to the parent of what a
// link pointed at. Components that do not exist yet are kept as given. A
// path that leaves the work dir is an *OutsideError naming the link that
// leads out; "." is the work dir itself.
func (d *Dir) Resolve(name string) (string, error) {
	if name == "" {
		return "", &fs.PathError{Op: "resolve", Path: name, Err: errors.New("path must not be empty")}
	}
	if filepath.IsAbs(name) {
		return "", &OutsideError{Path: name, Absolute: true}
	}
	var resolved []string
	todo := split(name, "")
	links := 0
	missing := false // a component did not exist: the rest is lexical
	for len(todo) > 0 {
		p := todo[0]
		todo = todo[1:]
		if p.name == ".." {
			if len(resolved) == 0 {
				return "", &OutsideError{Path: name, Link: p.via}
			}
			resolved = resolved[:len(resolved)-1]
			continue
		}
		resolved = append(resolved, p.name)
		if missing {
			continue
		}
		cur := filepath.Join(resolved...)
		info, err := d.root.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
			missing = true
			continue
		case err != nil:
			return "", d.pathError(err)
		case info.Mode()&fs.ModeSymlink == 0:
			continue
		}
		if links++; links > maxLinks {
			return "", &fs.PathError{Op: "resolve", Path: name, Err: syscall.ELOOP}
		}
		target, err := d.root.Readlink(cur)
		if err != nil {
			return "", d.pathError(err)
		}
		if filepath.IsAbs(target) {
			return "", &OutsideError{Path: name, Link: cur, Absolute: true}
		}
		resolved = resolved[:len(resolved)-1]
		todo = append(split(target, cur), todo...)
	}
	if len(resolved) == 0 {
		return ".", nil
	}
	return filepath.Join(resolved...), nil
}

// Check walks the tree at name and fails on the first symbolic link that
// leaves the work dir, dangling ones included. Run it before handing the
// tree's path on disk to a library that opens files itself.
func (d *Dir) Check(name string) error {
	return d.Walk(name, func(string, fs.FileInfo) error { return nil })
}

// Walk calls fn for name and everything below it, in lexical order, with
// paths relative to the work dir as reached (not as resolved) and the
// information of what they point at. It follows symbolic links inside the
// work dir (a link back to a directory being walked is an error) and fails
// on one leaving it. fn returning fs.SkipDir skips a directory.
func (d *Dir) Walk(name string, fn func(path string, info fs.FileInfo) error) error {
	err := d.walk(name, fn, nil)
	if errors.Is(err, fs.SkipDir) {
		return nil
	}
	return err
}

func (d *Dir) walk(name string, fn func(string, fs.FileInfo) error, open []string) error {
	resolved, err := d.Resolve(name)
	if err != nil {
		return err
	}
	info, err := d.Stat(resolved)
	if errors.Is(err, fs.ErrNotExist) {
		// A dangling link inside the work dir: reported as the link.
		info, err = d.Lstat(name)
	}
	if err != nil {
		return err
	}
	if err := fn(name, info); err != nil || !info.IsDir() {
		return err
	}
	for _, o := range open {
		if o == resolved {
			return fmt.Errorf("%s: symbolic link loop", name)
		}
	}
	entries, err := d.ReadDir(resolved)
	if err != nil {
		return err
	}
	open = append(open, resolved)
	for _, e := range entries {
		err := d.walk(filepath.Join(name, e.Name()), fn, open)
		if errors.Is(err, fs.SkipDir) {
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// WalkDir walks the tree at name without following symbolic links below
// it (see fs.WalkDir). The paths fn sees are relative to the work dir and
// start with name resolved (see Resolve).
func (d *Dir) WalkDir(name string, fn fs.WalkDirFunc) error {
	rel, err := d.Resolve(name)
	if err != nil {
		return err
	}
	return fs.WalkDir(d.root.FS(), filepath.ToSlash(rel), func(p string, e fs.DirEntry, err error) error {
		return fn(filepath.FromSlash(p), e, d.fix(p, err))
	})
}

// pathError makes err name paths relative to the work dir.
func (d *Dir) pathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		pe.Path = d.rel(pe.Path)
		pe.Op = strings.TrimSuffix(pe.Op, "at") // openat → open
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		le.Old, le.New = d.rel(le.Old), d.rel(le.New)
		le.Op = strings.TrimSuffix(le.Op, "at")
	}
	return err
}

// rel shortens an absolute path in the work dir to a relative one.
func (d *Dir) rel(p string) string {
	for _, prefix := range []string{d.path, d.evaluated} {
		if p == prefix {
			return "."
		}
		if rest, ok := strings.CutPrefix(p, prefix+string(filepath.Separator)); ok {
			return rest
		}
	}
	return p
}

// Scrub replaces the work dir's absolute path in a message with paths
// relative to it.
func (d *Dir) Scrub(msg string) string {
	for _, prefix := range []string{d.path, d.evaluated} {
		msg = strings.ReplaceAll(msg, prefix+string(filepath.Separator), "")
		msg = strings.ReplaceAll(msg, prefix, ".")
	}
	return msg
}

// fix turns an error of an operation on name into one naming paths
// relative to the work dir, and one leaving the work dir into an
// *OutsideError naming the link that leads out.
func (d *Dir) fix(name string, err error) error {
	if err == nil {
		return nil
	}
	if _, rerr := d.Resolve(name); errors.Is(rerr, ErrOutside) {
		return rerr
	}
	return d.pathError(err)
}
