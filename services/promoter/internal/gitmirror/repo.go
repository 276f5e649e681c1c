package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/memory"
)

// overlay stores a work tree's new objects in memory and reads the others
// from the mirror.
type overlay struct {
	*memory.ObjectStorage
	mirror *Mirror
}

func newOverlay(mi *Mirror) *overlay {
	return &overlay{ObjectStorage: &memory.NewStorage().ObjectStorage, mirror: mi}
}

func (o *overlay) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	obj, err := o.ObjectStorage.EncodedObject(t, h)
	if !errors.Is(err, plumbing.ErrObjectNotFound) {
		return obj, err
	}
	obj, err = o.mirror.store.get(h)
	if err != nil {
		return nil, err
	}
	if t != plumbing.AnyObject && obj.Type() != t {
		return nil, plumbing.ErrObjectNotFound
	}
	return obj, nil
}

func (o *overlay) HasEncodedObject(h plumbing.Hash) error {
	if err := o.ObjectStorage.HasEncodedObject(h); err == nil {
		return nil
	}
	if o.mirror.store.has(h) {
		return nil
	}
	return plumbing.ErrObjectNotFound
}

func (o *overlay) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	if n, err := o.ObjectStorage.EncodedObjectSize(h); err == nil {
		return n, nil
	}
	obj, err := o.mirror.store.get(h)
	if err != nil {
		return 0, err
	}
	return obj.Size(), nil
}

var _ storer.EncodedObjectStorer = (*overlay)(nil)

// CheckoutOptions say what to check out: a branch (created empty when
// Create is set and the remote has none), a commit or a tag. Sparse, when
// set, limits the files written to these directories (slash paths relative
// to the repository root); the rest of the tree is kept as it is in
// commits.
type CheckoutOptions struct {
	Branch string
	Create bool
	Commit string
	Tag    string
	Sparse []string
}

// Repo is a work tree checked out of a mirror. It is not safe for
// concurrent use; Close releases it.
type Repo struct {
	URL    string
	Dir    string
	mirror *Mirror
	store  *overlay
	wt     *worktree
	// branch is the local branch (empty when detached).
	branch string
	// head is the local branch's commit (zero on a new, empty branch).
	head plumbing.Hash
	// base is the remote commit the local commits start from.
	base   plumbing.Hash
	closed bool
}

// Checkout checks o out of the mirror into dir (created if needed). The
// Repo holds the mirror until Close.
func (mi *Mirror) Checkout(ctx context.Context, dir string, o CheckoutOptions) (*Repo, error) {
	sparse, err := cleanSparse(o.Sparse)
	if err != nil {
		return nil, err
	}
	st := newOverlay(mi)
	r := &Repo{URL: mi.url, Dir: dir, mirror: mi, store: st}
	var target plumbing.Hash
	switch {
	case o.Commit != "":
		target = plumbing.NewHash(o.Commit)
		if _, err := object.GetCommit(st, target); err != nil || target.String() != strings.ToLower(o.Commit) {
			return nil, fmt.Errorf("commit %s not found in %s", o.Commit, mi.url)
		}
		r.branch = o.Branch
	case o.Tag != "":
		h := mi.Ref(plumbing.NewTagReferenceName(o.Tag))
		if h.IsZero() {
			return nil, fmt.Errorf("tag %s not found in %s", o.Tag, mi.url)
		}
		c, err := peel(st, h)
		if err != nil {
			return nil, fmt.Errorf("tag %s: %w", o.Tag, err)
		}
		target = c
	default:
		branch := o.Branch
		if branch == "" {
			branch = "main"
			if mi.Ref("refs/heads/main").IsZero() && !mi.Ref("refs/heads/master").IsZero() {
				branch = "master"
			}
		}
		r.branch = branch
		target = mi.Ref(plumbing.NewBranchReferenceName(branch))
		if target.IsZero() && !o.Create {
			return nil, fmt.Errorf("branch %s not found in %s (set create to start it)", branch, mi.url)
		}
	}
	r.base, r.head = target, target
	wt, err := newWorktree(dir, sparse)
	if err != nil {
		return nil, err
	}
	r.wt = wt
	mi.acquire()
	if target.IsZero() {
		if err := wt.restamp(); err != nil {
			r.Close()
			return nil, err
		}
		return r, nil // a new, empty branch
	}
	tree, err := commitTree(st, target)
	if err == nil {
		err = wt.checkout(ctx, st, tree)
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("check out %s: %w", target, err)
	}
	return r, nil
}

// cleanSparse checks sparse checkout directories: relative slash paths
// inside the repository, no patterns.
func cleanSparse(dirs []string) ([]string, error) {
	var out []string
	for _, d := range dirs {
		c := path.Clean(strings.TrimPrefix(d, "./"))
		switch {
		case d == "" || strings.HasPrefix(d, "/") || c == ".." || strings.HasPrefix(c, "../"):
			return nil, fmt.Errorf("sparse: %q is not a directory inside the repository", d)
		case strings.ContainsAny(d, "*?[\\"):
			return nil, fmt.Errorf("sparse: %q: patterns are not supported", d)
		case c == ".":
			return nil, nil // the whole tree
		}
		for _, part := range strings.Split(c, "/") {
			if !validName(part) {
				return nil, fmt.Errorf("sparse: %q is not a directory inside the repository", d)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

func peel(s storer.EncodedObjectStorer, h plumbing.Hash) (plumbing.Hash, error) {
	for range 10 {
		obj, err := s.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if obj.Type() != plumbing.TagObject {
			return h, nil
		}
		tag, err := object.DecodeTag(s, obj)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		h = tag.Target
	}
	return plumbing.ZeroHash, errors.New("tag chain too long")
}

// Close releases the mirror. The files stay.
func (r *Repo) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.wt.close()
	r.mirror.release()
}

// Branch is the checked-out branch ("" when detached).
func (r *Repo) Branch() string { return r.branch }

// Head returns the commit HEAD points at (zero on a new, empty branch).
func (r *Repo) Head() plumbing.Hash { return r.head }

// Signature is a commit's author.
type Signature struct {
	Name  string
	Email string
	When  time.Time
}

// Commit records every change of the work tree (files git would ignore
// left out) as a commit on HEAD. It returns the zero hash and no error when
// there is nothing to commit.
func (r *Repo) Commit(message string, author Signature) (plumbing.Hash, error) {
	edits, seen, err := r.wt.scan(r.store)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("read the work tree: %w", err)
	}
	if len(edits) == 0 {
		return plumbing.ZeroHash, r.wt.track(seen)
	}
	baseTree, err := commitTree(r.store, r.head)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	tree, err := editTree(r.store, baseTree, edits)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if tree == baseTree {
		return plumbing.ZeroHash, r.wt.track(seen)
	}
	sig := object.Signature{Name: author.Name, Email: author.Email, When: author.When}
	c := &object.Commit{Author: sig, Committer: sig, Message: message, TreeHash: tree}
	if !r.head.IsZero() {
		c.ParentHashes = []plumbing.Hash{r.head}
	}
	h, err := storeCommit(r.store, c)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	r.head = h
	return h, r.wt.track(seen)
}

func storeCommit(s storer.EncodedObjectStorer, c *object.Commit) (plumbing.Hash, error) {
	o := s.NewEncodedObject()
	if err := c.Encode(o); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encode commit: %w", err)
	}
	return s.SetEncodedObject(o)
}

// Clean reports whether the work tree has no changes.
func (r *Repo) Clean() (bool, error) {
	edits, _, err := r.wt.scan(r.store)
	if err != nil {
		return false, err
	}
	return len(edits) == 0, nil
}

// Tag creates a lightweight tag at HEAD and pushes it.
func (r *Repo) Tag(ctx context.Context, tag string) error {
	if r.head.IsZero() {
		return errors.New("nothing to tag: the branch has no commit")
	}
	ref := plumbing.NewTagReferenceName(tag)
	objs := memory.NewStorage()
	if err := r.mirror.copyMissing(r.store, &objs.ObjectStorage, r.head); err != nil {
		return err
	}
	err := r.mirror.sendPack(ctx, ref, r.head, &objs.ObjectStorage, plumbing.ZeroHash, func(old plumbing.Hash) error {
		if !old.IsZero() {
			return fmt.Errorf("tag %s exists on the remote at %s", tag, old)
		}
		return nil
	})
	if errors.Is(err, errUpToDate) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("push tag %s: %w", tag, scrub(err, r.mirror.auth))
	}
	return nil
}

// Push puts HEAD's commits on the remote branch target. Pushes to one
// branch of one mirror queue up and go out together: each promotion's
// commits are replayed onto the branch's tip as it is then (a three-way
// merge, file by file), so promotions that change different lines never
// fail for having run at once. When the remote branch moved for another
// reason the queue fetches it, replays again and retries, up to attempts
// times with a random pause. Commits the remote already holds (a push
// that landed before a crash) are not pushed again, and a replay that
// changes nothing adds no commit. A conflict wraps ErrConflict. Push
// returns the commit holding the promotion's changes on the remote.
func (r *Repo) Push(ctx context.Context, target string, force bool, attempts int) (plumbing.Hash, error) {
	if target == "" {
		target = r.branch
	}
	if target == "" {
		return plumbing.ZeroHash, errors.New("no branch to push: HEAD is detached and no targetBranch is set")
	}
	if r.head.IsZero() {
		return plumbing.ZeroHash, errors.New("nothing to push: the branch has no commit")
	}
	req := &pushRequest{ctx: ctx, store: r.store, base: r.base, head: r.head, force: force, attempts: max(attempts, 1), done: make(chan pushResult, 1)}
	r.mirror.queue(target).submit(req)
	var res pushResult
	select {
	case res = <-req.done:
	case <-ctx.Done():
		return plumbing.ZeroHash, ctx.Err()
	}
	if res.err != nil {
		return plumbing.ZeroHash, fmt.Errorf("push to %s: %w", target, scrub(res.err, r.mirror.auth))
	}
	if target == r.branch && res.commit != r.head {
		// The work tree follows the replayed commit.
		from, err := commitTree(r.store, r.head)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		to, err := commitTree(r.store, res.commit)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if err := r.wt.update(r.store, from, to); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("update the work tree: %w", err)
		}
		r.head = res.commit
	}
	if target == r.branch {
		r.base = r.head
	}
	return res.commit, nil
}
