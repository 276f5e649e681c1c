package workdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Modes of what steps create.
const (
	dirMode  fs.FileMode = 0o750
	fileMode fs.FileMode = 0o644
)

// ReadFile reads the file name.
func (d *Dir) ReadFile(name string) ([]byte, error) {
	b, err := d.root.ReadFile(name)
	return b, d.fix(name, err)
}

// WriteFile writes data to the file name (mode 0644 when created),
// creating its parent directories.
func (d *Dir) WriteFile(name string, data []byte) error {
	if err := d.MkdirAll(filepath.Dir(name)); err != nil {
		return err
	}
	return d.fix(name, d.root.WriteFile(name, data, fileMode))
}

// Open opens the file name for reading.
func (d *Dir) Open(name string) (*os.File, error) {
	f, err := d.root.Open(name)
	return f, d.fix(name, err)
}

// Create creates or truncates the file name with mode perm (when created)
// for writing, creating its parent directories.
func (d *Dir) Create(name string, perm fs.FileMode) (*os.File, error) {
	if err := d.MkdirAll(filepath.Dir(name)); err != nil {
		return nil, err
	}
	f, err := d.root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	return f, d.fix(name, err)
}

// Chmod changes the mode of the file name.
func (d *Dir) Chmod(name string, mode fs.FileMode) error {
	return d.fix(name, d.root.Chmod(name, mode))
}

// MkdirAll creates the directory name and its parents (mode 0750).
func (d *Dir) MkdirAll(name string) error {
	if filepath.Clean(name) == "." {
		return nil
	}
	return d.fix(name, d.root.MkdirAll(name, dirMode))
}

// RemoveAll removes name and what it holds; a symbolic link is removed,
// not followed. A path ending in "." or ".." is refused: os.Root.RemoveAll
// would empty the directory it names, the work dir itself included.
func (d *Dir) RemoveAll(name string) error {
	if b := filepath.Base(name); b == "." || b == ".." || b == string(filepath.Separator) {
		return &fs.PathError{Op: "remove", Path: name, Err: fmt.Errorf(`%w: a path ending in "." or ".." is not removed`, fs.ErrInvalid)}
	}
	return d.fix(name, d.root.RemoveAll(name))
}

// Stat describes name, following symbolic links.
func (d *Dir) Stat(name string) (fs.FileInfo, error) {
	info, err := d.root.Stat(name)
	return info, d.fix(name, err)
}

// Lstat describes name without following a final symbolic link.
func (d *Dir) Lstat(name string) (fs.FileInfo, error) {
	info, err := d.root.Lstat(name)
	return info, d.fix(name, err)
}

// Exists reports whether name exists, as a symbolic link included.
func (d *Dir) Exists(name string) bool {
	_, err := d.root.Lstat(name)
	return err == nil
}

// ReadDir lists the directory name, sorted by file name.
func (d *Dir) ReadDir(name string) ([]fs.DirEntry, error) {
	f, err := d.root.Open(name)
	if err != nil {
		return nil, d.fix(name, err)
	}
	defer func() { _ = f.Close() }()
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, d.fix(name, err)
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return entries, nil
}

// Readlink returns the target of the symbolic link name.
func (d *Dir) Readlink(name string) (string, error) {
	target, err := d.root.Readlink(name)
	return target, d.fix(name, err)
}

// Symlink creates name as a symbolic link to target, which must be
// relative and stay inside the work dir from where the link is.
func (d *Dir) Symlink(target, name string) error {
	if filepath.IsAbs(target) {
		return &OutsideError{Path: name, Link: name, Absolute: true}
	}
	parent, err := d.Resolve(filepath.Dir(name))
	if err != nil {
		return err
	}
	// parent has no links: the target is resolved from it as the
	// system will.
	if _, err := d.Resolve(parent + string(filepath.Separator) + target); errors.Is(err, ErrOutside) {
		return &OutsideError{Path: name, Link: name}
	}
	if err := d.MkdirAll(filepath.Dir(name)); err != nil {
		return err
	}
	return d.fix(name, d.root.Symlink(target, name))
}

// FS is the work dir as an fs.FS (see os.Root.FS).
func (d *Dir) FS() fs.FS { return d.root.FS() }
