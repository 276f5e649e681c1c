// Package gitdiff reads what a promotion pushed and what changed between
// two commits, from the repository itself: the gateway fetches the
// repository into memory (with the project's git credentials), then
// computes a unified diff of a commit against its parent, or the commits
// between two commits. Results are cached by repository, commit and the
// credentials that read them (which never change together): a project
// never gets a diff fetched with another project's credentials.
package gitdiff

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/caravan-cd/caravan/pkg/creds"
)

// ErrNotFound means the commit is not in the repository.
var ErrNotFound = errors.New("commit not found in the repository")

// MaxPatchBytes bounds a diff's text; longer diffs are cut.
const MaxPatchBytes = 1 << 20

// Auth is a repository's credentials (pkg/creds); nil: anonymous.
type Auth = creds.Credentials

// File is one changed file of a diff.
type File struct {
	Path      string `json:"path"`
	From      string `json:"from,omitempty"`
	Additions int    `json:"additions"`
	Deletions int    `json:"deletions"`
}

// Diff is what one commit changed against its first parent.
type Diff struct {
	RepoURL string    `json:"repoURL"`
	Commit  string    `json:"commit"`
	Parent  string    `json:"parent,omitempty"`
	Message string    `json:"message"`
	Author  string    `json:"author"`
	When    time.Time `json:"when"`
	Files   []File    `json:"files"`
	// Patch is the unified diff, cut at MaxPatchBytes (Truncated says so).
	Patch     string `json:"patch"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Commit is one commit of a log.
type Commit struct {
	ID      string    `json:"id"`
	Message string    `json:"message"`
	Author  string    `json:"author"`
	When    time.Time `json:"when"`
}

// Reader fetches repositories and caches results. Safe for concurrent use.
type Reader struct {
	timeout time.Duration
	mu      sync.Mutex
	diffs   map[string]*Diff
	order   []string
	max     int
}

// NewReader returns a Reader caching up to size results.
func NewReader(size int) *Reader {
	return &Reader{timeout: time.Minute, diffs: map[string]*Diff{}, max: size}
}

var sha = regexp.MustCompile(`^[0-9a-f]{40}$`)

func (r *Reader) open(ctx context.Context, repoURL string, auth *Auth) (*git.Repository, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	repo, err := git.Init(memory.NewStorage(), nil)
	if err != nil {
		return nil, err
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{repoURL}}); err != nil {
		return nil, err
	}
	o := &git.FetchOptions{RemoteName: "origin", RefSpecs: []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"}, Tags: git.NoTags}
	if auth != nil && (auth.Username != "" || auth.Password != "" || len(auth.SSHPrivateKey) > 0) {
		if o.Auth, err = creds.GitAuth(auth, repoURL); err != nil {
			return nil, err
		}
	}
	if err := repo.FetchContext(ctx, o); err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, fmt.Errorf("fetch %s: %w", repoURL, err)
	}
	return repo, nil
}

// Diff returns what commit changed in repoURL against its first parent.
func (r *Reader) Diff(ctx context.Context, repoURL, commit string, auth *Auth) (*Diff, error) {
	if !sha.MatchString(commit) {
		return nil, fmt.Errorf("commit %q: %w", commit, ErrNotFound)
	}
	key := cacheKey(repoURL, commit, auth)
	r.mu.Lock()
	d, ok := r.diffs[key]
	r.mu.Unlock()
	if ok {
		return d, nil
	}
	repo, err := r.open(ctx, repoURL, auth)
	if err != nil {
		return nil, err
	}
	c, err := repo.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", commit, ErrNotFound)
	}
	d = &Diff{RepoURL: repoURL, Commit: commit, Message: c.Message, Author: c.Author.Name + " <" + c.Author.Email + ">", When: c.Author.When}
	var from *object.Tree
	if c.NumParents() > 0 {
		p, err := c.Parent(0)
		if err != nil {
			return nil, fmt.Errorf("parent of %s: %w", commit, err)
		}
		d.Parent = p.Hash.String()
		if from, err = p.Tree(); err != nil {
			return nil, err
		}
	}
	to, err := c.Tree()
	if err != nil {
		return nil, err
	}
	if from == nil {
		from = &object.Tree{}
	}
	patch, err := from.PatchContext(ctx, to)
	if err != nil {
		return nil, fmt.Errorf("diff %s: %w", commit, err)
	}
	for _, st := range patch.Stats() {
		d.Files = append(d.Files, File{Path: st.Name, Additions: st.Addition, Deletions: st.Deletion})
	}
	var b strings.Builder
	w := &capped{w: &b, left: MaxPatchBytes}
	if err := patch.Encode(w); err != nil && !errors.Is(err, errCapped) {
		return nil, err
	}
	d.Patch, d.Truncated = b.String(), w.cut
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.order) >= r.max {
		delete(r.diffs, r.order[0])
		r.order = r.order[1:]
	}
	r.diffs[key] = d
	r.order = append(r.order, key)
	return d, nil
}

// cacheKey names a result by repository, commit and a hash of the
// credentials that fetched it, so a cached diff of a private repository is
// served only to a caller holding the same credentials.
func cacheKey(repoURL, commit string, auth *Auth) string {
	sum := sha256.Sum256([]byte(auth.Key()))
	return repoURL + "\x00" + commit + "\x00" + hex.EncodeToString(sum[:])
}

// Log returns the commits reachable from to but not from from, newest
// first, at most limit.
func (r *Reader) Log(ctx context.Context, repoURL, from, to string, auth *Auth, limit int) ([]Commit, error) {
	if !sha.MatchString(to) || (from != "" && !sha.MatchString(from)) {
		return nil, fmt.Errorf("commits %q..%q: %w", from, to, ErrNotFound)
	}
	repo, err := r.open(ctx, repoURL, auth)
	if err != nil {
		return nil, err
	}
	stop := map[plumbing.Hash]bool{}
	if from != "" {
		base, err := repo.CommitObject(plumbing.NewHash(from))
		if err != nil {
			return nil, fmt.Errorf("commit %s: %w", from, ErrNotFound)
		}
		iter := object.NewCommitPreorderIter(base, nil, nil)
		_ = iter.ForEach(func(c *object.Commit) error {
			stop[c.Hash] = true
			if len(stop) > 100000 {
				return io.EOF
			}
			return nil
		})
	}
	tip, err := repo.CommitObject(plumbing.NewHash(to))
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", to, ErrNotFound)
	}
	var out []Commit
	iter := object.NewCommitPreorderIter(tip, stop, nil)
	err = iter.ForEach(func(c *object.Commit) error {
		if len(out) >= limit {
			return io.EOF
		}
		out = append(out, Commit{ID: c.Hash.String(), Message: strings.TrimSpace(c.Message), Author: c.Author.Name, When: c.Author.When})
		return nil
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return out, nil
}

var errCapped = errors.New("capped")

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
