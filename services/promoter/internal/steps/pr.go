package steps

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
)

// pullRequest is what the git-*-pr steps need to know of a pull request.
type pullRequest struct {
	Number int64
	URL    string
	Open   bool
	Merged bool
	// Commit is the merge commit once merged.
	Commit string
}

// prProvider is the part of a Git hosting API the pull request steps use.
type prProvider interface {
	// open returns the open pull request from source into target, or
	// opens one with the title and body text gives (called only then).
	open(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error)
	get(ctx context.Context, number int64) (*pullRequest, error)
	// merge merges the pull request; method is mergeMethod ("" for the
	// provider's default).
	merge(ctx context.Context, number int64, method string) (*pullRequest, error)
	// headMessage is the message of the commit at the head of branch.
	headMessage(ctx context.Context, branch string) (string, error)
}

// prText gives the title and body of a pull request about to be opened.
type prText func(ctx context.Context) (title, body string, err error)

// branchPath escapes each segment of a branch name for a URL path, keeping
// its slashes (the GitHub, Gitea and Bitbucket routes take them as they
// are).
func branchPath(branch string) string {
	parts := strings.Split(branch, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// repoPath splits a repository URL into its API base (scheme://host) and
// its owner/name path.
func repoPath(repoURL string) (scheme, host, path string, err error) {
	u, err := url.Parse(repoURL)
	if err != nil || u.Host == "" {
		return "", "", "", Terminal(fmt.Errorf("repoURL %q is not an http(s) URL", repoURL))
	}
	scheme = u.Scheme
	if scheme != "http" {
		scheme = "https"
	}
	return scheme, u.Host, strings.TrimSuffix(strings.Trim(u.Path, "/"), ".git"), nil
}

func (sc *Context) prProvider(ctx context.Context, repoURL, provider string) (prProvider, error) {
	scheme, host, path, err := repoPath(repoURL)
	if err != nil {
		return nil, err
	}
	if provider == "" {
		if provider = providerOf(host); provider == "" {
			return nil, Terminal(fmt.Errorf("cannot tell the Git provider of %s: set provider to github, gitlab, gitea, bitbucket or azure", repoURL))
		}
	}
	var auth *gitmirror.Auth
	if sc.Credentials != nil {
		if auth, err = sc.Credentials(ctx, sc.Project, repoURL); err != nil {
			return nil, err
		}
	}
	var token, user string
	if auth != nil {
		token, user = auth.Password, auth.Username
	}
	hc := sc.sdkClient()
	switch provider {
	case "github":
		return newGitHub(hc, scheme, host, path, token)
	case "gitlab":
		return newGitLab(hc, scheme, host, path, token)
	case "gitea":
		return newGitea(ctx, hc, scheme, host, path, token)
	case "bitbucket":
		return newBitbucket(hc, scheme, host, path, user, token)
	case "azure":
		return newAzure(hc, scheme, host, path, token)
	}
	return nil, Terminal(fmt.Errorf("provider %q is not supported: github, gitlab, gitea, bitbucket or azure", provider))
}

type openPRConfig struct {
	RepoURL      string `json:"repoURL" step:"required"`
	Provider     string `json:"provider"`
	SourceBranch string `json:"sourceBranch" step:"required"`
	// TargetBranch defaults to main.
	TargetBranch string `json:"targetBranch"`
	// CreateTargetBranch is deprecated in Kargo, where it does nothing;
	// it does nothing here either.
	CreateTargetBranch bool     `json:"createTargetBranch"`
	Title              string   `json:"title"`
	Description        string   `json:"description"`
	Labels             []string `json:"labels"`
}

// prRef is the pull request prNumber of repoURL.
type prRef struct {
	RepoURL  string `json:"repoURL" step:"required"`
	Provider string `json:"provider"`
	PRNumber int64  `json:"prNumber" step:"required"`
}

type waitPRConfig struct {
	prRef
	PollInterval model.Duration `json:"pollInterval"`
}

type mergePRConfig struct {
	prRef
	Wait         bool           `json:"wait"`
	PollInterval model.Duration `json:"pollInterval"`
	MergeMethod  string         `json:"mergeMethod"`
}

// prOutput is Kargo's output of the pull request steps: pr.{id, url, open,
// merged} and, once merged, commit.
func prOutput(pr *pullRequest) map[string]any {
	out := map[string]any{"pr": map[string]any{"id": float64(pr.Number), "url": pr.URL, "open": pr.Open, "merged": pr.Merged}}
	if pr.Commit != "" {
		out["commit"] = pr.Commit
	}
	return out
}

// gitOpenPR opens a pull request from sourceBranch into targetBranch, or
// returns the one already open (a resumed promotion does not open two).
// Output: pr.id, pr.url.
//
// As in Kargo, a pull request opened without a title takes the first line
// of the message of the commit at the head of sourceBranch, and its body
// the rest; with a title, the body defaults to the whole message.
func gitOpenPR(ctx context.Context, sc *Context, cfg *openPRConfig) (Result, error) {
	if cfg.TargetBranch == "" {
		cfg.TargetBranch = "main"
	}
	p, err := sc.prProvider(ctx, cfg.RepoURL, cfg.Provider)
	if err != nil {
		return Result{}, err
	}
	text := func(ctx context.Context) (string, string, error) {
		if cfg.Title != "" && cfg.Description != "" {
			return cfg.Title, cfg.Description, nil
		}
		msg, err := p.headMessage(ctx, cfg.SourceBranch)
		if err != nil {
			return "", "", fmt.Errorf("read the head commit of %s for the pull request's text: %w", cfg.SourceBranch, err)
		}
		return prTitleBody(cfg.Title, cfg.Description, msg)
	}
	pr, err := p.open(ctx, cfg.SourceBranch, cfg.TargetBranch, text, cfg.Labels)
	if err != nil {
		return Result{}, err
	}
	return Result{Output: prOutput(pr)}, nil
}

// prTitleBody is Kargo's default title and body of a pull request from the
// head commit's message msg: without a title, the message's first line and
// (without a description) the rest; with one, the description or the whole
// message.
func prTitleBody(title, description, msg string) (string, string, error) {
	body := msg
	if title == "" {
		first, rest, _ := strings.Cut(strings.TrimSpace(msg), "\n")
		title, body = strings.TrimSpace(first), strings.TrimSpace(rest)
	}
	if description != "" {
		body = description
	}
	if title == "" {
		return "", "", Terminal(errors.New("title is empty and the head commit of sourceBranch has no message to take one from"))
	}
	return title, body, nil
}

// getPR gets the pull request ref names from its provider.
func (sc *Context) getPR(ctx context.Context, ref prRef) (prProvider, *pullRequest, error) {
	if ref.PRNumber <= 0 {
		return nil, nil, Terminal(fmt.Errorf("prNumber must be a positive number, got %d", ref.PRNumber))
	}
	p, err := sc.prProvider(ctx, ref.RepoURL, ref.Provider)
	if err != nil {
		return nil, nil, err
	}
	pr, err := p.get(ctx, ref.PRNumber)
	if err != nil {
		return nil, nil, err
	}
	return p, pr, nil
}

// gitWaitForPR is Running until the pull request is merged (Succeeded,
// output commit) or closed unmerged (Failed).
func gitWaitForPR(ctx context.Context, sc *Context, cfg *waitPRConfig) (Result, error) {
	_, pr, err := sc.getPR(ctx, cfg.prRef)
	if err != nil {
		return Result{}, err
	}
	n := cfg.PRNumber
	switch {
	case pr.Merged:
		return Result{Output: prOutput(pr)}, nil
	case !pr.Open:
		return Result{Status: model.PromotionStepStatusFailed, Output: prOutput(pr), Message: fmt.Sprintf("pull request %d was closed without being merged", n)}, nil
	}
	return Result{Status: StatusRunning, PollAfter: cfg.PollInterval.Duration, Message: fmt.Sprintf("waiting for pull request %d to be merged", n)}, nil
}

// gitMergePR merges a pull request (output commit); merging one already
// merged succeeds.
func gitMergePR(ctx context.Context, sc *Context, cfg *mergePRConfig) (Result, error) {
	p, pr, err := sc.getPR(ctx, cfg.prRef)
	if err != nil {
		return Result{}, err
	}
	n := cfg.PRNumber
	running := func(msg string) (Result, error) {
		return Result{Status: StatusRunning, PollAfter: cfg.PollInterval.Duration, Message: msg}, nil
	}
	if !pr.Merged {
		if !pr.Open {
			return Result{Status: model.PromotionStepStatusFailed, Output: prOutput(pr), Message: fmt.Sprintf("pull request %d is closed", n)}, nil
		}
		if pr, err = p.merge(ctx, n, cfg.MergeMethod); err != nil {
			if cfg.Wait && !IsTerminal(err) {
				return running(fmt.Sprintf("pull request %d cannot be merged yet: %v", n, err))
			}
			return Result{}, err
		}
	}
	if !pr.Merged {
		if cfg.Wait {
			return running(fmt.Sprintf("waiting for pull request %d to merge", n))
		}
		return Result{}, fmt.Errorf("pull request %d was not merged", n)
	}
	return Result{Output: prOutput(pr)}, nil
}
