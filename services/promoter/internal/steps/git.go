package steps

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
)

type checkout struct {
	Branch      string `json:"branch"`
	Create      bool   `json:"create"`
	Commit      string `json:"commit"`
	Tag         string `json:"tag"`
	FromFreight bool   `json:"fromFreight"`
	FromOrigin  *struct {
		Kind string `json:"kind"`
		Name string `json:"name"`
	} `json:"fromOrigin"`
	Path string `json:"path"`
	// Sparse limits the checkout to these directories (Kargo's sparse
	// checkout): files elsewhere are not written and stay as they are in
	// commits.
	Sparse []string `json:"sparse"`
}

type gitCloneConfig struct {
	RepoURL  string     `json:"repoURL"`
	Checkout []checkout `json:"checkout"`
}

// gitClone checks branches, commits or tags of one repository out into
// paths of the work dir. Its output `checkouts` (path → commit) lets a
// replay after a crash check out exactly the same commits.
func gitClone(ctx context.Context, sc *Context) (Result, error) {
	var cfg gitCloneConfig
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	if cfg.RepoURL == "" {
		return Result{}, Terminal(errors.New("repoURL must not be empty"))
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
	saved, _ := sc.Saved["checkouts"].(map[string]any)
	done := map[string]any{}
	d := sc.Workspace.Dir
	for i, co := range cfg.Checkout {
		rel, err := d.Resolve(co.Path)
		if err != nil {
			return Result{}, fsError(fmt.Errorf("checkout[%d]: %w", i, err))
		}
		if entries, err := d.ReadDir(rel); err == nil && len(entries) > 0 {
			return Result{}, Terminal(fmt.Errorf("checkout[%d]: path %q is not empty", i, co.Path))
		}
		opts := gitmirror.CheckoutOptions{Branch: co.Branch, Create: co.Create, Commit: co.Commit, Tag: co.Tag, Sparse: co.Sparse}
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
			if h, ok := saved[co.Path].(string); ok && h != "" {
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
		sc.Workspace.Repos[rel] = repo
		done[co.Path] = repo.Head().String()
	}
	return Result{Output: map[string]any{"checkouts": done}}, nil
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
func (sc *Context) repoAt(p string) (*gitmirror.Repo, error) {
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

// gitClear removes every file of a work tree, keeping the repository.
func gitClear(_ context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path string `json:"path"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
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

type author struct {
	Name  string `json:"name"`
	Email string `json:"email"`
}

// Default commit identity, as Kargo's.
const (
	defaultAuthorName  = "Kargo"
	defaultAuthorEmail = "no-reply@kargo.io"
)

func gitCommit(_ context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path    string  `json:"path"`
		Message string  `json:"message"`
		Author  *author `json:"author"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	if cfg.Message == "" {
		return Result{}, Terminal(errors.New("message must not be empty"))
	}
	repo, err := sc.repoAt(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	sig := gitmirror.Signature{Name: defaultAuthorName, Email: defaultAuthorEmail, When: sc.StartedAt}
	if cfg.Author != nil {
		if cfg.Author.Name != "" {
			sig.Name = cfg.Author.Name
		}
		if cfg.Author.Email != "" {
			sig.Email = cfg.Author.Email
		}
	}
	h, err := repo.Commit(cfg.Message, sig)
	if err != nil {
		return Result{}, err
	}
	if h.IsZero() {
		h = repo.Head() // nothing changed: the commit is HEAD
	}
	return Result{Output: map[string]any{"commit": h.String()}}, nil
}

func gitPush(ctx context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path                 string `json:"path"`
		TargetBranch         string `json:"targetBranch"`
		GenerateTargetBranch bool   `json:"generateTargetBranch"`
		Force                bool   `json:"force"`
		MaxAttempts          int    `json:"maxAttempts"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	repo, err := sc.repoAt(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	target := cfg.TargetBranch
	if cfg.GenerateTargetBranch {
		if target != "" {
			return Result{}, Terminal(errors.New("targetBranch and generateTargetBranch are mutually exclusive"))
		}
		target = "kargo/promotion/" + sc.Promotion
	}
	if target == "" {
		target = repo.Branch()
	}
	attempts := cfg.MaxAttempts
	if attempts <= 0 {
		attempts = 10
	}
	h, err := repo.Push(ctx, target, cfg.Force, attempts)
	if errors.Is(err, gitmirror.ErrConflict) {
		return Result{}, Terminal(err)
	}
	if err != nil {
		return Result{}, err
	}
	// repoURL (a Caravan addition) tells readers of the promotion which
	// repository the commit went to: the gateway's diff route needs it.
	return Result{Output: map[string]any{"branch": target, "commit": h.String(), "repoURL": repo.URL}}, nil
}

func gitTag(ctx context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path string `json:"path"`
		Tag  string `json:"tag"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	if cfg.Tag == "" {
		return Result{}, Terminal(errors.New("tag must not be empty"))
	}
	repo, err := sc.repoAt(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	if err := repo.Tag(ctx, cfg.Tag); err != nil {
		return Result{}, err
	}
	return Result{Output: map[string]any{"tag": cfg.Tag, "commit": repo.Head().String()}}, nil
}
