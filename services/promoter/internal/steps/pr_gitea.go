package steps

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"code.gitea.io/sdk/gitea"
)

// giteaHost speaks Gitea's REST API v1 through Gitea's Go SDK
// (https://gitea.com/api/swagger) at HOST/api/v1, with the token as
// Authorization: token. The SDK's probe of the server's version is skipped
// (gitea.SetGiteaVersion("")): the calls used here exist since Gitea 1.14,
// and the probe would cost a request per step.
type giteaHost struct {
	c           *gitea.Client
	owner, name string
	token       string
}

// giteaPageSize is the page size asked of Gitea, whose default maximum
// (MAX_RESPONSE_ITEMS) is 50.
const giteaPageSize = 50

func newGitea(ctx context.Context, hc *http.Client, scheme, host, path, token string) (*giteaHost, error) {
	owner, name, ok := strings.Cut(path, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return nil, Terminal(fmt.Errorf("repoURL: a Gitea repository is https://HOST/OWNER/REPO, got path %q", path))
	}
	opts := []gitea.ClientOption{gitea.SetHTTPClient(hc), gitea.SetContext(ctx), gitea.SetGiteaVersion("")}
	if token != "" {
		opts = append(opts, gitea.SetToken(token))
	}
	c, err := gitea.NewClient(scheme+"://"+host, opts...)
	if err != nil {
		return nil, hostError("gitea: client", nil, err, token)
	}
	return &giteaHost{c: c, owner: owner, name: name, token: token}, nil
}

// at binds the SDK's calls to ctx (the SDK takes one per client).
func (g *giteaHost) at(ctx context.Context) *gitea.Client {
	g.c.SetContext(ctx)
	return g.c
}

func (g *giteaHost) fail(op string, resp *gitea.Response, err error) error {
	var r *http.Response
	if resp != nil {
		r = resp.Response
		if r != nil {
			err = fmt.Errorf("HTTP %d: %w", r.StatusCode, err)
		}
	}
	return hostError("gitea: "+op, r, err, g.token)
}

func giteaPull(p *gitea.PullRequest) *pullRequest {
	out := &pullRequest{Number: p.Index, URL: p.HTMLURL, Open: p.State == gitea.StateOpen, Merged: p.HasMerged}
	if p.MergedCommitID != nil {
		out.Commit = *p.MergedCommitID
	}
	return out
}

// open lists the repository's open pull requests, every page, for the one
// from source into target, and opens one (with labels) when none is.
func (g *giteaHost) open(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	opt := gitea.ListPullRequestsOptions{State: gitea.StateOpen, ListOptions: gitea.ListOptions{Page: 1, PageSize: giteaPageSize}}
	for range maxPages {
		page, resp, err := g.at(ctx).ListRepoPullRequests(g.owner, g.name, opt)
		if err != nil {
			return nil, g.fail("list pull requests", resp, err)
		}
		for _, p := range page {
			if p.Head != nil && p.Base != nil && p.Head.Ref == source && p.Base.Ref == target {
				return giteaPull(p), nil
			}
		}
		if resp.NextPage == 0 {
			return g.create(ctx, source, target, text, labels)
		}
		opt.Page = resp.NextPage
	}
	return nil, fmt.Errorf("gitea: list pull requests: more than %d pages", maxPages)
}

func (g *giteaHost) create(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	ids, err := g.labelIDs(ctx, labels)
	if err != nil {
		return nil, err
	}
	title, body, err := text(ctx)
	if err != nil {
		return nil, err
	}
	p, resp, err := g.at(ctx).CreatePullRequest(g.owner, g.name, gitea.CreatePullRequestOption{Head: source, Base: target, Title: title, Body: body, Labels: ids})
	if err != nil {
		return nil, g.fail("open a pull request", resp, err)
	}
	return giteaPull(p), nil
}

// labelIDs maps label names to the IDs Gitea takes: the repository's
// labels, then (for a repository of an organisation) the organisation's.
// A name neither has is refused.
func (g *giteaHost) labelIDs(ctx context.Context, names []string) ([]int64, error) {
	if len(names) == 0 {
		return nil, nil
	}
	known := map[string]int64{}
	add := func(ls []*gitea.Label) {
		for _, l := range ls {
			if _, ok := known[l.Name]; !ok {
				known[l.Name] = l.ID
			}
		}
	}
	missing := func() []string {
		var out []string
		for _, n := range names {
			if _, ok := known[n]; !ok {
				out = append(out, n)
			}
		}
		return out
	}
	for page := 1; page <= maxPages; page++ {
		ls, resp, err := g.at(ctx).ListRepoLabels(g.owner, g.name, gitea.ListLabelsOptions{ListOptions: gitea.ListOptions{Page: page, PageSize: giteaPageSize}})
		if err != nil {
			return nil, g.fail("list labels", resp, err)
		}
		add(ls)
		if resp.NextPage == 0 {
			break
		}
	}
	for page := 1; page <= maxPages && len(missing()) > 0; page++ {
		ls, resp, err := g.at(ctx).ListOrgLabels(g.owner, gitea.ListOrgLabelsOptions{ListOptions: gitea.ListOptions{Page: page, PageSize: giteaPageSize}})
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			break // the owner is a user
		}
		if err != nil {
			return nil, g.fail("list organisation labels", resp, err)
		}
		add(ls)
		if resp.NextPage == 0 {
			break
		}
	}
	if m := missing(); len(m) > 0 {
		return nil, Terminal(fmt.Errorf("labels: %s not defined in the Gitea repository %s/%s or its organisation", strings.Join(m, ", "), g.owner, g.name))
	}
	ids := make([]int64, 0, len(names))
	for _, n := range names {
		if id := known[n]; !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (g *giteaHost) get(ctx context.Context, n int64) (*pullRequest, error) {
	p, resp, err := g.at(ctx).GetPullRequest(g.owner, g.name, n)
	if err != nil {
		return nil, g.fail(fmt.Sprintf("get pull request %d", n), resp, err)
	}
	return giteaPull(p), nil
}

// headMessage reads GET /repos/{owner}/{repo}/branches/{branch}.
func (g *giteaHost) headMessage(ctx context.Context, branch string) (string, error) {
	b, resp, err := g.at(ctx).GetRepoBranch(g.owner, g.name, branch)
	if err != nil {
		return "", g.fail("get branch "+branch, resp, err)
	}
	if b.Commit == nil {
		return "", nil
	}
	return b.Commit.Message, nil
}

func (g *giteaHost) merge(ctx context.Context, n int64, method string) (*pullRequest, error) {
	if method == "" {
		method = "merge" // or rebase, rebase-merge, squash, fast-forward-only, manually-merged
	}
	if _, resp, err := g.at(ctx).MergePullRequest(g.owner, g.name, n, gitea.MergePullRequestOption{Style: gitea.MergeStyle(method)}); err != nil {
		return nil, g.fail(fmt.Sprintf("merge pull request %d", n), resp, err)
	}
	return g.get(ctx, n)
}
