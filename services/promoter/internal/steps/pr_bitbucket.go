package steps

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	bbsdk "github.com/ktrysmt/go-bitbucket"
)

// bitbucket speaks Bitbucket Cloud's REST API 2.0
// (https://developer.atlassian.com/cloud/bitbucket/rest/api-group-pullrequests/)
// through github.com/ktrysmt/go-bitbucket, the SDK Kargo's Bitbucket
// provider used: https://api.bitbucket.org/2.0 for bitbucket.org, /2.0 on
// any other host (Bitbucket Data Center's /rest/api/1.0 is another API,
// not spoken here). A credential's password is sent as a Bearer access
// token, or with its username as Basic auth (an app password or API token)
// when the username is neither empty nor Bitbucket's x-token-auth.
//
// What the SDK does not do, bitbucketTransport does under it: the SDK
// builds its requests without the caller's context (a canceled step would
// not stop them), follows a list's "next" link to any host with the
// credential, and leaves the bodies of later pages and of branch reads
// unclosed. bitbucketTransport binds each request to the step's context,
// refuses a URL outside the API's base and reads every answer into memory
// (within the egress policy's size limit), closing the connection's body.
// Retries on 429 and 5xx are retryTransport's, below it.
//
// The SDK reads every page of a list before returning (up to maxPages):
// the search is narrowed to the two branches (BBQL q), so the list holds
// one pull request or none. Its merge sends, besides merge_strategy, an
// empty message and close_source_branch false, as it did for Kargo.
type bitbucket struct {
	http        *http.Client
	base        string
	user, token string // user is set for Basic auth, else token is a Bearer token
	owner, slug string
}

func newBitbucket(hc *http.Client, scheme, host, path, user, token string) (*bitbucket, error) {
	owner, slug, ok := strings.Cut(path, "/")
	if !ok || owner == "" || slug == "" || strings.Contains(slug, "/") {
		return nil, Terminal(fmt.Errorf("repoURL: a Bitbucket repository is https://bitbucket.org/WORKSPACE/REPO, got path %q", path))
	}
	b := &bitbucket{http: hc, base: scheme + "://" + host + "/2.0", token: token, owner: owner, slug: slug}
	if host == "bitbucket.org" || host == "www.bitbucket.org" {
		b.base = "https://api.bitbucket.org/2.0"
	}
	if user != "" && user != "x-token-auth" && token != "" {
		b.user = user
	}
	return b, nil
}

// secrets are the credential and the Authorization header's value.
func (b *bitbucket) secrets() []string {
	if b.token == "" {
		return nil
	}
	if b.user != "" {
		return []string{b.token, base64.StdEncoding.EncodeToString([]byte(b.user + ":" + b.token))}
	}
	return []string{b.token}
}

// client is an SDK client whose requests are bound to ctx.
func (b *bitbucket) client(ctx context.Context) (*bbsdk.Client, error) {
	var c *bbsdk.Client
	var err error
	if b.user != "" {
		c, err = bbsdk.NewBasicAuthWithBaseUrlStr(b.user, b.token, b.base)
	} else {
		c, err = bbsdk.NewOAuthbearerTokenWithBaseUrlStr(b.token, b.base)
	}
	if err != nil {
		return nil, Terminal(fmt.Errorf("bitbucket API %s: %w", b.base, err))
	}
	c.HttpClient = &http.Client{Transport: &bitbucketTransport{ctx: ctx, timeout: b.http.Timeout, base: b.base, next: b.http.Transport}}
	c.Pagelen = 50
	c.LimitPages = maxPages
	return c, nil
}

// bitbucketTransport binds a request to ctx (and timeout, the egress
// policy's, when set), refuses a URL outside base and hands back the
// answer's body read into memory (see bitbucket).
type bitbucketTransport struct {
	ctx     context.Context
	timeout time.Duration
	base    string
	next    http.RoundTripper
}

func (t *bitbucketTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if u := req.URL.String(); !strings.HasPrefix(u, t.base+"/") {
		return nil, Terminal(fmt.Errorf("%s %s: not on the API's host %s: the credential is not sent there", req.Method, req.URL.Redacted(), t.base))
	}
	ctx, cancel := t.ctx, context.CancelFunc(func() {})
	if t.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, t.timeout)
	}
	defer cancel()
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

// error names the call and the status of an answer the SDK refused, judged
// by statusError, with the API's error message, without the credential
// should the server echo it; a request refused by the egress policy is
// terminal.
func (b *bitbucket) error(call string, err error) error {
	var st *bbsdk.UnexpectedResponseStatusError
	if !errors.As(err, &st) {
		return egressError(fmt.Errorf("%s: %w", call, err))
	}
	var body struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := ""
	if json.Unmarshal(st.Body, &body) == nil && body.Error.Message != "" {
		msg = ": " + scrub(body.Error.Message, b.secrets())
	}
	return statusError(fmt.Errorf("%s: HTTP %d%s", call, st.StatusCode, msg), st.StatusCode, nil)
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

// decodeAs turns the SDK's decoded JSON (maps) into out.
func decodeAs(call string, v any, out any) error {
	b, err := json.Marshal(v)
	if err == nil {
		err = json.Unmarshal(b, out)
	}
	if err != nil {
		return fmt.Errorf("%s: decode: %w", call, err)
	}
	return nil
}

// open lists the open pull requests from source into target (every page:
// the API pages its lists in the body, {"values": [...], "next": URL}) and
// opens one if there is none. Bitbucket has no labels: labels are refused.
func (b *bitbucket) open(ctx context.Context, source, target string, text prText, labels []string) (*pullRequest, error) {
	if len(labels) > 0 {
		return nil, Terminal(fmt.Errorf("labels: Bitbucket pull requests have no labels"))
	}
	c, err := b.client(ctx)
	if err != nil {
		return nil, err
	}
	res, err := c.Repositories.PullRequests.List(&bbsdk.PullRequestsOptions{Owner: b.owner, RepoSlug: b.slug, States: []string{"OPEN"},
		Query: fmt.Sprintf("source.branch.name=%q AND destination.branch.name=%q", source, target)})
	if err != nil {
		return nil, b.error("list pull requests", err)
	}
	var page struct {
		Values []bitbucketPR `json:"values"`
	}
	if err := decodeAs("list pull requests", res, &page); err != nil {
		return nil, err
	}
	for _, e := range page.Values {
		if e.State == "OPEN" && e.Source.Branch.Name == source && e.Destination.Branch.Name == target {
			return e.pr(), nil
		}
	}
	title, body, err := text(ctx)
	if err != nil {
		return nil, err
	}
	opts := &bbsdk.PullRequestsOptions{Owner: b.owner, RepoSlug: b.slug, Title: title, Description: body, SourceBranch: source, DestinationBranch: target}
	res, err = c.Repositories.PullRequests.Create(opts.WithContext(ctx))
	if err != nil {
		return nil, b.error("create pull request", err)
	}
	var created bitbucketPR
	if err := decodeAs("create pull request", res, &created); err != nil {
		return nil, err
	}
	return created.pr(), nil
}

// get reads the pull request; a merged one's merge_commit.hash is
// abbreviated, so its full hash is read from GET .../commit/{hash}.
func (b *bitbucket) get(ctx context.Context, n int64) (*pullRequest, error) {
	c, err := b.client(ctx)
	if err != nil {
		return nil, err
	}
	call := fmt.Sprintf("get pull request %d", n)
	res, err := c.Repositories.PullRequests.Get(&bbsdk.PullRequestsOptions{Owner: b.owner, RepoSlug: b.slug, ID: strconv.FormatInt(n, 10)})
	if err != nil {
		return nil, b.error(call, err)
	}
	var p bitbucketPR
	if err := decodeAs(call, res, &p); err != nil {
		return nil, err
	}
	pr := p.pr()
	if pr.Commit != "" {
		call := "get commit " + pr.Commit
		res, err := c.Repositories.Commits.GetCommit(&bbsdk.CommitsOptions{Owner: b.owner, RepoSlug: b.slug, Revision: pr.Commit})
		if err != nil {
			return nil, b.error(call, err)
		}
		var commit struct {
			Hash string `json:"hash"`
		}
		if err := decodeAs(call, res, &commit); err != nil {
			return nil, err
		}
		if commit.Hash != "" {
			pr.Commit = commit.Hash
		}
	}
	return pr, nil
}

// merge posts to .../pullrequests/{id}/merge; method is a merge_strategy:
// merge_commit, squash, fast_forward, squash_fast_forward,
// rebase_fast_forward or rebase_merge.
func (b *bitbucket) merge(ctx context.Context, n int64, method string) (*pullRequest, error) {
	c, err := b.client(ctx)
	if err != nil {
		return nil, err
	}
	opts := &bbsdk.PullRequestsOptions{Owner: b.owner, RepoSlug: b.slug, ID: strconv.FormatInt(n, 10), MergeStrategy: bbsdk.PullRequestsMergeStrategy(method)}
	if _, err := c.Repositories.PullRequests.Merge(opts.WithContext(ctx)); err != nil {
		return nil, b.error(fmt.Sprintf("merge pull request %d", n), err)
	}
	return b.get(ctx, n)
}

// headMessage reads GET /repositories/{workspace}/{repo}/refs/branches/{name}.
func (b *bitbucket) headMessage(ctx context.Context, branch string) (string, error) {
	c, err := b.client(ctx)
	if err != nil {
		return "", err
	}
	ref, err := c.Repositories.Repository.GetBranch(&bbsdk.RepositoryBranchOptions{Owner: b.owner, RepoSlug: b.slug, BranchName: branchPath(branch)})
	if err != nil {
		return "", b.error("get branch "+branch, err)
	}
	msg, _ := ref.Target["message"].(string)
	return msg, nil
}
