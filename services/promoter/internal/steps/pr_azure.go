package steps

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/microsoft/azure-devops-go-api/azuredevops/v7"
	azcore "github.com/microsoft/azure-devops-go-api/azuredevops/v7/core"
	azgit "github.com/microsoft/azure-devops-go-api/azuredevops/v7/git"
)

// azure speaks the Azure DevOps Git REST API
// (https://learn.microsoft.com/en-us/rest/api/azure/devops/git/pull-requests?view=azure-devops-rest-7.1)
// through Microsoft's SDK, github.com/microsoft/azure-devops-go-api
// (azuredevops/v7), for a repository at
// https://dev.azure.com/ORG/PROJECT/_git/REPO,
// https://ORG.visualstudio.com/PROJECT/_git/REPO or an Azure DevOps
// Server's COLLECTION/PROJECT/_git/REPO. A credential's password is a
// personal access token, sent as Basic auth with an empty user name.
//
// The SDK learns its routes from the server: its first call to an
// organization (collection) is OPTIONS ORG/_apis, whose answer (the
// resource locations) it keeps for the life of the process, and it names
// the api-version in the Accept header. Unlike the SDK's git.NewClient,
// the client is built on the organization URL itself, without the
// resource-area lookup, so that every request goes through the steps'
// HTTP client (egress policy, TLS settings, size limit) and retryTransport:
// the SDK has no retries of its own.
type azure struct {
	git azgit.Client
	// secrets are the token and the header carrying it, kept out of errors.
	secrets []string
	project string
	repo    string
	// web is the repository's page, where .../pullrequest/{id} is.
	web string
}

func newAzure(hc *http.Client, scheme, host, path, token string) (*azure, error) {
	prefix, repo, ok := strings.Cut(path, "/_git/")
	if !ok || prefix == "" || repo == "" || strings.Contains(repo, "/") {
		return nil, Terminal(fmt.Errorf("repoURL: an Azure DevOps repository is https://dev.azure.com/ORG/PROJECT/_git/REPO, got path %q", path))
	}
	org, project := "", prefix
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		org, project = prefix[:i], prefix[i+1:]
	}
	base := scheme + "://" + host
	if org != "" {
		base += "/" + org
	}
	conn := azuredevops.NewAnonymousConnection(base)
	var secrets []string
	if token != "" {
		conn = azuredevops.NewPatConnection(base, token)
		secrets = []string{token, conn.AuthorizationString}
	}
	hc = &http.Client{Transport: azureTransport{next: hc.Transport}, CheckRedirect: hc.CheckRedirect, Jar: hc.Jar}
	c := azuredevops.NewClientWithOptions(conn, conn.BaseUrl, azuredevops.WithHTTPClient(hc))
	return &azure{git: &azgit.ClientImpl{Client: *c}, secrets: secrets, project: project, repo: repo, web: scheme + "://" + host + "/" + path}, nil
}

// azureTransport drops the X-TFS-Session header from answers: the SDK
// copies it into a package variable without a lock, a data race between
// concurrent steps.
type azureTransport struct{ next http.RoundTripper }

func (t azureTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if resp != nil {
		resp.Header.Del("X-TFS-Session")
	}
	return resp, err
}

// error names the call and, for an answer the SDK turned into an error,
// its status and the server's message (without the token, should the
// server echo it), judged by statusError; a request the egress policy
// refused is terminal.
func (a *azure) error(call string, err error) error {
	var status *int
	var v azuredevops.WrappedError
	var p *azuredevops.WrappedError
	switch {
	case errors.As(err, &v):
		status = v.StatusCode
	case errors.As(err, &p):
		status = p.StatusCode
	}
	var missing *azuredevops.LocationIdNotRegisteredError
	if errors.As(err, &missing) {
		// The server's resource locations (OPTIONS ORG/_apis) lack the git
		// resource: not an Azure DevOps organization, or too old a server.
		return Terminal(fmt.Errorf("%s: %w (is repoURL an Azure DevOps repository, ORG/PROJECT/_git/REPO?)", call, err))
	}
	if status == nil {
		return egressError(fmt.Errorf("%s: %w", call, err))
	}
	return statusError(fmt.Errorf("%s: HTTP %d: %s", call, *status, scrub(err.Error(), a.secrets)), *status, nil)
}

func (a *azure) pr(p *azgit.GitPullRequest) *pullRequest {
	out := &pullRequest{}
	if p.PullRequestId != nil {
		out.Number = int64(*p.PullRequestId)
	}
	out.URL = fmt.Sprintf("%s/pullrequest/%d", a.web, out.Number)
	if p.Status != nil {
		out.Open = *p.Status == azgit.PullRequestStatusValues.Active
		out.Merged = *p.Status == azgit.PullRequestStatusValues.Completed
	}
	if out.Merged && p.LastMergeCommit != nil && p.LastMergeCommit.CommitId != nil {
		out.Commit = *p.LastMergeCommit.CommitId
	}
	return out
}

// open pages through the active pull requests from source into target
// (GET .../pullrequests with searchCriteria, $top and $skip) and creates
// one when there is none; labels are set as the pull request's tags.
func (a *azure) open(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	const top = 100
	src, dst := "refs/heads/"+source, "refs/heads/"+target
	active := azgit.PullRequestStatusValues.Active
	for page := range maxPages {
		skip, n := page*top, top
		list, err := a.git.GetPullRequests(ctx, azgit.GetPullRequestsArgs{Project: &a.project, RepositoryId: &a.repo,
			SearchCriteria: &azgit.GitPullRequestSearchCriteria{SourceRefName: &src, TargetRefName: &dst, Status: &active},
			Top:            &n, Skip: &skip})
		if err != nil {
			return nil, a.error("list pull requests", err)
		}
		for i := range *list {
			e := &(*list)[i]
			if e.Status != nil && *e.Status == active && strOf(e.SourceRefName) == src && strOf(e.TargetRefName) == dst {
				return a.pr(e), nil
			}
		}
		if len(*list) < top {
			break
		}
	}
	title, body, err := text(ctx)
	if err != nil {
		return nil, err
	}
	in := &azgit.GitPullRequest{SourceRefName: &src, TargetRefName: &dst, Title: &title, Description: &body}
	if len(labels) > 0 {
		tags := make([]azcore.WebApiTagDefinition, len(labels))
		for i := range labels {
			tags[i] = azcore.WebApiTagDefinition{Name: &labels[i]}
		}
		in.Labels = &tags
	}
	created, err := a.git.CreatePullRequest(ctx, azgit.CreatePullRequestArgs{Project: &a.project, RepositoryId: &a.repo, GitPullRequestToCreate: in})
	if err != nil {
		return nil, a.error("create pull request", err)
	}
	return a.pr(created), nil
}

func (a *azure) raw(ctx context.Context, n int64) (*azgit.GitPullRequest, error) {
	id := int(n)
	pr, err := a.git.GetPullRequest(ctx, azgit.GetPullRequestArgs{Project: &a.project, RepositoryId: &a.repo, PullRequestId: &id})
	if err != nil {
		return nil, a.error(fmt.Sprintf("get pull request %d", n), err)
	}
	return pr, nil
}

func (a *azure) get(ctx context.Context, n int64) (*pullRequest, error) {
	pr, err := a.raw(ctx, n)
	if err != nil {
		return nil, err
	}
	return a.pr(pr), nil
}

// merge completes the pull request (PATCH status completed, naming the
// source commit it was checked at, so that a push since fails the merge);
// method is a completionOptions mergeStrategy: noFastForward, squash,
// rebase or rebaseMerge. Azure DevOps completes asynchronously: the answer
// may still be active, and git-merge-pr then waits (wait: true) or fails
// to be retried.
func (a *azure) merge(ctx context.Context, n int64, method string) (*pullRequest, error) {
	cur, err := a.raw(ctx, n)
	if err != nil {
		return nil, err
	}
	completed := azgit.PullRequestStatusValues.Completed
	in := &azgit.GitPullRequest{Status: &completed}
	if cur.LastMergeSourceCommit != nil && cur.LastMergeSourceCommit.CommitId != nil {
		in.LastMergeSourceCommit = &azgit.GitCommitRef{CommitId: cur.LastMergeSourceCommit.CommitId}
	}
	if method != "" {
		strategy := azgit.GitPullRequestMergeStrategy(method)
		in.CompletionOptions = &azgit.GitPullRequestCompletionOptions{MergeStrategy: &strategy}
	}
	id := int(n)
	pr, err := a.git.UpdatePullRequest(ctx, azgit.UpdatePullRequestArgs{Project: &a.project, RepositoryId: &a.repo, PullRequestId: &id, GitPullRequestToUpdate: in})
	if err != nil {
		return nil, a.error(fmt.Sprintf("complete pull request %d", n), err)
	}
	return a.pr(pr), nil
}

// headMessage finds the branch's commit (GET .../refs?filter=heads/NAME,
// a prefix filter) and reads its comment (GET .../commits/{id}).
func (a *azure) headMessage(ctx context.Context, branch string) (string, error) {
	filter := "heads/" + branch
	refs, err := a.git.GetRefs(ctx, azgit.GetRefsArgs{Project: &a.project, RepositoryId: &a.repo, Filter: &filter})
	if err != nil {
		return "", a.error("list refs", err)
	}
	for _, r := range refs.Value {
		if strOf(r.Name) != "refs/heads/"+branch || r.ObjectId == nil {
			continue
		}
		c, err := a.git.GetCommit(ctx, azgit.GetCommitArgs{Project: &a.project, RepositoryId: &a.repo, CommitId: r.ObjectId})
		if err != nil {
			return "", a.error("get commit "+*r.ObjectId, err)
		}
		return strOf(c.Comment), nil
	}
	return "", Terminal(fmt.Errorf("branch %q not found", branch))
}

// strOf is *p, or "" for nil.
func strOf(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
