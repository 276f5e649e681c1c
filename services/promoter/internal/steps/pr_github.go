package steps

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-github/v84/github"
)

// githubHost speaks GitHub's REST API through go-github
// (https://docs.github.com/en/rest/pulls/pulls): api.github.com for
// github.com, HOST/api/v3 on GitHub Enterprise Server. The token is sent
// as Authorization: Bearer.
type githubHost struct {
	c           *github.Client
	owner, name string
	token       string
}

func newGitHub(hc *http.Client, scheme, host, path, token string) (*githubHost, error) {
	owner, name, ok := strings.Cut(path, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return nil, Terminal(fmt.Errorf("repoURL: a GitHub repository is https://HOST/OWNER/REPO, got path %q", path))
	}
	c := github.NewClient(hc)
	if token != "" {
		c = c.WithAuthToken(token)
	}
	if host != "github.com" && host != "www.github.com" {
		// Enterprise Server: WithEnterpriseURLs adds /api/v3/ and
		// /api/uploads/.
		var err error
		if c, err = c.WithEnterpriseURLs(scheme+"://"+host+"/", scheme+"://"+host+"/"); err != nil {
			return nil, Terminal(fmt.Errorf("repoURL: GitHub Enterprise URL: %w", err))
		}
	}
	return &githubHost{c: c, owner: owner, name: name, token: token}, nil
}

func (g *githubHost) fail(op string, resp *github.Response, err error) error {
	var r *http.Response
	if resp != nil {
		r = resp.Response
	}
	return hostError("github: "+op, r, err, g.token)
}

func githubPull(p *github.PullRequest) *pullRequest {
	return &pullRequest{Number: int64(p.GetNumber()), URL: p.GetHTMLURL(), Open: p.GetState() == "open", Merged: p.GetMerged(), Commit: p.GetMergeCommitSHA()}
}

// open lists the open pull requests from OWNER:source into target, every
// page, and opens one when none is; labels are set on one it opens.
func (g *githubHost) open(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	opt := &github.PullRequestListOptions{State: "open", Head: g.owner + ":" + source, Base: target, ListOptions: github.ListOptions{PerPage: 100}}
	for range maxPages {
		page, resp, err := g.c.PullRequests.List(ctx, g.owner, g.name, opt)
		if err != nil {
			return nil, g.fail("list pull requests", resp, err)
		}
		for _, p := range page {
			if p.GetHead().GetRef() == source && p.GetBase().GetRef() == target {
				return githubPull(p), nil
			}
		}
		if resp.NextPage == 0 {
			return g.create(ctx, source, target, text, labels)
		}
		opt.Page = resp.NextPage
	}
	return nil, fmt.Errorf("github: list pull requests: more than %d pages", maxPages)
}

func (g *githubHost) create(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	title, body, err := text(ctx)
	if err != nil {
		return nil, err
	}
	p, resp, err := g.c.PullRequests.Create(ctx, g.owner, g.name, &github.NewPullRequest{Title: &title, Head: &source, Base: &target, Body: &body})
	if err != nil {
		return nil, g.fail("open a pull request", resp, err)
	}
	if len(labels) > 0 {
		if _, resp, err := g.c.Issues.AddLabelsToIssue(ctx, g.owner, g.name, p.GetNumber(), labels); err != nil {
			return nil, g.fail(fmt.Sprintf("label pull request %d", p.GetNumber()), resp, err)
		}
	}
	return githubPull(p), nil
}

func (g *githubHost) get(ctx context.Context, n int64) (*pullRequest, error) {
	p, resp, err := g.c.PullRequests.Get(ctx, g.owner, g.name, int(n))
	if err != nil {
		return nil, g.fail(fmt.Sprintf("get pull request %d", n), resp, err)
	}
	return githubPull(p), nil
}

// headMessage reads GET /repos/{owner}/{repo}/branches/{branch}.
func (g *githubHost) headMessage(ctx context.Context, branch string) (string, error) {
	b, resp, err := g.c.Repositories.GetBranch(ctx, g.owner, g.name, branch, 3)
	if err != nil {
		return "", g.fail("get branch "+branch, resp, err)
	}
	return b.GetCommit().GetCommit().GetMessage(), nil
}

func (g *githubHost) merge(ctx context.Context, n int64, method string) (*pullRequest, error) {
	// method: merge, squash or rebase; "" is the repository's default.
	if _, resp, err := g.c.PullRequests.Merge(ctx, g.owner, g.name, int(n), "", &github.PullRequestOptions{MergeMethod: method}); err != nil {
		return nil, g.fail(fmt.Sprintf("merge pull request %d", n), resp, err)
	}
	return g.get(ctx, n)
}
