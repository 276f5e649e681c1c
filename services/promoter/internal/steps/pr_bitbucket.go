package steps

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// bitbucket speaks Bitbucket Cloud's REST API 2.0
// (https://developer.atlassian.com/cloud/bitbucket/rest/api-group-pullrequests/):
// https://api.bitbucket.org/2.0 for bitbucket.org, /2.0 on any other host
// (Bitbucket Data Center's /rest/api/1.0 is another API, not spoken here).
// A credential's password is sent as a Bearer access token, or with its
// username as Basic auth (an app password) when the username is neither
// empty nor Bitbucket's x-token-auth.
type bitbucket struct {
	c    *apiClient
	repo string // workspace/repo_slug
}

func newBitbucket(c *apiClient, scheme, host, path, user string) (*bitbucket, error) {
	if strings.Count(path, "/") != 1 {
		return nil, Terminal(fmt.Errorf("repoURL: a Bitbucket repository is https://bitbucket.org/WORKSPACE/REPO, got path %q", path))
	}
	c.base = scheme + "://" + host + "/2.0"
	if host == "bitbucket.org" || host == "www.bitbucket.org" {
		c.base = "https://api.bitbucket.org/2.0"
	}
	c.header, c.prefix = "Authorization", "Bearer "
	if user != "" && user != "x-token-auth" && c.token != "" {
		c.prefix, c.token = "Basic ", base64.StdEncoding.EncodeToString([]byte(user+":"+c.token))
	}
	return &bitbucket{c: c, repo: path}, nil
}

type bitbucketPR struct {
	ID    int64  `json:"id"`
	State string `json:"state"` // OPEN, MERGED, DECLINED, SUPERSEDED
	Links struct {
		HTML struct {
			Href string `json:"href"`
		} `json:"html"`
	} `json:"links"`
	Source      bitbucketEnd `json:"source"`
	Destination bitbucketEnd `json:"destination"`
	MergeCommit *struct {
		Hash string `json:"hash"`
	} `json:"merge_commit"`
}

type bitbucketEnd struct {
	Branch struct {
		Name string `json:"name"`
	} `json:"branch"`
}

func (p bitbucketPR) pr() *pullRequest {
	out := &pullRequest{Number: p.ID, URL: p.Links.HTML.Href, Open: p.State == "OPEN", Merged: p.State == "MERGED"}
	if p.MergeCommit != nil && out.Merged {
		out.Commit = p.MergeCommit.Hash
	}
	return out
}

func (b *bitbucket) pulls() string { return "/repositories/" + b.repo + "/pullrequests" }

// open lists the open pull requests (every page: the API pages its lists
// in the body, {"values": [...], "next": URL}) and opens one if none goes
// from source into target. Bitbucket has no labels: labels are refused.
func (b *bitbucket) open(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	if len(labels) > 0 {
		return nil, Terminal(fmt.Errorf("labels: Bitbucket pull requests have no labels"))
	}
	q := url.Values{"state": {"OPEN"}, "pagelen": {"50"},
		"q": {fmt.Sprintf("source.branch.name=%q AND destination.branch.name=%q", source, target)}}
	var found *pullRequest
	err := bodyPages(ctx, b.c, b.pulls()+"?"+q.Encode(), func(page []bitbucketPR) bool {
		for _, e := range page {
			if e.State == "OPEN" && e.Source.Branch.Name == source && e.Destination.Branch.Name == target {
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
	in := map[string]any{"title": title, "description": body,
		"source":      map[string]any{"branch": map[string]any{"name": source}},
		"destination": map[string]any{"branch": map[string]any{"name": target}}}
	var created bitbucketPR
	if _, err := b.c.do(ctx, http.MethodPost, b.pulls(), in, &created); err != nil {
		return nil, err
	}
	return created.pr(), nil
}

func (b *bitbucket) get(ctx context.Context, n int64) (*pullRequest, error) {
	var pr bitbucketPR
	if _, err := b.c.do(ctx, http.MethodGet, fmt.Sprintf("%s/%d", b.pulls(), n), nil, &pr); err != nil {
		return nil, err
	}
	return pr.pr(), nil
}

// merge posts to .../pullrequests/{id}/merge; method is a merge_strategy:
// merge_commit, squash, fast_forward, squash_fast_forward,
// rebase_fast_forward or rebase_merge.
func (b *bitbucket) merge(ctx context.Context, n int64, method string) (*pullRequest, error) {
	in := map[string]any{"type": "pullrequest_merge_parameters"}
	if method != "" {
		in["merge_strategy"] = method
	}
	if _, err := b.c.do(ctx, http.MethodPost, fmt.Sprintf("%s/%d/merge", b.pulls(), n), in, nil); err != nil {
		return nil, err
	}
	return b.get(ctx, n)
}

// headMessage reads GET /repositories/{workspace}/{repo}/refs/branches/{name}.
func (b *bitbucket) headMessage(ctx context.Context, branch string) (string, error) {
	var ref struct {
		Target struct {
			Message string `json:"message"`
		} `json:"target"`
	}
	if _, err := b.c.do(ctx, http.MethodGet, "/repositories/"+b.repo+"/refs/branches/"+branchPath(branch), nil, &ref); err != nil {
		return "", err
	}
	return ref.Target.Message, nil
}

// bodyPages reads a list paged in its body as Bitbucket's are
// ({"values": [...], "next": URL}), at most maxPages, calling visit with
// each page until it returns true. A next page on another host than the
// API's is not followed.
func bodyPages[T any](ctx context.Context, c *apiClient, path string, visit func([]T) bool) error {
	u := c.base + path
	for range maxPages {
		var page struct {
			Values []T    `json:"values"`
			Next   string `json:"next"`
		}
		if _, _, err := c.send(ctx, http.MethodGet, u, nil, &page); err != nil {
			return err
		}
		if visit(page.Values) || page.Next == "" {
			return nil
		}
		if !strings.HasPrefix(page.Next, c.base+"/") {
			return fmt.Errorf("GET %s: the next page %s is not on the API's host", path, page.Next)
		}
		u = page.Next
	}
	return fmt.Errorf("GET %s: more than %d pages", path, maxPages)
}
