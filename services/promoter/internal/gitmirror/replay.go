package gitmirror

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// ErrConflict: a promotion's commit could not be replayed on the branch's
// new tip because the tip changed the same lines (or the same file in a
// way lines cannot merge: a binary file, a deletion, a file that became a
// directory). Retrying cannot fix it.
var ErrConflict = errors.New("conflicting changes")

// replayTree applies the change from the tree base to the tree theirs onto
// the tree ours, file by file: a file only one side changed takes that
// side, a file both changed is merged line by line (diff3). It returns the
// merged tree.
func replayTree(s storer.EncodedObjectStorer, base, theirs, ours plumbing.Hash) (plumbing.Hash, error) {
	if base == ours {
		return theirs, nil
	}
	if base == theirs {
		return ours, nil
	}
	a, err := readTree(s, base)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	b, err := readTree(s, theirs)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	changes, err := object.DiffTree(a, b)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("diff trees: %w", err)
	}
	edits := map[string]*object.TreeEntry{}
	for _, ch := range changes {
		for _, p := range []string{ch.From.Name, ch.To.Name} {
			if p == "" {
				continue
			}
			e, err := replayPath(s, ours, p, entryOf(ch.From, p), entryOf(ch.To, p))
			if err != nil {
				return plumbing.ZeroHash, err
			}
			if e != nil {
				edits[p] = *e
			}
			if ch.From.Name == ch.To.Name {
				break
			}
		}
	}
	return editTree(s, ours, edits)
}

// entryOf is a change side's entry if it is at p, else nil (the path is
// absent on that side).
func entryOf(side object.ChangeEntry, p string) *object.TreeEntry {
	if side.Name != p {
		return nil
	}
	e := side.TreeEntry
	return &e
}

// replayPath works out one path: from and to are theirs before and
// after (nil: absent). It returns the edit to make on ours (nil: none; a
// pointer to nil: delete).
func replayPath(s storer.EncodedObjectStorer, ours plumbing.Hash, p string, from, to *object.TreeEntry) (**object.TreeEntry, error) {
	cur, err := entryAt(s, ours, p)
	if err != nil {
		return nil, err
	}
	if cur == nil && to != nil {
		// An added file must not replace a file ours has where theirs
		// needs a directory.
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			e, err := entryAt(s, ours, d)
			if err != nil {
				return nil, err
			}
			if e != nil && e.Mode != filemode.Dir {
				return nil, fmt.Errorf("%w: %s is a file on the branch, a directory in the promotion's commit", ErrConflict, d)
			}
		}
	}
	switch {
	case sameEntry(cur, from):
		return &to, nil
	case sameEntry(cur, to):
		return nil, nil
	case cur == nil || to == nil || cur.Mode == filemode.Dir:
		return nil, fmt.Errorf("%w: %s was changed on the branch and by the promotion", ErrConflict, p)
	}
	mode, ok := mergeMode(from, cur, to)
	if !ok || !mergeable(mode) || !mergeable(cur.Mode) || !mergeable(to.Mode) {
		return nil, fmt.Errorf("%w: %s was changed on the branch and by the promotion", ErrConflict, p)
	}
	var baseText string
	if from != nil {
		if !mergeable(from.Mode) {
			return nil, fmt.Errorf("%w: %s was changed on the branch and by the promotion", ErrConflict, p)
		}
		if baseText, err = blobText(s, from.Hash); err != nil {
			return nil, err
		}
	}
	oursText, err := blobText(s, cur.Hash)
	if err != nil {
		return nil, err
	}
	theirsText, err := blobText(s, to.Hash)
	if err != nil {
		return nil, err
	}
	if binary(baseText) || binary(oursText) || binary(theirsText) {
		return nil, fmt.Errorf("%w: %s (binary) was changed on the branch and by the promotion", ErrConflict, p)
	}
	merged, ok := merge3(baseText, oursText, theirsText)
	if !ok {
		return nil, fmt.Errorf("%w: %s: the branch and the promotion changed the same lines", ErrConflict, p)
	}
	h, err := storeBlob(s, []byte(merged))
	if err != nil {
		return nil, err
	}
	e := &object.TreeEntry{Mode: mode, Hash: h}
	return &e, nil
}

func sameEntry(a, b *object.TreeEntry) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Hash == b.Hash && a.Mode == b.Mode
}

// mergeMode picks the mode of a file both sides changed: the side that
// changed it wins; both changing it differently conflicts.
func mergeMode(base, ours, theirs *object.TreeEntry) (filemode.FileMode, bool) {
	switch {
	case ours.Mode == theirs.Mode:
		return ours.Mode, true
	case base != nil && base.Mode == ours.Mode:
		return theirs.Mode, true
	case base != nil && base.Mode == theirs.Mode:
		return ours.Mode, true
	}
	return 0, false
}

func mergeable(m filemode.FileMode) bool {
	return m == filemode.Regular || m == filemode.Executable || m == filemode.Deprecated
}

func blobText(s storer.EncodedObjectStorer, h plumbing.Hash) (string, error) {
	o, err := s.EncodedObject(plumbing.BlobObject, h)
	if err != nil {
		return "", fmt.Errorf("read blob %s: %w", h, err)
	}
	r, err := o.Reader()
	if err != nil {
		return "", err
	}
	defer func() { _ = r.Close() }()
	b, err := io.ReadAll(r)
	return string(b), err
}

// binary reports whether text looks binary, as git decides: a NUL byte in
// its first 8000 bytes.
func binary(text string) bool {
	return bytes.IndexByte([]byte(text[:min(len(text), 8000)]), 0) >= 0
}
