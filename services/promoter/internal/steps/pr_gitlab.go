package steps

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	gitlabapi "gitlab.com/gitlab-org/api/client-go/v2"
)

// gitlabHost speaks GitLab's REST API v4 through GitLab's client-go
// (https://docs.gitlab.com/api/merge_requests/) at HOST/api/v4, with the
// token as PRIVATE-TOKEN. The SDK's own retries are off: retryTransport
// retries instead, as for every host (client-go's default would send a POST
// again after a 5xx and open a second merge request).
type gitlabHost struct {
	c       *gitlabapi.Client
	project string // GROUP/…/REPO, which the SDK escapes
	token   string
}

func newGitLab(hc *http.Client, scheme, host, path, token string) (*gitlabHost, error) {
	c, err := gitlabapi.NewClient(token,
		gitlabapi.WithBaseURL(scheme+"://"+host+"/api/v4"),
		gitlabapi.WithHTTPClient(hc),
		gitlabapi.WithoutRetries(),
		gitlabapi.WithURLWarningLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		return nil, Terminal(fmt.Errorf("repoURL: GitLab API URL: %w", err))
	}
	return &gitlabHost{c: c, project: path, token: token}, nil
}

func (g *gitlabHost) fail(op string, resp *gitlabapi.Response, err error) error {
	var r *http.Response
	if resp != nil {
		r = resp.Response
	}
	return hostError("gitlab: "+op, r, err, g.token)
}

// gitlabMR is the pull request of a merge request. Its commit is the merge
// commit; a merge request merged without one (fast-forward) gives its
// squash commit, else its head.
func gitlabMR(mr *gitlabapi.BasicMergeRequest) *pullRequest {
	p := &pullRequest{Number: mr.IID, URL: mr.WebURL, Open: mr.State == "opened", Merged: mr.State == "merged"}
	if p.Merged {
		for _, sha := range []string{mr.MergeCommitSHA, mr.SquashCommitSHA, mr.SHA} {
			if sha != "" {
				p.Commit = sha
				break
			}
		}
	}
	return p
}

// open lists the project's open merge requests from source into target,
// every page, and opens one (with labels) when none is.
func (g *gitlabHost) open(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	opt := &gitlabapi.ListProjectMergeRequestsOptions{State: gitlabapi.Ptr("opened"), SourceBranch: &source, TargetBranch: &target,
		ListOptions: gitlabapi.ListOptions{PerPage: 100}}
	for range maxPages {
		page, resp, err := g.c.MergeRequests.ListProjectMergeRequests(g.project, opt, gitlabapi.WithContext(ctx))
		if err != nil {
			return nil, g.fail("list merge requests", resp, err)
		}
		for _, mr := range page {
			if mr.SourceBranch == source && mr.TargetBranch == target {
				return gitlabMR(mr), nil
			}
		}
		if resp.NextPage == 0 {
			return g.create(ctx, source, target, text, labels)
		}
		opt.Page = resp.NextPage
	}
	return nil, fmt.Errorf("gitlab: list merge requests: more than %d pages", maxPages)
}

func (g *gitlabHost) create(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	title, body, err := text(ctx)
	if err != nil {
		return nil, err
	}
	opt := &gitlabapi.CreateMergeRequestOptions{Title: &title, Description: &body, SourceBranch: &source, TargetBranch: &target}
	if len(labels) > 0 {
		l := gitlabapi.LabelOptions(labels)
		opt.Labels = &l
	}
	mr, resp, err := g.c.MergeRequests.CreateMergeRequest(g.project, opt, gitlabapi.WithContext(ctx))
	if err != nil {
		return nil, g.fail("open a merge request", resp, err)
	}
	return gitlabMR(&mr.BasicMergeRequest), nil
}

func (g *gitlabHost) get(ctx context.Context, n int64) (*pullRequest, error) {
	mr, resp, err := g.c.MergeRequests.GetMergeRequest(g.project, n, nil, gitlabapi.WithContext(ctx))
	if err != nil {
		return nil, g.fail(fmt.Sprintf("get merge request %d", n), resp, err)
	}
	return gitlabMR(&mr.BasicMergeRequest), nil
}

// headMessage reads GET /projects/:id/repository/branches/:branch.
func (g *gitlabHost) headMessage(ctx context.Context, branch string) (string, error) {
	b, resp, err := g.c.Branches.GetBranch(g.project, branch, gitlabapi.WithContext(ctx))
	if err != nil {
		return "", g.fail("get branch "+branch, resp, err)
	}
	if b.Commit == nil {
		return "", nil
	}
	return b.Commit.Message, nil
}

func (g *gitlabHost) merge(ctx context.Context, n int64, method string) (*pullRequest, error) {
	opt := &gitlabapi.AcceptMergeRequestOptions{}
	switch method {
	case "", "merge":
	case "squash":
		opt.Squash = gitlabapi.Ptr(true)
	default:
		return nil, Terminal(fmt.Errorf("mergeMethod %q: GitLab merges with merge or squash", method))
	}
	mr, resp, err := g.c.MergeRequests.AcceptMergeRequest(g.project, n, opt, gitlabapi.WithContext(ctx))
	if err != nil {
		return nil, g.fail(fmt.Sprintf("merge merge request %d", n), resp, err)
	}
	return gitlabMR(&mr.BasicMergeRequest), nil
}
