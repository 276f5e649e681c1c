package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Changes is what the commits of a work tree change: a unified diff of
// HEAD against the commit checked out (the remote's), as git diff writes
// it.
type Changes struct {
	Base plumbing.Hash // zero on a new branch
	Head plumbing.Hash
	// Files are the changed files with their added and deleted lines.
	Files []FileChange
	// Patch is the unified diff, cut at the limit Changes was given
	// (Truncated says so).
	Patch     string
	Truncated bool
}

// FileChange is one changed file of Changes.
type FileChange struct {
	Path      string
	Additions int
	Deletions int
}

// Changes diffs HEAD against the commit the work tree was checked out at:
// what pushing the work tree's branch would bring the remote. Changes left
// uncommitted are not in it. The patch is cut at limit bytes (none when
// limit <= 0). It reads only the work tree's objects and the mirror's.
func (r *Repo) Changes(ctx context.Context, limit int) (*Changes, error) {
	c := &Changes{Base: r.base, Head: r.head}
	if r.head == r.base {
		return c, nil
	}
	from, to := &object.Tree{}, &object.Tree{}
	var err error
	if !r.base.IsZero() {
		if from, err = commitTreeObject(r.store, r.base); err != nil {
			return nil, err
		}
	}
	if !r.head.IsZero() {
		if to, err = commitTreeObject(r.store, r.head); err != nil {
			return nil, err
		}
	}
	patch, err := from.PatchContext(ctx, to)
	if err != nil {
		return nil, fmt.Errorf("diff %s..%s: %w", r.base, r.head, err)
	}
	for _, st := range patch.Stats() {
		c.Files = append(c.Files, FileChange{Path: st.Name, Additions: st.Addition, Deletions: st.Deletion})
	}
	var b strings.Builder
	var w io.Writer = &b
	cw := &capped{w: &b, left: limit}
	if limit > 0 {
		w = cw
	}
	if err := patch.Encode(w); err != nil && !errors.Is(err, errCapped) {
		return nil, fmt.Errorf("diff %s..%s: %w", r.base, r.head, err)
	}
	c.Patch, c.Truncated = b.String(), cw.cut
	return c, nil
}

func commitTreeObject(r *overlay, commit plumbing.Hash) (*object.Tree, error) {
	c, err := object.GetCommit(r, commit)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", commit, err)
	}
	t, err := object.GetTree(r, c.TreeHash)
	if err != nil {
		return nil, fmt.Errorf("tree of %s: %w", commit, err)
	}
	return t, nil
}

var errCapped = errors.New("diff cut")

// capped writes to w until left bytes are written, then cuts.
type capped struct {
	w    io.Writer
	left int
	cut  bool
}

func (c *capped) Write(p []byte) (int, error) {
	if len(p) > c.left {
		_, _ = c.w.Write(p[:c.left])
		c.left, c.cut = 0, true
		return 0, errCapped
	}
	c.left -= len(p)
	return c.w.Write(p)
}
