package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
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
	// Submodules checks the submodules (those the checkout writes) out too,
	// recursively, each at the commit the tree records, from a mirror of
	// its own in the same project.
	Submodules bool
	// SubmoduleAuth returns the credentials of a submodule's repository
	// (its URL resolved against the repository's when relative), or an
	// error when its URL may not be used; anonymous when nil.
	SubmoduleAuth func(ctx context.Context, url string) (*Auth, error)
}

// maxSubmoduleDepth bounds nested submodules, as git's default does.
const maxSubmoduleDepth = 10

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
	base plumbing.Hash
	// tags are the annotated tags made in this work tree, by name: tag
	// objects in store, until PushTag pushes them.
	tags map[string]plumbing.Hash
	// subs are the submodules' work trees, closed with this one.
	subs   []*Repo
	closed bool
}

// Checkout checks o out of the mirror into dir (created if needed). The
// Repo holds the mirror until Close.
func (mi *Mirror) Checkout(ctx context.Context, dir string, o CheckoutOptions) (*Repo, error) {
	return mi.checkout(ctx, dir, nil, o, 0)
}

// checkout checks o out into dir, through root when given (a submodule's
// directory, opened below its parent's work tree).
func (mi *Mirror) checkout(ctx context.Context, dir string, root *os.Root, o CheckoutOptions, depth int) (*Repo, error) {
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
	var wt *worktree
	if root != nil {
		wt = &worktree{dir: dir, root: root, scope: sparseScope(sparse), files: map[string]trackedFile{}}
	} else if wt, err = newWorktree(dir, sparse); err != nil {
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
	if o.Submodules {
		if err := r.checkoutSubmodules(ctx, tree, o, depth); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// checkoutSubmodules checks out the submodules the work tree holds (the
// gitlinks of tree it wrote, which .gitmodules names), each from the
// project's mirror of its repository. A relative URL is resolved against
// the repository's, as git does.
func (r *Repo) checkoutSubmodules(ctx context.Context, tree plumbing.Hash, o CheckoutOptions, depth int) error {
	e, err := entryAt(r.store, tree, ".gitmodules")
	if err != nil || e == nil || e.Mode == filemode.Dir || e.Mode == filemode.Submodule {
		return err
	}
	blob, err := object.GetBlob(r.store, e.Hash)
	if err != nil {
		return fmt.Errorf("read .gitmodules: %w", err)
	}
	rd, err := blob.Reader()
	if err != nil {
		return fmt.Errorf("read .gitmodules: %w", err)
	}
	content, err := io.ReadAll(rd)
	_ = rd.Close()
	if err != nil {
		return fmt.Errorf("read .gitmodules: %w", err)
	}
	modules := config.NewModules()
	if err := modules.Unmarshal(content); err != nil {
		return fmt.Errorf("read .gitmodules: %w", err)
	}
	subs := make([]*config.Submodule, 0, len(modules.Submodules))
	for _, s := range modules.Submodules {
		subs = append(subs, s)
	}
	sort.Slice(subs, func(i, j int) bool { return subs[i].Path < subs[j].Path })
	for _, s := range subs {
		p := path.Clean(s.Path)
		tf, ok := r.wt.files[p]
		if !ok || tf.mode != filemode.Submodule {
			continue // not a gitlink of the tree, or outside a sparse checkout
		}
		if depth+1 > maxSubmoduleDepth {
			return fmt.Errorf("submodule %s: nested more than %d deep", s.Name, maxSubmoduleDepth)
		}
		if err := r.checkoutSubmodule(ctx, s, p, tf.hash, o, depth+1); err != nil {
			return fmt.Errorf("submodule %s: %w", s.Name, err)
		}
	}
	return nil
}

func (r *Repo) checkoutSubmodule(ctx context.Context, s *config.Submodule, p string, commit plumbing.Hash, o CheckoutOptions, depth int) error {
	subURL, err := resolveSubmoduleURL(r.URL, s.URL)
	if err != nil {
		return err
	}
	var auth *Auth
	if o.SubmoduleAuth != nil {
		if auth, err = o.SubmoduleAuth(ctx, subURL); err != nil {
			return err
		}
	}
	mgr := r.mirror.manager
	if mgr == nil {
		return errors.New("no mirror manager to fetch it with")
	}
	mi, err := mgr.Sync(ctx, r.mirror.project, subURL, auth)
	if err != nil {
		return err
	}
	// The submodule's directory was written by the checkout below this
	// work tree's root (no links on the way): its files go through a root
	// opened from there.
	root, err := r.wt.root.OpenRoot(filepath.FromSlash(p))
	if err != nil {
		return err
	}
	sub, err := mi.checkout(ctx, filepath.Join(r.Dir, filepath.FromSlash(p)), root,
		CheckoutOptions{Commit: commit.String(), Submodules: true, SubmoduleAuth: o.SubmoduleAuth}, depth)
	if err != nil {
		_ = root.Close()
		return err
	}
	r.subs = append(r.subs, sub)
	return nil
}

// resolveSubmoduleURL resolves a submodule's URL ("./x" and "../x" are
// relative to the repository's URL, as git resolves them).
func resolveSubmoduleURL(repoURL, subURL string) (string, error) {
	if !strings.HasPrefix(subURL, "./") && !strings.HasPrefix(subURL, "../") {
		return subURL, nil
	}
	base, err := url.Parse(strings.TrimSuffix(repoURL, "/") + "/")
	if err != nil {
		return "", err
	}
	rel, err := url.Parse(subURL)
	if err != nil {
		return "", err
	}
	return base.ResolveReference(rel).String(), nil
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
	for _, s := range r.subs {
		s.Close()
	}
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

// ErrTagExists is a tag that exists already, in the work tree or on the
// remote.
var ErrTagExists = errors.New("tag exists")

// Tag creates the annotated tag name at HEAD in the work tree, with
// message and tagger; PushTag pushes it. A tag the remote has already (as
// the mirror last saw it) or the work tree has is an ErrTagExists unless
// force, which replaces it in the work tree (pushing it is still refused
// by the remote's tag, as git push refuses it).
func (r *Repo) Tag(name, message string, tagger Signature, force bool) (plumbing.Hash, error) {
	if r.head.IsZero() {
		return plumbing.ZeroHash, errors.New("nothing to tag: the branch has no commit")
	}
	ref := plumbing.NewTagReferenceName(name)
	if err := ref.Validate(); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("tag %q: %w", name, err)
	}
	if strings.TrimSpace(message) == "" {
		return plumbing.ZeroHash, fmt.Errorf("tag %s: a message is required", name)
	}
	if !force {
		if h := r.mirror.Ref(ref); !h.IsZero() {
			return plumbing.ZeroHash, fmt.Errorf("%w: %s on %s", ErrTagExists, name, r.URL)
		}
		if _, ok := r.tags[name]; ok {
			return plumbing.ZeroHash, fmt.Errorf("%w: %s", ErrTagExists, name)
		}
	}
	t := &object.Tag{
		Name:       name,
		Tagger:     object.Signature{Name: tagger.Name, Email: tagger.Email, When: tagger.When},
		Message:    strings.TrimSpace(message) + "\n",
		TargetType: plumbing.CommitObject,
		Target:     r.head,
	}
	o := r.store.NewEncodedObject()
	if err := t.Encode(o); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encode tag %s: %w", name, err)
	}
	h, err := r.store.SetEncodedObject(o)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("store tag %s: %w", name, err)
	}
	if r.tags == nil {
		r.tags = map[string]plumbing.Hash{}
	}
	r.tags[name] = h
	return h, nil
}

// PushTag pushes the tag name made in the work tree, with the commits it
// needs. A tag the remote holds already is an ErrTagExists, unless it is
// this very tag (pushed before a crash).
func (r *Repo) PushTag(ctx context.Context, name string) error {
	h, ok := r.tags[name]
	if !ok {
		return fmt.Errorf("tag %s: not in the work tree (create it with git-tag)", name)
	}
	t, err := object.GetTag(r.store, h)
	if err != nil {
		return fmt.Errorf("tag %s: %w", name, err)
	}
	objs := memory.NewStorage()
	if err := r.mirror.copyMissing(r.store, &objs.ObjectStorage, t.Target); err != nil {
		return err
	}
	if !r.mirror.store.has(h) {
		o, err := r.store.EncodedObject(plumbing.TagObject, h)
		if err != nil {
			return fmt.Errorf("tag %s: %w", name, err)
		}
		if _, err := objs.SetEncodedObject(o); err != nil {
			return err
		}
	}
	ref := plumbing.NewTagReferenceName(name)
	err = r.mirror.sendPack(ctx, ref, h, &objs.ObjectStorage, plumbing.ZeroHash, func(old plumbing.Hash) error {
		if !old.IsZero() {
			return fmt.Errorf("%w on the remote at %s: %s", ErrTagExists, old, name)
		}
		return nil
	})
	if errors.Is(err, errUpToDate) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("push tag %s: %w", name, scrub(err, r.mirror.auth))
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
