package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/memory"
)

// ErrConflict: local commits could not be re-applied on the remote's new
// tip because the same file changed on both sides.
var ErrConflict = errors.New("conflicting changes")

// overlay stores new objects in memory and reads the others from the
// mirror.
type overlay struct {
	*memory.Storage
	mirror *Mirror
}

func (o *overlay) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	obj, err := o.Storage.EncodedObject(t, h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return o.mirror.object(t, h)
	}
	return obj, err
}

func (o *overlay) HasEncodedObject(h plumbing.Hash) error {
	if err := o.Storage.HasEncodedObject(h); err == nil {
		return nil
	}
	return o.mirror.has(h)
}

func (o *overlay) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	n, err := o.Storage.EncodedObjectSize(h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return o.mirror.size(h)
	}
	return n, err
}

var _ storer.Storer = (*overlay)(nil)

// CheckoutOptions say what to check out: a branch (created empty when
// Create is set and the remote has none), a commit or a tag.
type CheckoutOptions struct {
	Branch string
	Create bool
	Commit string
	Tag    string
	// Sparse, when set, checks out only these directories.
	Sparse []string
	// Submodules initialises and updates the submodules, recursively.
	Submodules bool
}

// Repo is a work tree checked out of a mirror.
type Repo struct {
	URL    string
	Dir    string
	mirror *Mirror
	auth   *Auth
	repo   *git.Repository
	// branch is the local branch (empty when detached).
	branch string
	// base is the remote commit the local branch started from.
	base plumbing.Hash
}

// Checkout checks o out of the mirror into dir.
func (mi *Mirror) Checkout(dir string, auth *Auth, o CheckoutOptions) (*Repo, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	st := &overlay{Storage: memory.NewStorage(), mirror: mi}
	// The work tree is written through a file system bound to dir: a
	// symbolic link in the tree cannot lead a write out of it.
	repo, err := git.Init(st, osfs.New(dir, osfs.WithBoundOS()))
	if err != nil {
		return nil, fmt.Errorf("init work tree: %w", err)
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{mi.url}}); err != nil {
		return nil, fmt.Errorf("init work tree: %w", err)
	}
	r := &Repo{URL: mi.url, Dir: dir, mirror: mi, auth: auth, repo: repo}
	var target plumbing.Hash
	switch {
	case o.Commit != "":
		target = plumbing.NewHash(o.Commit)
		if _, err := object.GetCommit(st, target); err != nil {
			return nil, fmt.Errorf("commit %s not found in %s", o.Commit, mi.url)
		}
		if o.Branch != "" {
			r.branch = o.Branch
		}
	case o.Tag != "":
		h, err := mi.Ref(plumbing.NewTagReferenceName(o.Tag))
		if err != nil || h.IsZero() {
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
			if h, _ := mi.Ref("refs/heads/main"); h.IsZero() {
				if h, _ := mi.Ref("refs/heads/master"); !h.IsZero() {
					branch = "master"
				}
			}
		}
		r.branch = branch
		h, err := mi.Ref(plumbing.NewBranchReferenceName(branch))
		if err != nil {
			return nil, err
		}
		if h.IsZero() && !o.Create {
			return nil, fmt.Errorf("branch %s not found in %s (set create to start it)", branch, mi.url)
		}
		target = h
	}
	r.base = target
	if r.branch != "" {
		ref := plumbing.NewBranchReferenceName(r.branch)
		if err := st.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, ref)); err != nil {
			return nil, err
		}
		if !target.IsZero() {
			if err := st.SetReference(plumbing.NewHashReference(ref, target)); err != nil {
				return nil, err
			}
			if err := st.SetReference(plumbing.NewHashReference(plumbing.NewRemoteReferenceName("origin", r.branch), target)); err != nil {
				return nil, err
			}
		}
	} else if err := st.SetReference(plumbing.NewHashReference(plumbing.HEAD, target)); err != nil {
		return nil, err
	}
	if target.IsZero() {
		return r, nil // a new, empty branch
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, err
	}
	reset := &git.ResetOptions{Commit: target, Mode: git.HardReset}
	if len(o.Sparse) > 0 {
		err = wt.ResetSparsely(reset, o.Sparse)
	} else {
		err = wt.Reset(reset)
	}
	if err != nil {
		return nil, fmt.Errorf("check out %s: %w", target, err)
	}
	if o.Submodules {
		if err := r.updateSubmodules(wt); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// updateSubmodules checks the work tree's submodules out, recursively,
// with the repository's credentials. A submodule whose URL is relative is
// found beside the repository.
func (r *Repo) updateSubmodules(wt *git.Worktree) error {
	subs, err := wt.Submodules()
	if err != nil {
		return fmt.Errorf("submodules: %w", err)
	}
	for _, s := range subs {
		cfg := s.Config()
		if strings.HasPrefix(cfg.URL, "./") || strings.HasPrefix(cfg.URL, "../") {
			base, err := url.Parse(strings.TrimSuffix(r.URL, "/") + "/")
			if err != nil {
				return fmt.Errorf("submodule %s: %w", cfg.Name, err)
			}
			rel, err := url.Parse(cfg.URL)
			if err != nil {
				return fmt.Errorf("submodule %s: %w", cfg.Name, err)
			}
			cfg.URL = base.ResolveReference(rel).String()
		}
		err := s.Update(&git.SubmoduleUpdateOptions{Init: true, Auth: r.auth.method(), RecurseSubmodules: git.DefaultSubmoduleRecursionDepth})
		if err != nil {
			return fmt.Errorf("submodule %s: %w", cfg.Name, scrub(err, r.auth))
		}
	}
	return nil
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

// Branch is the checked-out branch ("" when detached).
func (r *Repo) Branch() string { return r.branch }

// Head returns the commit HEAD points at (zero on a new, empty branch).
func (r *Repo) Head() plumbing.Hash {
	ref, err := r.repo.Head()
	if err != nil {
		return plumbing.ZeroHash
	}
	return ref.Hash()
}

// Signature is a commit's author.
type Signature struct {
	Name  string
	Email string
	When  time.Time
}

// Commit stages every change of the work tree and commits it. It returns
// the zero hash and no error when there is nothing to commit.
func (r *Repo) Commit(message string, author Signature) (plumbing.Hash, error) {
	wt, err := r.repo.Worktree()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if err := wt.AddWithOptions(&git.AddOptions{All: true}); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("stage changes: %w", err)
	}
	status, err := wt.Status()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("status: %w", err)
	}
	if status.IsClean() {
		return plumbing.ZeroHash, nil
	}
	sig := &object.Signature{Name: author.Name, Email: author.Email, When: author.When}
	h, err := wt.Commit(message, &git.CommitOptions{Author: sig, Committer: sig})
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("commit: %w", err)
	}
	return h, nil
}

// Clean reports whether the work tree has no changes.
func (r *Repo) Clean() (bool, error) {
	wt, err := r.repo.Worktree()
	if err != nil {
		return false, err
	}
	status, err := wt.Status()
	if err != nil {
		return false, err
	}
	return status.IsClean(), nil
}

// ErrTagExists is a tag that exists already, in the work tree or on the
// remote.
var ErrTagExists = errors.New("tag exists")

// Tag creates the annotated tag name at HEAD in the work tree, with
// message and tagger. A tag the remote has already is an ErrTagExists
// unless force, which replaces it in the work tree (pushing it is still
// refused by the remote's tag, as git push refuses it).
func (r *Repo) Tag(name, message string, tagger Signature, force bool) (plumbing.Hash, error) {
	head := r.Head()
	if head.IsZero() {
		return plumbing.ZeroHash, errors.New("nothing to tag: the branch has no commit")
	}
	ref := plumbing.NewTagReferenceName(name)
	if !force {
		if h, _ := r.mirror.Ref(ref); !h.IsZero() {
			return plumbing.ZeroHash, fmt.Errorf("%w: %s on %s", ErrTagExists, name, r.URL)
		}
		if _, err := r.repo.Storer.Reference(ref); err == nil {
			return plumbing.ZeroHash, fmt.Errorf("%w: %s", ErrTagExists, name)
		}
	}
	_ = r.repo.Storer.RemoveReference(ref)
	t, err := r.repo.CreateTag(name, head, &git.CreateTagOptions{
		Tagger:  &object.Signature{Name: tagger.Name, Email: tagger.Email, When: tagger.When},
		Message: message,
	})
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("create tag %s: %w", name, err)
	}
	return t.Hash(), nil
}

// PushTag pushes the tag name of the work tree. A tag the remote holds
// already is an ErrTagExists, unless it is this very tag (pushed before a
// crash).
func (r *Repo) PushTag(ctx context.Context, name string) error {
	ref := plumbing.NewTagReferenceName(name)
	t, err := r.repo.Storer.Reference(ref)
	if err != nil {
		return fmt.Errorf("tag %s: not in the work tree: %w", name, err)
	}
	err = r.sendPack(ctx, ref, t.Hash(), func(old plumbing.Hash) error {
		if !old.IsZero() {
			return fmt.Errorf("%w on the remote at %s: %s", ErrTagExists, old, name)
		}
		return nil
	})
	if errors.Is(err, errUpToDate) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("push tag %s: %w", name, scrub(err, r.auth))
	}
	return nil
}

// IsRace reports whether a push error means the remote branch moved on:
// go-git reports it as plain text, "non-fast-forward update" from a full
// history and "object not found" from a shallow one.
func IsRace(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	for _, s := range []string{"non-fast-forward", "object not found", "fetch first", "stale info", "failed to update ref", "cannot lock ref"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// Push pushes HEAD to target. When the remote branch moved on since the
// checkout it re-fetches, re-applies the local commits on the new tip and
// tries again, up to attempts times. A HEAD the remote already has (a push
// that landed before a crash) is not pushed again. It returns the commit
// the remote branch holds.
func (r *Repo) Push(ctx context.Context, target string, force bool, attempts int) (plumbing.Hash, error) {
	if target == "" {
		target = r.branch
	}
	if target == "" {
		return plumbing.ZeroHash, errors.New("no branch to push: HEAD is detached and no targetBranch is set")
	}
	head := r.Head()
	if head.IsZero() {
		return plumbing.ZeroHash, errors.New("nothing to push: the branch has no commit")
	}
	for attempt := 1; ; attempt++ {
		err := r.push(ctx, target, force)
		if err == nil || errors.Is(err, git.NoErrAlreadyUpToDate) {
			return r.Head(), nil
		}
		if !IsRace(err) || attempt >= attempts {
			return plumbing.ZeroHash, fmt.Errorf("push to %s: %w", target, scrub(err, r.auth))
		}
		if err := r.mirror.Fetch(ctx, r.auth); err != nil {
			return plumbing.ZeroHash, err
		}
		tip, err := r.mirror.Ref(plumbing.NewBranchReferenceName(target))
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if tip.IsZero() {
			continue
		}
		landed, err := r.contains(tip, r.Head())
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if landed {
			return tip, nil // pushed before, e.g. by this promotion before a crash
		}
		if err := r.rebase(tip); err != nil {
			return plumbing.ZeroHash, err
		}
		select {
		case <-ctx.Done():
			return plumbing.ZeroHash, ctx.Err()
		case <-time.After(time.Duration(attempt*attempt) * 20 * time.Millisecond):
		}
	}
}

func (r *Repo) push(ctx context.Context, target string, force bool) error {
	dst := plumbing.NewBranchReferenceName(target)
	head := r.Head()
	err := r.sendPack(ctx, dst, head, func(old plumbing.Hash) error {
		switch {
		case force, old.IsZero():
			return nil
		case target == r.branch && old == r.base:
			return nil
		}
		// The remote branch moved (or is another branch): only a commit
		// that descends from it is a fast-forward.
		if ok, err := r.contains(head, old); err == nil && ok {
			return nil
		}
		return fmt.Errorf("non-fast-forward update: %s", dst)
	})
	if errors.Is(err, errUpToDate) {
		return nil
	}
	if err != nil {
		return err
	}
	if target == r.branch {
		r.base = head
	}
	return nil
}

// contains reports whether commit is tip or one of its recent ancestors.
func (r *Repo) contains(tip, commit plumbing.Hash) (bool, error) {
	if tip == commit {
		return true, nil
	}
	c, err := object.GetCommit(r.repo.Storer, tip)
	if err != nil {
		return false, err
	}
	const maxWalk = 1000
	n := 0
	found := false
	err = object.NewCommitPreorderIter(c, nil, nil).ForEach(func(c *object.Commit) error {
		n++
		if c.Hash == commit {
			found = true
			return storer.ErrStop
		}
		if n >= maxWalk {
			return storer.ErrStop
		}
		return nil
	})
	return found, err
}

// rebase re-applies the local commits (base..HEAD, first parents) on tip,
// file by file: a file the remote changed as well is a conflict unless both
// sides agree.
func (r *Repo) rebase(tip plumbing.Hash) error {
	st := r.repo.Storer
	var local []*object.Commit
	for h := r.Head(); !h.IsZero() && h != r.base; {
		c, err := object.GetCommit(st, h)
		if err != nil {
			return err
		}
		local = append(local, c)
		if c.NumParents() == 0 {
			break
		}
		h = c.ParentHashes[0]
	}
	tipCommit, err := object.GetCommit(st, tip)
	if err != nil {
		return err
	}
	tipTree, err := tipCommit.Tree()
	if err != nil {
		return err
	}
	wt, err := r.repo.Worktree()
	if err != nil {
		return err
	}
	ref := plumbing.NewBranchReferenceName(r.branch)
	if err := st.SetReference(plumbing.NewHashReference(ref, tip)); err != nil {
		return err
	}
	if err := st.SetReference(plumbing.NewHashReference(plumbing.NewRemoteReferenceName("origin", r.branch), tip)); err != nil {
		return err
	}
	if err := wt.Reset(&git.ResetOptions{Commit: tip, Mode: git.HardReset}); err != nil {
		return err
	}
	r.base = tip
	for i := len(local) - 1; i >= 0; i-- {
		c := local[i]
		if err := r.apply(c, tipTree); err != nil {
			return err
		}
		sig := c.Author
		committer := c.Committer
		if _, err := wt.Commit(c.Message, &git.CommitOptions{Author: &sig, Committer: &committer, AllowEmptyCommits: true}); err != nil {
			return fmt.Errorf("re-apply %s: %w", c.Hash, err)
		}
	}
	return nil
}

// apply writes the changes c made to its parent into the work tree.
func (r *Repo) apply(c *object.Commit, upstream *object.Tree) error {
	tree, err := c.Tree()
	if err != nil {
		return err
	}
	var parentTree *object.Tree
	if c.NumParents() > 0 {
		p, err := c.Parent(0)
		if err != nil {
			return err
		}
		if parentTree, err = p.Tree(); err != nil {
			return err
		}
	} else {
		parentTree = &object.Tree{}
	}
	changes, err := object.DiffTree(parentTree, tree)
	if err != nil {
		return err
	}
	wt, err := r.repo.Worktree()
	if err != nil {
		return err
	}
	for _, ch := range changes {
		path := ch.To.Name
		if path == "" {
			path = ch.From.Name
		}
		cur, err := upstream.FindEntry(path)
		var curHash plumbing.Hash
		if err == nil {
			curHash = cur.Hash
		}
		if curHash != ch.From.TreeEntry.Hash && curHash != ch.To.TreeEntry.Hash {
			return fmt.Errorf("%w: %s changed on the remote as well", ErrConflict, path)
		}
		full := filepath.Join(r.Dir, filepath.FromSlash(path))
		if ch.To.Name == "" {
			if err := os.Remove(full); err != nil && !os.IsNotExist(err) {
				return err
			}
			if _, err := wt.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				_ = err // already gone from the index
			}
			continue
		}
		f, err := tree.File(path)
		if err != nil {
			return err
		}
		rd, err := f.Reader()
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
			_ = rd.Close()
			return err
		}
		mode, _ := f.Mode.ToOSFileMode()
		out, err := os.OpenFile(full, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode.Perm())
		if err != nil {
			_ = rd.Close()
			return err
		}
		_, err = io.Copy(out, rd)
		_ = rd.Close()
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if _, err := wt.Add(path); err != nil {
			return err
		}
	}
	return nil
}

// redacted hides a secret in an error's text.
type redacted struct {
	err    error
	secret string
}

func (e redacted) Error() string {
	return strings.ReplaceAll(e.err.Error(), e.secret, "***")
}

func (e redacted) Unwrap() error { return e.err }
