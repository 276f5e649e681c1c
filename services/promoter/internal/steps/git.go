package steps

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
)

// Author is who a commit or a tag is by.
type Author struct {
	Name  string `json:"name" step:"required"`
	Email string `json:"email" step:"required"`
}

type origin struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

type checkout struct {
	// As is the key of the checkout's commit in the `commits` output; the
	// path when empty.
	As     string `json:"as"`
	Branch string `json:"branch"`
	Create bool   `json:"create"`
	Commit string `json:"commit"`
	Tag    string `json:"tag"`
	Path   string `json:"path" step:"required"`
	// Sparse limits the checkout to these directories (Kargo's sparse
	// checkout): files elsewhere are not written and stay as they are in
	// commits.
	Sparse []string `json:"sparse"`
	// FromFreight and FromOrigin (Caravan's, as Kargo's before it had
	// expressions) check out the commit of repoURL the freight holds.
	FromFreight bool    `json:"fromFreight"`
	FromOrigin  *origin `json:"fromOrigin"`
}

func (c checkout) key() string {
	if c.As != "" {
		return c.As
	}
	return c.Path
}

type gitCloneConfig struct {
	RepoURL           string     `json:"repoURL" step:"required"`
	RecurseSubmodules bool       `json:"recurseSubmodules"`
	Author            *Author    `json:"author"`
	Checkout          []checkout `json:"checkout" step:"required"`
}

// gitClone checks branches, commits or tags of one repository out into
// paths of the work dir. Its output `commits` (checkout key → commit) lets
// a replay after a crash check out exactly the same commits.
func gitClone(ctx context.Context, sc *Context, cfg *gitCloneConfig) (Result, error) {
	if len(cfg.Checkout) == 0 {
		return Result{}, Terminal(errors.New("checkout: at least one is required"))
	}
	if err := model.CheckRepoURL(model.RepoGit, cfg.RepoURL); err != nil {
		return Result{}, Terminal(fmt.Errorf("repoURL: %w", err))
	}
	auth, err := sc.Credentials(ctx, sc.Project, cfg.RepoURL)
	if err != nil {
		return Result{}, err
	}
	mirror, err := sc.Git.Sync(ctx, sc.Project, cfg.RepoURL, auth)
	if err != nil {
		return Result{}, err
	}
	saved, _ := sc.Saved["commits"].(map[string]any)
	done := map[string]any{}
	d := sc.Workspace.Dir
	for i, co := range cfg.Checkout {
		set := 0
		for _, s := range []string{co.Branch, co.Commit, co.Tag} {
			if s != "" {
				set++
			}
		}
		if set > 1 {
			return Result{}, Terminal(fmt.Errorf("checkout[%d]: branch, commit and tag are mutually exclusive", i))
		}
		if _, dup := done[co.key()]; dup {
			return Result{}, Terminal(fmt.Errorf("checkout[%d]: key %q is used twice (set as)", i, co.key()))
		}
		rel, err := d.Resolve(co.Path)
		if err != nil {
			return Result{}, fsError(fmt.Errorf("checkout[%d]: %w", i, err))
		}
		if entries, err := d.ReadDir(rel); err == nil && len(entries) > 0 {
			return Result{}, Terminal(fmt.Errorf("checkout[%d]: path %q is not empty", i, co.Path))
		}
		if err := d.MkdirAll(rel); err != nil {
			return Result{}, fsError(fmt.Errorf("checkout[%d]: %w", i, err))
		}
		opts := gitmirror.CheckoutOptions{Branch: co.Branch, Create: co.Create, Commit: co.Commit, Tag: co.Tag,
			Sparse: co.Sparse, Submodules: cfg.RecurseSubmodules, SubmoduleAuth: sc.submoduleAuth}
		if co.FromFreight && opts.Commit == "" {
			c, ok := commitFromFreight(sc.Freight, cfg.RepoURL, co)
			if !ok {
				return Result{}, Terminal(fmt.Errorf("checkout[%d]: no commit from %s in the freight", i, cfg.RepoURL))
			}
			if c.Tag != "" {
				opts.Tag = c.Tag
			} else {
				opts.Commit = c.ID
			}
		}
		if sc.Replay {
			if h, ok := saved[co.key()].(string); ok && h != "" {
				opts.Commit, opts.Tag = h, ""
			}
		}
		// rel has no symbolic links and the work tree is written through
		// an os.Root at it.
		repo, err := mirror.Checkout(ctx, filepath.Join(d.Path(), rel), opts)
		if err != nil {
			if ctx.Err() != nil {
				return Result{}, err
			}
			return Result{}, Terminal(fmt.Errorf("checkout[%d]: %w", i, err))
		}
		if old, ok := sc.Workspace.Repos[rel]; ok {
			old.Close()
		}
		sc.Workspace.Repos[rel] = &WorkTree{Repo: repo, Author: cfg.Author}
		done[co.key()] = repo.Head().String()
	}
	return Result{Output: map[string]any{"commits": done}}, nil
}

// submoduleAuth applies the repository URL policy to a submodule's URL
// and returns the project's credentials for it.
func (sc *Context) submoduleAuth(ctx context.Context, repoURL string) (*gitmirror.Auth, error) {
	if err := model.CheckRepoURL(model.RepoGit, repoURL); err != nil {
		return nil, err
	}
	return sc.Credentials(ctx, sc.Project, repoURL)
}

func commitFromFreight(freight []model.FreightReference, repoURL string, co checkout) (model.GitCommit, bool) {
	for _, f := range freight {
		if co.FromOrigin != nil && (string(f.Origin.Kind) != co.FromOrigin.Kind || f.Origin.Name != co.FromOrigin.Name) {
			continue
		}
		for _, c := range f.Commits {
			if model.NormalizeGitURL(c.RepoURL) == model.NormalizeGitURL(repoURL) {
				return c, true
			}
		}
	}
	return model.GitCommit{}, false
}

// repoAt returns the work tree checked out at path.
func (sc *Context) repoAt(p string) (*WorkTree, error) {
	rel, err := sc.Workspace.Dir.Resolve(p)
	if err != nil {
		return nil, fsError(err)
	}
	repo, ok := sc.Workspace.Repos[rel]
	if !ok {
		return nil, Terminal(fmt.Errorf("no git work tree at %q: check one out with git-clone first", p))
	}
	return repo, nil
}

type pathConfig struct {
	Path string `json:"path" step:"required"`
}

// gitClear removes every file of a work tree, keeping the repository.
func gitClear(_ context.Context, sc *Context, cfg *pathConfig) (Result, error) {
	if _, err := sc.repoAt(cfg.Path); err != nil {
		return Result{}, err
	}
	d := sc.Workspace.Dir
	entries, err := d.ReadDir(cfg.Path)
	if err != nil {
		return Result{}, fsError(err)
	}
	for _, e := range entries {
		if e.Name() == ".git" {
			continue
		}
		if err := d.RemoveAll(filepath.Join(cfg.Path, e.Name())); err != nil {
			return Result{}, fsError(err)
		}
	}
	return Result{}, nil
}

// signature is who a commit or tag in wt is by: author when given, else
// git-clone's author, else the project's Git identity (Caravan's by
// default, see model.GitIdentityFor); at the step's start, so that a
// replayed commit is the same commit.
func (sc *Context) signature(wt *WorkTree, author *Author) gitmirror.Signature {
	id := sc.gitIdentity()
	sig := gitmirror.Signature{Name: id.Name, Email: id.Email, When: sc.StartedAt}
	for _, a := range []*Author{wt.Author, author} {
		if a != nil {
			sig.Name, sig.Email = a.Name, a.Email
		}
	}
	return sig
}

// gitIdentity is the run's Git identity, Caravan's defaults where unset.
func (sc *Context) gitIdentity() model.GitIdentity {
	id := sc.GitIdentity
	if id.Name == "" {
		id.Name, id.Email = model.DefaultGitAuthorName, model.DefaultGitAuthorEmail
	}
	if id.BranchPrefix == "" {
		id.BranchPrefix = model.DefaultGitBranchPrefix
	}
	return id
}

type gitCommitConfig struct {
	Path    string  `json:"path" step:"required"`
	Message string  `json:"message" step:"required"`
	Author  *Author `json:"author"`
}

func gitCommit(_ context.Context, sc *Context, cfg *gitCommitConfig) (Result, error) {
	repo, err := sc.repoAt(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	h, err := repo.Commit(cfg.Message, sc.signature(repo, cfg.Author))
	if err != nil {
		return Result{}, err
	}
	if h.IsZero() {
		h = repo.Head() // nothing changed: the commit is HEAD
	}
	return Result{Output: map[string]any{"commit": h.String()}}, nil
}

// pushConfig is the config of git-push; github-push takes a part of it.
type pushConfig struct {
	Path                 string `json:"path" step:"required"`
	TargetBranch         string `json:"targetBranch"`
	GenerateTargetBranch bool   `json:"generateTargetBranch"`
	Force                bool   `json:"force"`
	MaxAttempts          int    `json:"maxAttempts"`
	Provider             string `json:"provider"`
	Tag                  string `json:"tag"`
}

type githubPushConfig struct {
	Path                 string `json:"path" step:"required"`
	TargetBranch         string `json:"targetBranch"`
	GenerateTargetBranch bool   `json:"generateTargetBranch"`
	Force                bool   `json:"force"`
	MaxAttempts          int    `json:"maxAttempts"`
}

// githubPush pushes as git-push does, to GitHub.
func githubPush(ctx context.Context, sc *Context, cfg *githubPushConfig) (Result, error) {
	return gitPush(ctx, sc, &pushConfig{Path: cfg.Path, TargetBranch: cfg.TargetBranch, GenerateTargetBranch: cfg.GenerateTargetBranch,
		Force: cfg.Force, MaxAttempts: cfg.MaxAttempts, Provider: "github"})
}

// gitPush pushes the work tree's branch (to targetBranch, or to a branch
// of its own with generateTargetBranch), or a tag the work tree holds.
// Outputs: branch, commit and, where the provider is known, commitURL.
func gitPush(ctx context.Context, sc *Context, cfg *pushConfig) (Result, error) {
	switch {
	case cfg.GenerateTargetBranch && cfg.TargetBranch != "":
		return Result{}, Terminal(errors.New("targetBranch and generateTargetBranch are mutually exclusive"))
	case cfg.Tag != "" && (cfg.TargetBranch != "" || cfg.GenerateTargetBranch):
		return Result{}, Terminal(errors.New("tag is mutually exclusive with targetBranch and generateTargetBranch"))
	case cfg.Tag != "" && cfg.Force:
		return Result{}, Terminal(errors.New("tag and force are mutually exclusive"))
	}
	repo, err := sc.repoAt(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	out := map[string]any{}
	if cfg.Tag != "" {
		if err := repo.PushTag(ctx, cfg.Tag); err != nil {
			if errors.Is(err, gitmirror.ErrTagExists) {
				return Result{}, Terminal(err)
			}
			return Result{}, err
		}
		if b := repo.Branch(); b != "" {
			out["branch"] = b
		}
		return Result{Output: withCommit(out, repo.Head().String(), repo.URL, cfg.Provider)}, nil
	}
	target, force := cfg.TargetBranch, cfg.Force
	if cfg.GenerateTargetBranch {
		// The branch is the promotion's own: a push before a crash is
		// overwritten, as Kargo does. Its prefix is the project's
		// (caravan/promotion/ by default; Kargo's is kargo/promotion/).
		target, force = sc.gitIdentity().BranchPrefix+sc.Promotion, true
	}
	if target == "" {
		target = repo.Branch()
	}
	attempts := cfg.MaxAttempts
	if attempts <= 0 {
		attempts = 10
	}
	h, err := repo.Push(ctx, target, force, attempts)
	if errors.Is(err, gitmirror.ErrConflict) {
		return Result{}, Terminal(err)
	}
	if err != nil {
		return Result{}, err
	}
	out["branch"] = target
	// repoURL (a Caravan addition) tells readers of the promotion which
	// repository the commit went to: the gateway's diff route needs it.
	out["repoURL"] = repo.URL
	return Result{Output: withCommit(out, h.String(), repo.URL, cfg.Provider)}, nil
}

// withCommit adds commit and, when the provider is known, commitURL.
func withCommit(out map[string]any, commit, repoURL, provider string) map[string]any {
	out["commit"] = commit
	if u := commitURL(repoURL, provider, commit); u != "" {
		out["commitURL"] = u
	}
	return out
}

// commitURL is the page of commit on the repository's hosting service
// (provider, or told from the host name), "" when unknown.
func commitURL(repoURL, provider, commit string) string {
	scheme, host, path, err := repoPath(repoURL)
	if err != nil {
		return ""
	}
	if provider == "" {
		provider = providerOf(host)
	}
	base := scheme + "://" + host + "/" + path
	switch provider {
	case "github", "gitea":
		return base + "/commit/" + commit
	case "gitlab":
		return base + "/-/commit/" + commit
	case "bitbucket":
		return base + "/commits/" + commit
	case "azure":
		return base + "/commit/" + commit
	}
	return ""
}

// providerOf tells the Git hosting service from a host name ("" when it
// cannot).
func providerOf(host string) string {
	switch {
	case strings.Contains(host, "github"):
		return "github"
	case strings.Contains(host, "gitlab"):
		return "gitlab"
	case strings.Contains(host, "gitea"):
		return "gitea"
	case strings.Contains(host, "bitbucket"):
		return "bitbucket"
	case strings.Contains(host, "dev.azure.com"), strings.Contains(host, "visualstudio.com"):
		return "azure"
	}
	return ""
}

type gitTagConfig struct {
	Path    string `json:"path" step:"required"`
	Tag     string `json:"tag" step:"required"`
	Message string `json:"message" step:"required"`
	Force   bool   `json:"force"`
}

// gitTag creates an annotated tag at HEAD in the work tree; git-push with
// `tag` pushes it.
func gitTag(_ context.Context, sc *Context, cfg *gitTagConfig) (Result, error) {
	repo, err := sc.repoAt(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	if _, err := repo.Tag(cfg.Tag, cfg.Message, sc.signature(repo, nil), cfg.Force); err != nil {
		return Result{}, Terminal(err)
	}
	return Result{Output: map[string]any{"tag": cfg.Tag, "commit": repo.Head().String()}}, nil
}
