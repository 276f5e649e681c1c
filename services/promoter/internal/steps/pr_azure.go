package steps

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// azureAPIVersion is the Azure DevOps REST API version every call names.
const azureAPIVersion = "7.1"

// azure speaks the Azure DevOps Git REST API 7.1
// (https://learn.microsoft.com/en-us/rest/api/azure/devops/git/pull-requests?view=azure-devops-rest-7.1)
// for a repository at https://dev.azure.com/ORG/PROJECT/_git/REPO,
// https://ORG.visualstudio.com/PROJECT/_git/REPO or an Azure DevOps
// Server's COLLECTION/PROJECT/_git/REPO. A credential's password is a
// personal access token, sent as Basic auth with an empty user name.
type azure struct {
	c *apiClient
	// web is the repository's page, where .../pullrequest/{id} is.
	web string
}

func newAzure(c *apiClient, scheme, host, path string) (*azure, error) {
	project, repo, ok := strings.Cut(path, "/_git/")
	if !ok || project == "" || repo == "" || strings.Contains(repo, "/") {
		return nil, Terminal(fmt.Errorf("repoURL: an Azure DevOps repository is https://dev.azure.com/ORG/PROJECT/_git/REPO, got path %q", path))
	}
	c.base = scheme + "://" + host + "/" + project + "/_apis/git/repositories/" + url.PathEscape(repo)
	if c.token != "" {
		c.header, c.prefix, c.token = "Authorization", "Basic ", base64.StdEncoding.EncodeToString([]byte(":"+c.token))
	}
	return &azure{c: c, web: scheme + "://" + host + "/" + path}, nil
}

type azurePR struct {
	ID            int64  `json:"pullRequestId"`
	Status        string `json:"status"` // active, abandoned, completed
	SourceRefName string `json:"sourceRefName"`
	TargetRefName string `json:"targetRefName"`
	// LastMergeSourceCommit is the source's head the pull request was last
	// merged from (completing it names this commit).
	LastMergeSourceCommit *azureCommitRef `json:"lastMergeSourceCommit"`
	// LastMergeCommit is the merge commit once completed.
	LastMergeCommit *azureCommitRef `json:"lastMergeCommit"`
}

type azureCommitRef struct {
	CommitID string `json:"commitId"`
}

func (a *azure) pr(p azurePR) *pullRequest {
	out := &pullRequest{Number: p.ID, URL: fmt.Sprintf("%s/pullrequest/%d", a.web, p.ID), Open: p.Status == "active", Merged: p.Status == "completed"}
	if out.Merged && p.LastMergeCommit != nil {
		out.Commit = p.LastMergeCommit.CommitID
	}
	return out
}

// call is the URL path of an API call with api-version added to query.
func azureCall(path string, q url.Values) string {
	if q == nil {
		q = url.Values{}
	}
	q.Set("api-version", azureAPIVersion)
	return path + "?" + q.Encode()
}

// open pages through the active pull requests from source into target
// ($top and $skip) and creates one when there is none; labels are set as
// the pull request's tags.
func (a *azure) open(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	const top = 100
	for page := range maxPages {
		q := url.Values{"searchCriteria.sourceRefName": {"refs/heads/" + source}, "searchCriteria.targetRefName": {"refs/heads/" + target},
			"searchCriteria.status": {"active"}, "$top": {fmt.Sprint(top)}, "$skip": {fmt.Sprint(page * top)}}
		var list struct {
			Value []azurePR `json:"value"`
		}
		if _, err := a.c.do(ctx, http.MethodGet, azureCall("/pullrequests", q), nil, &list); err != nil {
			return nil, err
		}
		for _, e := range list.Value {
			if e.Status == "active" && e.SourceRefName == "refs/heads/"+source && e.TargetRefName == "refs/heads/"+target {
				return a.pr(e), nil
			}
		}
		if len(list.Value) < top {
			break
		}
	}
	title, body, err := text(ctx)
	if err != nil {
		return nil, err
	}
	in := map[string]any{"sourceRefName": "refs/heads/" + source, "targetRefName": "refs/heads/" + target, "title": title, "description": body}
	if len(labels) > 0 {
		tags := make([]map[string]string, len(labels))
		for i, l := range labels {
			tags[i] = map[string]string{"name": l}
		}
		in["labels"] = tags
	}
	var created azurePR
	if _, err := a.c.do(ctx, http.MethodPost, azureCall("/pullrequests", nil), in, &created); err != nil {
		return nil, err
	}
	return a.pr(created), nil
}

func (a *azure) raw(ctx context.Context, n int64) (azurePR, error) {
	var pr azurePR
	_, err := a.c.do(ctx, http.MethodGet, azureCall(fmt.Sprintf("/pullrequests/%d", n), nil), nil, &pr)
	return pr, err
}

func (a *azure) get(ctx context.Context, n int64) (*pullRequest, error) {
	pr, err := a.raw(ctx, n)
	if err != nil {
		return nil, err
	}
	return a.pr(pr), nil
}

// merge completes the pull request (PATCH status completed, naming the
// source commit it was checked at); method is a completionOptions
// mergeStrategy: noFastForward, squash, rebase or rebaseMerge. Azure
// DevOps completes asynchronously: the answer may still be active, and
// git-merge-pr then waits (wait: true) or fails to be retried.
func (a *azure) merge(ctx context.Context, n int64, method string) (*pullRequest, error) {
	cur, err := a.raw(ctx, n)
	if err != nil {
		return nil, err
	}
	in := map[string]any{"status": "completed"}
	if cur.LastMergeSourceCommit != nil {
		in["lastMergeSourceCommit"] = cur.LastMergeSourceCommit
	}
	if method != "" {
		in["completionOptions"] = map[string]any{"mergeStrategy": method}
	}
	var pr azurePR
	if _, err := a.c.do(ctx, http.MethodPatch, azureCall(fmt.Sprintf("/pullrequests/%d", n), nil), in, &pr); err != nil {
		return nil, err
	}
	return a.pr(pr), nil
}

// headMessage finds the branch's commit (GET .../refs?filter=heads/NAME,
// a prefix filter) and reads its comment (GET .../commits/{id}).
func (a *azure) headMessage(ctx context.Context, branch string) (string, error) {
	var refs struct {
		Value []struct {
			Name     string `json:"name"`
			ObjectID string `json:"objectId"`
		} `json:"value"`
	}
	if _, err := a.c.do(ctx, http.MethodGet, azureCall("/refs", url.Values{"filter": {"heads/" + branch}}), nil, &refs); err != nil {
		return "", err
	}
	for _, r := range refs.Value {
		if r.Name != "refs/heads/"+branch {
			continue
		}
		var c struct {
			Comment string `json:"comment"`
		}
		if _, err := a.c.do(ctx, http.MethodGet, azureCall("/commits/"+url.PathEscape(r.ObjectID), nil), nil, &c); err != nil {
			return "", err
		}
		return c.Comment, nil
	}
	return "", Terminal(fmt.Errorf("branch %q not found", branch))
}
