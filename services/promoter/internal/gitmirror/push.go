package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/caravan-cd/caravan/pkg/creds"
)

// errUpToDate: the remote ref already holds the commit.
var errUpToDate = errors.New("already up to date")

// Bounds of a branch queue's work.
const (
	// pushTimeout bounds one fetch or push of a queue.
	pushTimeout = 5 * time.Minute
	// maxWalk bounds the commits walked to tell whether a commit is
	// already on the branch.
	maxWalk = 1000
	// retryBase is the first pause before pushing again after the branch
	// moved; it doubles per attempt (up to retryMax), randomised.
	retryBase = 50 * time.Millisecond
	retryMax  = 2 * time.Second
)

// pushRequest asks a branch queue to put the commits base..head (first
// parents) of a work tree on the branch.
type pushRequest struct {
	ctx      context.Context
	store    storer.EncodedObjectStorer
	base     plumbing.Hash
	head     plumbing.Hash
	force    bool
	attempts int
	tries    int
	done     chan pushResult
}

type pushResult struct {
	commit plumbing.Hash
	err    error
}

func (r *pushRequest) finish(commit plumbing.Hash, err error) {
	r.done <- pushResult{commit: commit, err: err}
}

// branchQueue orders the pushes of this process to one branch of one
// mirror: while a push is out, the requests that arrive wait and then go
// out together in the next.
type branchQueue struct {
	mi  *Mirror
	ref plumbing.ReferenceName

	mu      sync.Mutex
	pending []*pushRequest
	running bool
	// tip is the branch as this process last pushed it, while the mirror
	// still holds fetched what it held then (fetched); otherwise the
	// mirror's is newer.
	tip, fetched plumbing.Hash
}

func (mi *Mirror) queue(branch string) *branchQueue {
	mi.branchMu.Lock()
	defer mi.branchMu.Unlock()
	q, ok := mi.branches[branch]
	if !ok {
		q = &branchQueue{mi: mi, ref: plumbing.NewBranchReferenceName(branch)}
		mi.branches[branch] = q
	}
	return q
}

func (q *branchQueue) submit(r *pushRequest) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = append(q.pending, r)
	if !q.running {
		q.running = true
		q.mi.acquire()
		go q.run()
	}
}

func (q *branchQueue) run() {
	defer q.mi.release()
	for {
		q.mu.Lock()
		batch := q.pending
		q.pending = nil
		if len(batch) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		var group []*pushRequest
		for _, r := range batch {
			if err := r.ctx.Err(); err != nil {
				r.finish(plumbing.ZeroHash, err)
				continue
			}
			if r.force {
				q.push(group)
				group = nil
				q.push([]*pushRequest{r})
				continue
			}
			group = append(group, r)
		}
		q.push(group)
	}
}

// push replays the requests onto the branch, in order, and pushes the
// result once; when the branch moved it fetches and tries again.
func (q *branchQueue) push(reqs []*pushRequest) {
	for len(reqs) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
		reqs = q.attempt(ctx, reqs)
		cancel()
	}
}

// attempt makes one push of reqs and returns those to try again.
func (q *branchQueue) attempt(ctx context.Context, reqs []*pushRequest) []*pushRequest {
	base := q.mi.Ref(q.ref)
	tip := base
	q.mu.Lock()
	if !q.tip.IsZero() && q.fetched == tip {
		tip = q.tip
	}
	q.mu.Unlock()
	batch := memory.NewStorage()
	chain := tip
	var included []*pushRequest
	var commits []plumbing.Hash
	for _, r := range reqs {
		s := &layered{top: &batch.ObjectStorage, under: r.store}
		next, err := q.place(s, r, chain)
		if err != nil {
			r.finish(plumbing.ZeroHash, err)
			continue
		}
		if err := q.mi.copyMissing(s, &batch.ObjectStorage, next); err != nil {
			r.finish(plumbing.ZeroHash, err)
			continue
		}
		chain = next
		included = append(included, r)
		commits = append(commits, next)
	}
	if len(included) == 0 {
		return nil
	}
	if chain == tip {
		for i, r := range included {
			r.finish(commits[i], nil)
		}
		return nil
	}
	force := len(included) == 1 && included[0].force
	expected := tip
	if force {
		expected = plumbing.ZeroHash
	}
	err := q.mi.sendPack(ctx, q.ref, chain, &batch.ObjectStorage, expected, func(old plumbing.Hash) error {
		if force || old == tip {
			return nil
		}
		return fmt.Errorf("non-fast-forward update: %s moved on the remote", q.ref)
	})
	if err == nil || errors.Is(err, errUpToDate) {
		objs := make([]plumbing.EncodedObject, 0, len(batch.Objects))
		for _, o := range batch.Objects {
			objs = append(objs, o)
		}
		q.mi.store.remember(objs)
		// The mirror learns the push, so that the next fetch finds the
		// branch where it is and downloads nothing. Not fatal: without
		// it the next fetch downloads the push back.
		_ = q.mi.advance(q.ref, base, chain, objs)
		q.mu.Lock()
		q.tip, q.fetched = chain, q.mi.Ref(q.ref)
		q.mu.Unlock()
		for i, r := range included {
			r.finish(commits[i], nil)
		}
		return nil
	}
	if !IsRace(err) {
		for _, r := range included {
			r.finish(plumbing.ZeroHash, err)
		}
		return nil
	}
	// The branch moved: fetch it and replay again, after a pause.
	var again []*pushRequest
	for _, r := range included {
		r.tries++
		if r.tries >= r.attempts {
			r.finish(plumbing.ZeroHash, err)
			continue
		}
		again = append(again, r)
	}
	if len(again) == 0 {
		return nil
	}
	if ferr := q.mi.Fetch(ctx); ferr != nil {
		for _, r := range again {
			r.finish(plumbing.ZeroHash, ferr)
		}
		return nil
	}
	q.mu.Lock()
	q.tip = plumbing.ZeroHash
	q.mu.Unlock()
	wait := min(retryBase<<min(again[0].tries, 10), retryMax)
	time.Sleep(rand.N(wait) + wait/2)
	return again
}

// place returns the commit that puts r's changes on top of onto: onto
// itself when they are there already, r's head when it descends from
// onto, or r's commits replayed onto it.
func (q *branchQueue) place(s storer.EncodedObjectStorer, r *pushRequest, onto plumbing.Hash) (plumbing.Hash, error) {
	switch {
	case r.force, onto.IsZero(), onto == r.base:
		return r.head, nil
	case onto == r.head:
		return onto, nil
	}
	landed, builds, err := search(s, onto, r.head, r.base)
	switch {
	case err != nil:
		return plumbing.ZeroHash, err
	case landed:
		return onto, nil // pushed before, e.g. by this promotion before a crash
	case !builds:
		// The branch does not build on where the commits started: maybe
		// they build on it.
		if ok, _, err := search(s, r.head, onto, plumbing.ZeroHash); err != nil || ok {
			return r.head, err
		}
	}
	var local []*object.Commit
	for h := r.head; h != r.base && !h.IsZero(); {
		if len(local) >= maxWalk {
			return plumbing.ZeroHash, fmt.Errorf("more than %d local commits to replay", maxWalk)
		}
		c, err := object.GetCommit(s, h)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		local = append(local, c)
		if c.NumParents() == 0 {
			break
		}
		h = c.ParentHashes[0]
	}
	cur := onto
	for i := len(local) - 1; i >= 0; i-- {
		c := local[i]
		parentTree := emptyTree
		if c.NumParents() > 0 {
			var err error
			if parentTree, err = commitTree(s, c.ParentHashes[0]); err != nil {
				return plumbing.ZeroHash, err
			}
		}
		curTree, err := commitTree(s, cur)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		tree, err := replayTree(s, parentTree, c.TreeHash, curTree)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("replay %s: %w", c.Hash.String()[:7], err)
		}
		if tree == curTree {
			continue // its changes are on the branch already: no empty commit
		}
		nc := &object.Commit{Author: c.Author, Committer: c.Committer, Message: c.Message, TreeHash: tree, ParentHashes: []plumbing.Hash{cur}}
		if cur, err = storeCommit(s, nc); err != nil {
			return plumbing.ZeroHash, err
		}
	}
	return cur, nil
}

// search walks the history of from (at most maxWalk commits, not past
// stop) and reports whether it holds want and whether it reached stop.
func search(s storer.EncodedObjectStorer, from, want, stop plumbing.Hash) (found, reached bool, err error) {
	seen := map[plumbing.Hash]bool{}
	queue := []plumbing.Hash{from}
	for len(queue) > 0 && len(seen) < maxWalk {
		h := queue[0]
		queue = queue[1:]
		switch {
		case h == want:
			return true, false, nil
		case h == stop:
			reached = true
			continue
		case seen[h] || h.IsZero():
			continue
		}
		seen[h] = true
		c, err := object.GetCommit(s, h)
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			continue
		}
		if err != nil {
			return false, false, err
		}
		queue = append(queue, c.ParentHashes...)
	}
	return false, reached, nil
}

// copyMissing copies into dst the objects reachable from commit that the
// remote does not have (as far as the mirror knows), reading them from s.
func (mi *Mirror) copyMissing(s storer.EncodedObjectStorer, dst storer.EncodedObjectStorer, commit plumbing.Hash) error {
	objs, err := mi.missing(s, []plumbing.Hash{commit})
	if err != nil {
		return err
	}
	for _, o := range objs {
		if _, err := dst.SetEncodedObject(o); err != nil {
			return err
		}
	}
	return nil
}

// missing lists the objects reachable from commits that the mirror does
// not hold, reading them from s.
func (mi *Mirror) missing(s storer.EncodedObjectStorer, commits []plumbing.Hash) ([]plumbing.EncodedObject, error) {
	var out []plumbing.EncodedObject
	seen := map[plumbing.Hash]bool{}
	add := func(h plumbing.Hash) (plumbing.EncodedObject, bool, error) {
		if seen[h] || mi.store.has(h) {
			return nil, false, nil
		}
		seen[h] = true
		o, err := s.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return nil, false, fmt.Errorf("read %s: %w", h, err)
		}
		out = append(out, o)
		return o, true, nil
	}
	var walkTree func(h plumbing.Hash) error
	walkTree = func(h plumbing.Hash) error {
		o, ok, err := add(h)
		if err != nil || !ok {
			return err
		}
		t, err := object.DecodeTree(s, o)
		if err != nil {
			return err
		}
		for _, e := range t.Entries {
			switch e.Mode {
			case filemode.Dir:
				err = walkTree(e.Hash)
			case filemode.Submodule:
			default:
				_, _, err = add(e.Hash)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	queue := append([]plumbing.Hash(nil), commits...)
	for len(queue) > 0 {
		h := queue[0]
		queue = queue[1:]
		o, ok, err := add(h)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		c, err := object.DecodeCommit(s, o)
		if err != nil {
			return nil, err
		}
		if err := walkTree(c.TreeHash); err != nil {
			return nil, err
		}
		queue = append(queue, c.ParentHashes...)
	}
	return out, nil
}

// layered writes to top and reads from top, then under.
type layered struct {
	top   *memory.ObjectStorage
	under storer.EncodedObjectStorer
}

func (l *layered) NewEncodedObject() plumbing.EncodedObject { return l.top.NewEncodedObject() }

func (l *layered) SetEncodedObject(o plumbing.EncodedObject) (plumbing.Hash, error) {
	return l.top.SetEncodedObject(o)
}

func (l *layered) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	if o, err := l.top.EncodedObject(t, h); err == nil {
		return o, nil
	}
	return l.under.EncodedObject(t, h)
}

func (l *layered) IterEncodedObjects(t plumbing.ObjectType) (storer.EncodedObjectIter, error) {
	return l.top.IterEncodedObjects(t)
}

func (l *layered) HasEncodedObject(h plumbing.Hash) error {
	if l.top.HasEncodedObject(h) == nil {
		return nil
	}
	return l.under.HasEncodedObject(h)
}

func (l *layered) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	if n, err := l.top.EncodedObjectSize(h); err == nil {
		return n, nil
	}
	return l.under.EncodedObjectSize(h)
}

func (l *layered) AddAlternate(string) error { return errors.New("not supported") }

// IsRace reports whether a push error means the remote branch moved on:
// go-git reports it as plain text, "non-fast-forward update" from a full
// history and "object not found" from a shallow one; servers say "fetch
// first", "stale info", "failed to update ref" or "cannot lock ref".
func IsRace(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	for _, s := range []string{"non-fast-forward", "object not found", "fetch first", "stale info", "failed to update ref", "cannot lock ref", "failed to lock"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// sendPack updates ref on the remote from old (as the remote advertises
// it) to commit, sending every object of objs.
//
// go-git's own push computes what to send by listing every object the
// remote's refs reach — the whole history, seconds on a long one. A work
// tree knows better: what it created lives in memory and everything else
// came from the remote. The server applies the update only if ref still
// holds the advertised value, which makes a concurrent push a clean,
// retryable rejection.
//
// With expected set, and the server's capabilities known from an earlier
// push, the advertisement is skipped: the update names expected as the
// old value, which the server checks.
func (mi *Mirror) sendPack(ctx context.Context, ref plumbing.ReferenceName, commit plumbing.Hash, objs storer.EncodedObjectStorer, expected plumbing.Hash, accept func(old plumbing.Hash) error) error {
	ep, err := transport.NewEndpoint(mi.url)
	if err != nil {
		return err
	}
	cl, err := client.NewClient(ep)
	if err != nil {
		return err
	}
	auth, err := creds.GitAuth(mi.auth, mi.url)
	if err != nil {
		return err
	}
	sess, err := cl.NewReceivePackSession(ep, auth)
	if err != nil {
		return err
	}
	defer func() { _ = sess.Close() }()
	caps := mi.pushCaps.Load()
	old := expected
	if expected.IsZero() || caps == nil {
		ar, err := sess.AdvertisedReferencesContext(ctx)
		if err != nil && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return err
		}
		old = plumbing.ZeroHash
		caps = nil
		if ar != nil {
			refs, err := ar.AllReferences()
			if err != nil {
				return err
			}
			if cur, err := refs.Reference(ref); err == nil {
				old = cur.Hash()
			}
			caps = ar.Capabilities
			mi.pushCaps.Store(caps)
		}
		if old == commit {
			return errUpToDate
		}
		if err := accept(old); err != nil {
			return err
		}
	}
	var hashes []plumbing.Hash
	iter, err := objs.IterEncodedObjects(plumbing.AnyObject)
	if err != nil {
		return err
	}
	if err := iter.ForEach(func(o plumbing.EncodedObject) error {
		hashes = append(hashes, o.Hash())
		return nil
	}); err != nil {
		return err
	}
	req := packp.NewReferenceUpdateRequest()
	if caps != nil {
		req = packp.NewReferenceUpdateRequestFromCapabilities(caps)
	}
	req.Commands = []*packp.Command{{Name: ref, Old: old, New: commit}}
	pr, pw := io.Pipe()
	go func() {
		_, err := packfile.NewEncoder(pw, objs, false).Encode(hashes, 10)
		pw.CloseWithError(err)
	}()
	req.Packfile = pr
	rs, err := sess.ReceivePack(ctx, req)
	_ = pr.Close()
	if err != nil {
		return err
	}
	if rs != nil {
		if err := rs.Error(); err != nil {
			return fmt.Errorf("remote refused the update of %s: %w", ref, err)
		}
	}
	return nil
}
