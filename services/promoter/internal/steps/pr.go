package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

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

// apiClient sends JSON requests to a hosting API with a token.
type apiClient struct {
	http   *http.Client
	base   string
	header string // the header carrying the token
	prefix string // what precedes the token in it
	token  string
}

// Retries of one API call: a GET answered 429, 502, 503, 504 or a
// rate-limited 403 is sent again up to apiAttempts times, after the
// Retry-After the host asks for (at most maxRetryWait; longer, the error
// goes to the engine, which retries the step later).
const (
	apiAttempts  = 3
	maxRetryWait = 10 * time.Second
	// maxPages bounds how many pages of a list are read.
	maxPages = 50
)

func (c *apiClient) do(ctx context.Context, method, path string, in, out any) (int, error) {
	status, _, err := c.send(ctx, method, c.base+path, in, out)
	return status, err
}

// send sends one call to url, retrying as above, and returns its status
// and headers.
func (c *apiClient) send(ctx context.Context, method, u string, in, out any) (int, http.Header, error) {
	for attempt := 1; ; attempt++ {
		status, h, wait, err := c.once(ctx, method, u, in, out)
		if err == nil || IsTerminal(err) || wait < 0 || method != http.MethodGet || attempt == apiAttempts || wait > maxRetryWait {
			return status, h, err
		}
		select {
		case <-ctx.Done():
			return status, h, err
		case <-time.After(wait):
		}
	}
}

// once sends one request. wait is how long to wait before retrying a
// retryable answer (-1: not one to retry within the call).
func (c *apiClient) once(ctx context.Context, method, u string, in, out any) (status int, h http.Header, wait time.Duration, err error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, -1, err
		}
		body = bytes.NewReader(b)
	}
	path := strings.TrimPrefix(u, c.base)
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, nil, -1, Terminal(err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set(c.header, c.prefix+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, time.Second, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return resp.StatusCode, resp.Header, time.Second, err
	}
	if resp.StatusCode >= 300 {
		err := fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
		limited := resp.StatusCode == http.StatusTooManyRequests ||
			(resp.StatusCode == http.StatusForbidden && (resp.Header.Get("X-RateLimit-Remaining") == "0" || resp.Header.Get("Retry-After") != ""))
		switch {
		case limited:
			return resp.StatusCode, resp.Header, retryAfter(resp.Header), fmt.Errorf("%w: rate limited", err)
		case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
			return resp.StatusCode, resp.Header, retryAfter(resp.Header), err
		case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusConflict && resp.StatusCode != http.StatusMethodNotAllowed:
			return resp.StatusCode, resp.Header, -1, Terminal(err)
		}
		return resp.StatusCode, resp.Header, -1, err
	}
	if out != nil && len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, resp.Header, -1, fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return resp.StatusCode, resp.Header, 0, nil
}

// retryAfter reads Retry-After (seconds) or GitHub's X-RateLimit-Reset
// (Unix time); one second when neither says.
func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := strconv.ParseInt(strings.TrimSpace(h.Get("X-RateLimit-Reset")), 10, 64); err == nil {
		if d := time.Until(time.Unix(t, 0)); d > 0 {
			return d
		}
		return 0
	}
	return time.Second
}

// list reads the list at path and the pages its Link headers' rel="next"
// point at (GitHub, GitLab and Gitea all send them), at most maxPages,
// calling visit with each page until it returns true. A next page on
// another host than the API's is not followed: the token stays with it.
func list[T any](ctx context.Context, c *apiClient, path string, visit func([]T) bool) error {
	u := c.base + path
	for range maxPages {
		var page []T
		_, h, err := c.send(ctx, http.MethodGet, u, nil, &page)
		if err != nil {
			return err
		}
		if visit(page) {
			return nil
		}
		next := nextLink(h.Values("Link"))
		if next == "" {
			return nil
		}
		if !strings.HasPrefix(next, c.base+"/") {
			return fmt.Errorf("GET %s: the next page %s is not on the API's host", path, next)
		}
		u = next
	}
	return fmt.Errorf("GET %s: more than %d pages", path, maxPages)
}

// nextLink is the URL of rel="next" in Link header values.
func nextLink(values []string) string {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			target, params, ok := strings.Cut(part, ";")
			if !ok {
				continue
			}
			for _, p := range strings.Split(params, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				if k == "rel" && slices.Contains(strings.Fields(strings.Trim(val, `"`)), "next") {
					return strings.Trim(strings.TrimSpace(target), "<>")
				}
			}
		}
	}
	return ""
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
	c := &apiClient{http: sc.client(), token: token}
	switch provider {
	case "github":
		c.base, c.header, c.prefix = scheme+"://"+host+"/api/v3", "Authorization", "Bearer "
		if host == "github.com" {
			c.base = "https://api.github.com"
		}
		return &github{c: c, repo: path}, nil
	case "gitlab":
		c.base, c.header = scheme+"://"+host+"/api/v4", "PRIVATE-TOKEN"
		return &gitlab{c: c, project: url.PathEscape(path)}, nil
	case "gitea":
		c.base, c.header, c.prefix = scheme+"://"+host+"/api/v1", "Authorization", "token "
		return &gitea{c: c, repo: path}, nil
	case "bitbucket":
		return newBitbucket(c.http, scheme, host, path, user, token)
	case "azure":
		return newAzure(c.http, scheme, host, path, token)
	}
	return nil, Terminal(fmt.Errorf("provider %q is not supported: github, gitlab, gitea, bitbucket or azure", provider))
}

type github struct {
	c    *apiClient
	repo string
}

type githubPR struct {
	Number         int64  `json:"number"`
	HTMLURL        string `json:"html_url"`
	State          string `json:"state"`
	Merged         bool   `json:"merged"`
	MergeCommitSHA string `json:"merge_commit_sha"`
	Head           struct {
		Ref string `json:"ref"`
	} `json:"head"`
	Base struct {
		Ref string `json:"ref"`
	} `json:"base"`
}

func (p githubPR) pr() *pullRequest {
	return &pullRequest{Number: p.Number, URL: p.HTMLURL, Open: p.State == "open", Merged: p.Merged, Commit: p.MergeCommitSHA}
}

func (g *github) open(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	owner, _, _ := strings.Cut(g.repo, "/")
	q := url.Values{"state": {"open"}, "head": {owner + ":" + source}, "base": {target}, "per_page": {"100"}}
	pr, created, err := openPull(ctx, g.c, g.repo, q.Encode(), source, target, text)
	if err != nil {
		return nil, err
	}
	if created && len(labels) > 0 {
		if _, err := g.c.do(ctx, http.MethodPost, fmt.Sprintf("/repos/%s/issues/%d/labels", g.repo, pr.Number), map[string]any{"labels": labels}, nil); err != nil {
			return nil, err
		}
	}
	return pr.pr(), nil
}

func (g *github) get(ctx context.Context, n int64) (*pullRequest, error) {
	return getPull(ctx, g.c, g.repo, n)
}

// headMessage reads GET /repos/{owner}/{repo}/branches/{branch}.
func (g *github) headMessage(ctx context.Context, branch string) (string, error) {
	var b struct {
		Commit struct {
			Commit struct {
				Message string `json:"message"`
			} `json:"commit"`
		} `json:"commit"`
	}
	if _, err := g.c.do(ctx, http.MethodGet, "/repos/"+g.repo+"/branches/"+branchPath(branch), nil, &b); err != nil {
		return "", err
	}
	return b.Commit.Commit.Message, nil
}

func (g *github) merge(ctx context.Context, n int64, method string) (*pullRequest, error) {
	in := map[string]any{}
	if method != "" {
		in["merge_method"] = method // merge, squash or rebase
	}
	if _, err := g.c.do(ctx, http.MethodPut, fmt.Sprintf("/repos/%s/pulls/%d/merge", g.repo, n), in, nil); err != nil {
		return nil, err
	}
	return g.get(ctx, n)
}

// openPull returns the pull request from source into target among those
// listed with query, or creates one (created is then true), on an API
// shaped like GitHub's (GitHub, Gitea).
func openPull(ctx context.Context, c *apiClient, repo, query, source, target string, text prText) (pr githubPR, created bool, err error) {
	found := false
	err = list(ctx, c, "/repos/"+repo+"/pulls?"+query, func(page []githubPR) bool {
		for _, e := range page {
			if e.Head.Ref == source && e.Base.Ref == target {
				pr, found = e, true
			}
		}
		return found
	})
	if err != nil || found {
		return pr, false, err
	}
	title, body, err := text(ctx)
	if err != nil {
		return githubPR{}, false, err
	}
	if _, err := c.do(ctx, http.MethodPost, "/repos/"+repo+"/pulls", map[string]any{"title": title, "head": source, "base": target, "body": body}, &pr); err != nil {
		return githubPR{}, false, err
	}
	return pr, true, nil
}

// getPull gets pull request n of repo on an API shaped like GitHub's.
func getPull(ctx context.Context, c *apiClient, repo string, n int64) (*pullRequest, error) {
	var pr githubPR
	if _, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/repos/%s/pulls/%d", repo, n), nil, &pr); err != nil {
		return nil, err
	}
	return pr.pr(), nil
}

type gitlab struct {
	c       *apiClient
	project string
}

type gitlabMR struct {
	IID            int64  `json:"iid"`
	WebURL         string `json:"web_url"`
	State          string `json:"state"`
	MergeCommitSHA string `json:"merge_commit_sha"`
	SourceBranch   string `json:"source_branch"`
	TargetBranch   string `json:"target_branch"`
}

func (m gitlabMR) pr() *pullRequest {
	return &pullRequest{Number: m.IID, URL: m.WebURL, Open: m.State == "opened", Merged: m.State == "merged", Commit: m.MergeCommitSHA}
}

func (g *gitlab) open(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	var found *pullRequest
	q := url.Values{"state": {"opened"}, "source_branch": {source}, "target_branch": {target}, "per_page": {"100"}}
	err := list(ctx, g.c, "/projects/"+g.project+"/merge_requests?"+q.Encode(), func(page []gitlabMR) bool {
		for _, e := range page {
			if e.SourceBranch == source && e.TargetBranch == target {
				found = e.pr()
			}
		}
		return found != nil
	})
	if err != nil || found != nil {
		return found, err
	}
	title, body, err := text(ctx)
	if err != nil {
		return nil, err
	}
	var created gitlabMR
	in := map[string]any{"source_branch": source, "target_branch": target, "title": title, "description": body}
	if len(labels) > 0 {
		in["labels"] = strings.Join(labels, ",")
	}
	if _, err := g.c.do(ctx, http.MethodPost, "/projects/"+g.project+"/merge_requests", in, &created); err != nil {
		return nil, err
	}
	return created.pr(), nil
}

func (g *gitlab) get(ctx context.Context, n int64) (*pullRequest, error) {
	var mr gitlabMR
	if _, err := g.c.do(ctx, http.MethodGet, fmt.Sprintf("/projects/%s/merge_requests/%d", g.project, n), nil, &mr); err != nil {
		return nil, err
	}
	return mr.pr(), nil
}

// headMessage reads GET /projects/:id/repository/branches/:branch.
func (g *gitlab) headMessage(ctx context.Context, branch string) (string, error) {
	var b struct {
		Commit struct {
			Message string `json:"message"`
		} `json:"commit"`
	}
	if _, err := g.c.do(ctx, http.MethodGet, "/projects/"+g.project+"/repository/branches/"+url.PathEscape(branch), nil, &b); err != nil {
		return "", err
	}
	return b.Commit.Message, nil
}

func (g *gitlab) merge(ctx context.Context, n int64, method string) (*pullRequest, error) {
	in := map[string]any{}
	switch method {
	case "", "merge":
	case "squash":
		in["squash"] = true
	default:
		return nil, Terminal(fmt.Errorf("mergeMethod %q: GitLab merges with merge or squash", method))
	}
	var mr gitlabMR
	if _, err := g.c.do(ctx, http.MethodPut, fmt.Sprintf("/projects/%s/merge_requests/%d/merge", g.project, n), in, &mr); err != nil {
		return nil, err
	}
	return mr.pr(), nil
}

type gitea struct {
	c    *apiClient
	repo string
}

func (g *gitea) open(ctx context.Context, source, target string, text prText, _ []string) (*pullRequest, error) {
	pr, _, err := openPull(ctx, g.c, g.repo, "state=open&limit=50", source, target, text)
	if err != nil {
		return nil, err
	}
	return pr.pr(), nil
}

func (g *gitea) get(ctx context.Context, n int64) (*pullRequest, error) {
	return getPull(ctx, g.c, g.repo, n)
}

// headMessage reads GET /repos/{owner}/{repo}/branches/{branch}.
func (g *gitea) headMessage(ctx context.Context, branch string) (string, error) {
	var b struct {
		Commit struct {
			Message string `json:"message"`
		} `json:"commit"`
	}
	if _, err := g.c.do(ctx, http.MethodGet, "/repos/"+g.repo+"/branches/"+branchPath(branch), nil, &b); err != nil {
		return "", err
	}
	return b.Commit.Message, nil
}

func (g *gitea) merge(ctx context.Context, n int64, method string) (*pullRequest, error) {
	if method == "" {
		method = "merge" // or rebase, rebase-merge, squash, fast-forward-only
	}
	if _, err := g.c.do(ctx, http.MethodPost, fmt.Sprintf("/repos/%s/pulls/%d/merge", g.repo, n), map[string]any{"Do": method}, nil); err != nil {
		return nil, err
	}
	return g.get(ctx, n)
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
