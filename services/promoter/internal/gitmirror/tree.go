package gitmirror

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// emptyTree is the hash of the tree with no entries.
var emptyTree = plumbing.NewHash("4b825dc642cb6eb9a060e54bf8d69288fbee4904")

// readTree decodes the tree h (the empty tree for the zero hash).
func readTree(s storer.EncodedObjectStorer, h plumbing.Hash) (*object.Tree, error) {
	if h.IsZero() || h == emptyTree {
		return &object.Tree{}, nil
	}
	o, err := s.EncodedObject(plumbing.TreeObject, h)
	if err != nil {
		return nil, fmt.Errorf("read tree %s: %w", h, err)
	}
	return object.DecodeTree(s, o)
}

// commitTree returns the tree of commit h (the empty tree for the zero
// hash).
func commitTree(s storer.EncodedObjectStorer, h plumbing.Hash) (plumbing.Hash, error) {
	if h.IsZero() {
		return emptyTree, nil
	}
	c, err := object.GetCommit(s, h)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("read commit %s: %w", h, err)
	}
	return c.TreeHash, nil
}

// entryAt finds the entry at a slash path of tree root; nil when absent.
func entryAt(s storer.EncodedObjectStorer, root plumbing.Hash, p string) (*object.TreeEntry, error) {
	parts := strings.Split(p, "/")
	h := root
	for i, name := range parts {
		t, err := readTree(s, h)
		if err != nil {
			return nil, err
		}
		var found *object.TreeEntry
		for j := range t.Entries {
			if t.Entries[j].Name == name {
				found = &t.Entries[j]
				break
			}
		}
		if found == nil {
			return nil, nil
		}
		if i == len(parts)-1 {
			e := *found
			return &e, nil
		}
		if found.Mode != filemode.Dir {
			return nil, nil
		}
		h = found.Hash
	}
	return nil, nil
}

// validName reports whether a tree entry name is safe to write below a
// work tree: no separators, no "." or "..", no ".git" in any case.
func validName(name string) bool {
	if name == "" || name == "." || name == ".." || strings.EqualFold(name, ".git") {
		return false
	}
	return !strings.ContainsAny(name, "/\x00") && !strings.Contains(name, `\`)
}

// editTree applies edits (slash path → new entry, nil to delete) to the
// tree base and stores the trees it changes. Subtrees no edit reaches
// keep their hashes. Directories left empty disappear.
func editTree(s storer.EncodedObjectStorer, base plumbing.Hash, edits map[string]*object.TreeEntry) (plumbing.Hash, error) {
	h, err := editSubtree(s, base, edits)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if h.IsZero() {
		return writeTree(s, nil)
	}
	return h, nil
}

// editSubtree returns the zero hash for a tree left empty.
func editSubtree(s storer.EncodedObjectStorer, base plumbing.Hash, edits map[string]*object.TreeEntry) (plumbing.Hash, error) {
	if len(edits) == 0 {
		return base, nil
	}
	t, err := readTree(s, base)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	entries := make(map[string]object.TreeEntry, len(t.Entries))
	for _, e := range t.Entries {
		entries[e.Name] = e
	}
	leaf := map[string]*object.TreeEntry{}
	deeper := map[string]map[string]*object.TreeEntry{}
	for p, e := range edits {
		name, rest, nested := strings.Cut(p, "/")
		if !nested {
			leaf[name] = e
			continue
		}
		if deeper[name] == nil {
			deeper[name] = map[string]*object.TreeEntry{}
		}
		deeper[name][rest] = e
	}
	for name, e := range leaf {
		if e == nil {
			if cur, ok := entries[name]; ok && cur.Mode != filemode.Dir {
				delete(entries, name)
			}
			continue
		}
		ne := *e
		ne.Name = name
		entries[name] = ne
	}
	for name, sub := range deeper {
		var subBase plumbing.Hash
		if cur, ok := entries[name]; ok && cur.Mode == filemode.Dir {
			subBase = cur.Hash
		}
		h, err := editSubtree(s, subBase, sub)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if h.IsZero() {
			if cur, ok := entries[name]; ok && cur.Mode == filemode.Dir {
				delete(entries, name)
			}
			continue
		}
		entries[name] = object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h}
	}
	if len(entries) == 0 {
		return plumbing.ZeroHash, nil
	}
	list := make([]object.TreeEntry, 0, len(entries))
	for _, e := range entries {
		list = append(list, e)
	}
	return writeTree(s, list)
}

// writeTree stores a tree of entries in git's order.
func writeTree(s storer.EncodedObjectStorer, entries []object.TreeEntry) (plumbing.Hash, error) {
	sort.Slice(entries, func(i, j int) bool { return treeOrderKey(entries[i]) < treeOrderKey(entries[j]) })
	t := &object.Tree{Entries: entries}
	o := s.NewEncodedObject()
	if err := t.Encode(o); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encode tree: %w", err)
	}
	return s.SetEncodedObject(o)
}

// treeOrderKey sorts as git does: a directory as if its name ended in "/".
func treeOrderKey(e object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}

// treeFiles calls fn for every non-directory entry below the tree h whose
// path is in scope (nil: everything), with its slash path.
func treeFiles(s storer.EncodedObjectStorer, h plumbing.Hash, prefix string, scope func(dir string) scopeMatch, fn func(p string, e object.TreeEntry) error) error {
	t, err := readTree(s, h)
	if err != nil {
		return err
	}
	for _, e := range t.Entries {
		if !validName(e.Name) {
			return fmt.Errorf("%w: %q in %q", errUnsafePath, e.Name, prefix)
		}
		p := path.Join(prefix, e.Name)
		if e.Mode == filemode.Dir {
			m := scopeAll
			if scope != nil {
				m = scope(p)
			}
			switch m {
			case scopeNone:
				continue
			case scopeAll:
				err = treeFiles(s, e.Hash, p, nil, fn)
			default:
				err = treeFiles(s, e.Hash, p, scope, fn)
			}
			if err != nil {
				return err
			}
			continue
		}
		if scope != nil && scope(p) != scopeAll {
			continue
		}
		if err := fn(p, e); err != nil {
			return err
		}
	}
	return nil
}

// errUnsafePath: a tree names a path that cannot be written safely.
var errUnsafePath = errors.New("unsafe path in repository tree")

// scopeMatch says how much of a directory a sparse checkout covers.
type scopeMatch int

const (
	scopeNone    scopeMatch = iota // nothing below it
	scopePartial                   // some of what is below it
	scopeAll                       // all of it
)

// sparseScope is the scope of a sparse checkout of dirs (cleaned slash
// paths); nil for a full checkout.
func sparseScope(dirs []string) func(string) scopeMatch {
	if len(dirs) == 0 {
		return nil
	}
	return func(p string) scopeMatch {
		m := scopeNone
		for _, d := range dirs {
			switch {
			case p == d || strings.HasPrefix(p, d+"/"):
				return scopeAll
			case strings.HasPrefix(d, p+"/"):
				m = scopePartial
			}
		}
		return m
	}
}
