// Package gitrepo discovers the commits of a Warehouse's Git subscription,
// with Kargo's strategies (NewestFromBranch, SemVer, Lexical, NewestTag),
// tag filters, expression filters and path filters.
//
// Each project has its own bare mirror of a repository for each set of
// credentials it reaches it with (<dir>/<project>/<hash of the normalized
// URL and the credentials>), so that one project's mirror, fetched with
// its credentials, never answers another project's discovery. A discovery
// first lists the remote's refs (ls-remote); when they equal the mirror's,
// nothing is fetched and, when the subscription is unchanged too, the
// previous result is returned as it is. Otherwise one incremental fetch brings only the
// new objects, so the depth of the history does not slow discovery down.
package gitrepo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/discovery/internal/images"
)

// maxWalk bounds how many commits of a branch one discovery inspects when
// filters reject most of them.
const maxWalk = 5000

var refSpecs = []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}

// Client discovers commits. It is safe for concurrent use.
type Client struct {
	dir string

	mu    sync.Mutex
	locks map[string]*sync.Mutex
	memo  map[string]memoEntry

	lsRemotes atomic.Int64
	fetches   atomic.Int64
}

type memoEntry struct {
	refs   string
	result model.GitDiscoveryResult
}

// New returns a Client keeping its mirrors below dir. Mirrors of the
// layout before mirrors were kept per project (a bare repository right
// below dir, shared by every project) are removed.
func New(dir string) *Client {
	removeSharedMirrors(dir)
	return &Client{dir: dir, locks: map[string]*sync.Mutex{}, memo: map[string]memoEntry{}}
}

// removeSharedMirrors deletes bare repositories right below dir: project
// folders hold no HEAD of their own.
func removeSharedMirrors(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "HEAD")); err == nil {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// Stats are the remote operations done so far.
func (c *Client) Stats() (lsRemotes, fetches int64) { return c.lsRemotes.Load(), c.fetches.Load() }

// MirrorPath is the directory of project's mirror of repoURL reached with
// cr (nil: anonymously).
func (c *Client) MirrorPath(project, repoURL string, cr *creds.Credentials) string {
	h := sha256.New()
	h.Write([]byte(model.NormalizeGitURL(repoURL)))
	if k := cr.Key(); k != "" {
		// Length-prefixed, so that no two credentials hash alike.
		fmt.Fprintf(h, "\x00%d:%s", len(k), k)
	}
	return filepath.Join(c.dir, projectDir(project), hex.EncodeToString(h.Sum(nil)[:12]))
}

// projectDir is project's folder name: the name itself when it is a valid
// project name (a DNS label), a hash otherwise.
func projectDir(project string) string {
	ok := project != "" && len(project) <= 63
	for _, r := range project {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			ok = false
		}
	}
	if ok {
		return project
	}
	sum := sha256.Sum256([]byte(project))
	return "_" + hex.EncodeToString(sum[:12])
}

func (c *Client) lock(path string) func() {
	c.mu.Lock()
	l, ok := c.locks[path]
	if !ok {
		l = &sync.Mutex{}
		c.locks[path] = l
	}
	c.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// open opens (creating when needed) repoURL's bare mirror.
func (c *Client) open(path, repoURL string) (*git.Repository, error) {
	repo, err := git.PlainOpen(path)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if err := os.MkdirAll(path, 0o750); err != nil {
			return nil, err
		}
		repo, err = git.PlainInit(path, true)
		if err != nil {
			return nil, fmt.Errorf("create mirror: %w", err)
		}
		_, err = repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{repoURL}, Fetch: refSpecs})
		if err != nil {
			return nil, fmt.Errorf("create mirror: %w", err)
		}
		return repo, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open mirror: %w", err)
	}
	return repo, nil
}

// Discover lists the subscription's commits, newest first, for project.
func (c *Client) Discover(ctx context.Context, project string, sub model.GitSubscription, cr *creds.Credentials) (model.GitDiscoveryResult, error) {
	return c.run(ctx, project, sub, cr, false)
}

// Refresh fetches once, without listing the remote's refs first (a hint
// said something changed), and lists the commits again.
func (c *Client) Refresh(ctx context.Context, project string, sub model.GitSubscription, cr *creds.Credentials, _ []string) (model.GitDiscoveryResult, error) {
	return c.run(ctx, project, sub, cr, true)
}

func (c *Client) run(ctx context.Context, project string, sub model.GitSubscription, cr *creds.Credentials, hinted bool) (model.GitDiscoveryResult, error) {
	empty := model.GitDiscoveryResult{RepoURL: sub.RepoURL, Commits: []model.DiscoveredCommit{}}
	// Checked at apply; checked again for Warehouses stored before.
	if err := model.CheckRepoURL(model.RepoGit, sub.RepoURL); err != nil {
		return empty, err
	}
	a, err := creds.GitAuth(cr, sub.RepoURL)
	if err != nil {
		return empty, err
	}
	path := c.MirrorPath(project, sub.RepoURL, cr)
	defer c.lock(path)()
	repo, err := c.open(path, sub.RepoURL)
	if err != nil {
		return empty, err
	}
	subKey := path + "|" + specKey(sub)
	if !hinted {
		rem, err := repo.Remote("origin")
		if err != nil {
			return empty, err
		}
		c.lsRemotes.Add(1)
		refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: a, InsecureSkipTLS: sub.InsecureSkipTLSVerify})
		if errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return empty, nil
		}
		if err != nil {
			return empty, err
		}
		remote := fingerprint(refs)
		c.mu.Lock()
		m, ok := c.memo[subKey]
		c.mu.Unlock()
		if ok && m.refs == remote {
			return m.result, nil
		}
		if remote != localFingerprint(repo) {
			if err := c.fetch(ctx, repo, a, sub.InsecureSkipTLSVerify); err != nil {
				return empty, err
			}
		}
	} else if err := c.fetch(ctx, repo, a, sub.InsecureSkipTLSVerify); err != nil {
		return empty, err
	}
	res, err := selectCommits(repo, sub)
	if err != nil {
		return empty, err
	}
	c.mu.Lock()
	c.memo[subKey] = memoEntry{refs: localFingerprint(repo), result: res}
	c.mu.Unlock()
	return res, nil
}

func (c *Client) fetch(ctx context.Context, repo *git.Repository, a transport.AuthMethod, skipTLS bool) error {
	c.fetches.Add(1)
	err := repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin", RefSpecs: refSpecs, Auth: a, Tags: git.NoTags,
		Force: true, Prune: true, InsecureSkipTLS: skipTLS,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return fmt.Errorf("fetch: %w", err)
	}
	return nil
}

func specKey(sub model.GitSubscription) string {
	b, _ := json.Marshal(sub)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// fingerprint summarises branch and tag refs.
func fingerprint(refs []*plumbing.Reference) string {
	var lines []string
	for _, r := range refs {
		n := r.Name()
		if (n.IsBranch() || n.IsTag()) && r.Type() == plumbing.HashReference && !strings.HasSuffix(n.String(), "^{}") {
			lines = append(lines, n.String()+" "+r.Hash().String())
		}
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:])
}

func localFingerprint(repo *git.Repository) string {
	iter, err := repo.References()
	if err != nil {
		return ""
	}
	var refs []*plumbing.Reference
	_ = iter.ForEach(func(r *plumbing.Reference) error {
		refs = append(refs, r)
		return nil
	})
	return fingerprint(refs)
}

// selectCommits applies the subscription's strategy to the mirror.
func selectCommits(repo *git.Repository, sub model.GitSubscription) (model.GitDiscoveryResult, error) {
	res := model.GitDiscoveryResult{RepoURL: sub.RepoURL, Commits: []model.DiscoveredCommit{}}
	include, err := newPathMatcher(sub.IncludePaths)
	if err != nil {
		return res, err
	}
	exclude, err := newPathMatcher(sub.ExcludePaths)
	if err != nil {
		return res, err
	}
	limit := images.Limit(sub.DiscoveryLimit)
	strategy := sub.CommitSelectionStrategy
	if strategy == "" {
		strategy = model.CommitSelectionStrategyNewestFromBranch
	}
	var filter *vm.Program
	if strings.TrimSpace(sub.ExpressionFilter) != "" {
		sample := commitEnv(&object.Commit{}, "", nil)
		filter, err = expr.Compile(sub.ExpressionFilter, expr.Env(sample), expr.AsBool())
		if err != nil {
			return res, fmt.Errorf("expressionFilter: %w", err)
		}
	}
	var since time.Time
	if sub.Since != "" {
		if since, err = time.Parse(time.RFC3339, sub.Since); err != nil {
			return res, fmt.Errorf("since: %w", err)
		}
	}
	keep := func(c *object.Commit, tag string, t *object.Tag) (bool, error) {
		if !since.IsZero() && c.Committer.When.Before(since) && (t == nil || t.Tagger.When.Before(since)) {
			return false, nil
		}
		if !include.empty() || !exclude.empty() {
			files, err := changedFiles(c)
			if err != nil {
				return false, err
			}
			if !selected(files, include, exclude) {
				return false, nil
			}
		}
		if filter != nil {
			out, err := expr.Run(filter, commitEnv(c, tag, t))
			if err != nil {
				return false, fmt.Errorf("expressionFilter: %w", err)
			}
			if ok, _ := out.(bool); !ok {
				return false, nil
			}
		}
		return true, nil
	}
	if strategy == model.CommitSelectionStrategyNewestFromBranch {
		branch, hash, err := branchHead(repo, sub.Branch)
		if err != nil || hash.IsZero() {
			return res, err
		}
		iter, err := repo.Log(&git.LogOptions{From: hash, Order: git.LogOrderCommitterTime})
		if err != nil {
			return res, err
		}
		defer iter.Close()
		walked := 0
		for len(res.Commits) < limit && walked < maxWalk {
			c, err := iter.Next()
			if err != nil {
				break // io.EOF: end of history
			}
			walked++
			if !since.IsZero() && c.Committer.When.Before(since) {
				break // history is in committer-time order: all older
			}
			ok, err := keep(c, "", nil)
			if err != nil {
				return res, err
			}
			if ok {
				res.Commits = append(res.Commits, discovered(c, branch, "", nil))
			}
		}
		return res, nil
	}
	tags, err := listTags(repo, sub, strategy)
	if err != nil {
		return res, err
	}
	for _, t := range tags {
		if len(res.Commits) >= limit {
			break
		}
		ok, err := keep(t.commit, t.name, t.obj)
		if err != nil {
			return res, err
		}
		if ok {
			res.Commits = append(res.Commits, discovered(t.commit, "", t.name, t.obj))
		}
	}
	return res, nil
}

// branchHead resolves the subscription's branch (default: main, else
// master).
func branchHead(repo *git.Repository, branch string) (string, plumbing.Hash, error) {
	candidates := []string{branch}
	if branch == "" {
		candidates = []string{"main", "master"}
	}
	for _, b := range candidates {
		ref, err := repo.Reference(plumbing.NewBranchReferenceName(b), true)
		if err == nil {
			return b, ref.Hash(), nil
		}
	}
	if branch != "" {
		return branch, plumbing.ZeroHash, fmt.Errorf("branch %q not found", branch)
	}
	return "", plumbing.ZeroHash, nil
}

type tagInfo struct {
	name    string
	commit  *object.Commit
	obj     *object.Tag // nil for a lightweight tag
	created time.Time
}

func listTags(repo *git.Repository, sub model.GitSubscription, strategy model.CommitSelectionStrategy) ([]tagInfo, error) {
	f, err := images.NewTagFilter(sub.AllowTags, sub.AllowTagsRegexes, sub.IgnoreTags, sub.IgnoreTagsRegexes,
		sub.SemverConstraint, sub.StrictSemvers, strategy == model.CommitSelectionStrategySemVer)
	if err != nil {
		return nil, err
	}
	iter, err := repo.Tags()
	if err != nil {
		return nil, err
	}
	var tags []tagInfo
	var cands []images.Candidate
	byName := map[string]*plumbing.Reference{}
	err = iter.ForEach(func(r *plumbing.Reference) error {
		name := r.Name().Short()
		byName[name] = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	switch strategy {
	case model.CommitSelectionStrategySemVer:
		cands = images.SelectTags(names, f, model.ImageSelectionStrategySemVer)
	default:
		cands = images.SelectTags(names, f, model.ImageSelectionStrategyLexical)
	}
	for _, cand := range cands {
		r := byName[cand.Tag]
		t := tagInfo{name: cand.Tag}
		if obj, err := repo.TagObject(r.Hash()); err == nil {
			t.obj = obj
			t.created = obj.Tagger.When
			if t.commit, err = obj.Commit(); err != nil {
				continue // a tag of a tree or blob
			}
		} else {
			if t.commit, err = repo.CommitObject(r.Hash()); err != nil {
				continue
			}
			t.created = t.commit.Committer.When
		}
		tags = append(tags, t)
	}
	if strategy == model.CommitSelectionStrategyNewestTag {
		slices.SortStableFunc(tags, func(a, b tagInfo) int { return b.created.Compare(a.created) })
	}
	return tags, nil
}

func changedFiles(c *object.Commit) ([]string, error) {
	tree, err := c.Tree()
	if err != nil {
		return nil, err
	}
	var parent *object.Tree
	if c.NumParents() > 0 {
		p, err := c.Parent(0)
		if err != nil {
			return nil, err
		}
		if parent, err = p.Tree(); err != nil {
			return nil, err
		}
	}
	changes, err := object.DiffTree(parent, tree)
	if err != nil {
		return nil, err
	}
	files := make([]string, 0, len(changes))
	for _, ch := range changes {
		if ch.From.Name != "" {
			files = append(files, ch.From.Name)
		}
		if ch.To.Name != "" && ch.To.Name != ch.From.Name {
			files = append(files, ch.To.Name)
		}
	}
	return files, nil
}

func subject(msg string) string {
	s, _, _ := strings.Cut(strings.TrimSpace(msg), "\n")
	return s
}

func person(s object.Signature) string {
	return fmt.Sprintf("%s <%s>", s.Name, s.Email)
}

// commitEnv is what expressionFilter sees.
func commitEnv(c *object.Commit, tag string, t *object.Tag) map[string]any {
	env := map[string]any{
		"id":          c.Hash.String(),
		"commitDate":  c.Committer.When,
		"author":      person(c.Author),
		"committer":   person(c.Committer),
		"subject":     subject(c.Message),
		"tag":         tag,
		"creatorDate": c.Committer.When,
		"tagger":      "",
		"annotation":  "",
	}
	if t != nil {
		env["creatorDate"] = t.Tagger.When
		env["tagger"] = person(t.Tagger)
		env["annotation"] = strings.TrimSpace(t.Message)
	}
	return env
}

func discovered(c *object.Commit, branch, tag string, t *object.Tag) model.DiscoveredCommit {
	created := c.Committer.When
	if t != nil {
		created = t.Tagger.When
	}
	return model.DiscoveredCommit{
		ID: c.Hash.String(), Branch: branch, Tag: tag, Subject: subject(c.Message),
		Author: person(c.Author), Committer: person(c.Committer), CreatorDate: model.NewTime(created.UTC()),
	}
}

// Explain turns a git error into a readable message.
func Explain(err error) string {
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired):
		return "git server answered 401: add or fix a Secret labelled kargo.akuity.io/cred-type=git for this repository (" + err.Error() + ")"
	case errors.Is(err, transport.ErrAuthorizationFailed):
		return "git server refused the credentials (403) (" + err.Error() + ")"
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return "git repository not found: check repoURL (" + err.Error() + ")"
	}
	return err.Error()
}
