package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
)

// pagedHost serves the list, create and branch routes of GitHub, GitLab or
// Gitea with the open pull requests on two pages, the one from
// caravan/promotion/p1 on the second, and answers the requests it is told
// to fail first. What it follows:
//   - GitHub: GET /repos/{owner}/{repo}/pulls with page and per_page, the
//     next page in Link rel="next"
//     (https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api);
//     rate limits as 403 or 429 with Retry-After, or with
//     x-ratelimit-remaining: 0 and x-ratelimit-reset
//     (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit).
//   - GitLab: GET /projects/:id/merge_requests with page and per_page, the
//     next page in X-Next-Page and Link
//     (https://docs.gitlab.com/api/rest/#pagination); rate limits as 429
//     with Retry-After and RateLimit-Reset
//     (https://docs.gitlab.com/administration/settings/user_and_ip_rate_limits/#response-headers).
//   - Gitea: GET /repos/{owner}/{repo}/pulls with page and limit, the next
//     page in Link rel="next" (https://gitea.com/api/swagger).
type pagedHost struct {
	provider string
	mu       sync.Mutex
	// fail answers the first requests: each a status, headers and body,
	// or (status 0) as usual.
	fail  []failure
	gets  int
	posts int
	// empty lists no pull request and creates one (number 9).
	empty bool
	// header is the credential header of the last request.
	header string
}

type failure struct {
	status int
	header map[string]string
	body   string
}

func (h *pagedHost) listPath() string {
	return map[string]string{"github": "/api/v3/repos/acme/app/pulls", "gitlab": "/api/v4/projects/acme%2Fapp/merge_requests",
		"gitea": "/api/v1/repos/acme/app/pulls"}[h.provider]
}

func (h *pagedHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.header = r.Header.Get("Authorization") + r.Header.Get("PRIVATE-TOKEN")
	if r.Method == http.MethodGet {
		h.gets++
	} else {
		h.posts++
	}
	if len(h.fail) > 0 && h.fail[0].status == 0 {
		h.fail = h.fail[1:] // served as usual
	} else if len(h.fail) > 0 {
		f := h.fail[0]
		h.fail = h.fail[1:]
		for k, v := range f.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(f.status)
		_, _ = fmt.Fprint(w, f.body)
		return
	}
	if r.URL.EscapedPath() != h.listPath() {
		http.NotFound(w, r)
		return
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	if page == 0 {
		page = 1
	}
	w.Header().Set("Content-Type", "application/json")
	source, number := "feature-x", 3
	switch {
	case r.Method == http.MethodPost && !h.empty:
		http.Error(w, `{"message": "not expected here"}`, http.StatusUnprocessableEntity)
		return
	case r.Method == http.MethodPost:
		source, number = "caravan/promotion/p1", 9
		w.WriteHeader(http.StatusCreated)
	case h.empty:
		_, _ = fmt.Fprint(w, "[]")
		return
	case page == 2:
		source, number = "caravan/promotion/p1", 7
	default:
		next := fmt.Sprintf("http://%s%s?page=2", r.Host, r.URL.EscapedPath())
		w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next", <%s>; rel="last"`, next, next))
		w.Header().Set("X-Next-Page", "2")
	}
	item := map[string]any{"number": number, "state": "open", "html_url": fmt.Sprintf("http://host/pr/%d", number),
		"head": map[string]any{"ref": source}, "base": map[string]any{"ref": "main"}}
	if h.provider == "gitlab" {
		item = map[string]any{"iid": number, "state": "opened", "web_url": fmt.Sprintf("http://host/mr/%d", number),
			"source_branch": source, "target_branch": "main"}
	}
	if r.Method == http.MethodPost {
		_ = json.NewEncoder(w).Encode(item)
		return
	}
	_ = json.NewEncoder(w).Encode([]any{item})
}

// sdkProviders are the hosts spoken through their SDKs.
var sdkProviders = []string{"github", "gitlab", "gitea"}

func pagedContext(t *testing.T, srv *httptest.Server, provider, token string) *Context {
	t.Helper()
	sc := newContext(t, map[string]any{"repoURL": srv.URL + "/acme/app.git", "provider": provider,
		"sourceBranch": "caravan/promotion/p1", "targetBranch": "main", "title": "t", "description": "d"})
	sc.Egress = allowLoopback(t, egress.Config{})
	sc.Credentials = func(context.Context, string, string) (*gitmirror.Auth, error) {
		return &gitmirror.Auth{Username: "x", Password: token}, nil
	}
	return sc
}

// git-open-pr finds the open pull request on the second page instead of
// opening another, after a 502, a 429 and GitHub's 403 rate limits on the
// way, each retried after the Retry-After (or reset time) the host gives.
func TestPullRequestSDKPagesAndRetries(t *testing.T) {
	t.Parallel()
	for _, provider := range sdkProviders {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			// Each call is sent at most apiAttempts (3) times: at most two
			// failures before each page.
			ok := failure{}
			fails := map[string][]failure{
				"github": {{status: http.StatusBadGateway}, {status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "0"}}, ok,
					{status: http.StatusForbidden, header: map[string]string{"Retry-After": "0"}, body: `{"message": "You have exceeded a secondary rate limit."}`},
					{status: http.StatusForbidden, header: map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}, body: `{"message": "API rate limit exceeded"}`}},
				"gitlab": {{status: http.StatusBadGateway}, {status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "0"}}, ok,
					{status: http.StatusTooManyRequests, header: map[string]string{"RateLimit-Reset": "1"}}},
				"gitea": {{status: http.StatusBadGateway}, ok, {status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "0"}}},
			}[provider]
			retries := 0
			for _, f := range fails {
				if f.status != 0 {
					retries++
				}
			}
			host := &pagedHost{provider: provider, fail: fails}
			srv := httptest.NewServer(host)
			t.Cleanup(srv.Close)
			res, err := run(t, "git-open-pr", pagedContext(t, srv, provider, "tok-1"))
			if err != nil {
				t.Fatal(err)
			}
			if pr := res.Output["pr"].(map[string]any); pr["id"] != 7.0 || host.posts != 0 || host.gets != retries+2 {
				t.Fatalf("pr %v, %d posts, %d gets (want the existing 7 of page 2 after %d retries)", pr, host.posts, host.gets, retries)
			}
		})
	}
}

// A POST answered with a rate limit is sent again: the host refused it
// without acting on it.
func TestPullRequestSDKRateLimitedPost(t *testing.T) {
	t.Parallel()
	for _, provider := range sdkProviders {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			host := &pagedHost{provider: provider, empty: true, fail: []failure{{}, {status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "0"}}}}
			srv := httptest.NewServer(host)
			t.Cleanup(srv.Close)
			res, err := run(t, "git-open-pr", pagedContext(t, srv, provider, "tok"))
			if err != nil {
				t.Fatal(err)
			}
			if pr := res.Output["pr"].(map[string]any); pr["id"] != 9.0 || host.posts != 2 {
				t.Fatalf("pr %v after %d posts; want 9, opened by the second POST", pr, host.posts)
			}
		})
	}
}

// GitHub Enterprise Server is at HOST/api/v3 (uploads at HOST/api/uploads),
// github.com at api.github.com
// (https://docs.github.com/en/enterprise-server@latest/rest/quickstart#using-curl-commands-in-github-actions);
// the end-to-end tests above speak to an Enterprise-style host on
// loopback. A repoURL that is not OWNER/REPO is refused, naming the field.
func TestPullRequestGitHubEnterprise(t *testing.T) {
	t.Parallel()
	sc := newContext(t, nil)
	for _, tc := range []struct{ repoURL, base, upload string }{
		{"https://github.com/acme/app", "https://api.github.com/", "https://uploads.github.com/"},
		{"https://github.acme.example/acme/app.git", "https://github.acme.example/api/v3/", "https://github.acme.example/api/uploads/"},
		{"http://ghe.internal:8080/acme/app", "http://ghe.internal:8080/api/v3/", "http://ghe.internal:8080/api/uploads/"},
	} {
		p, err := sc.prProvider(context.Background(), tc.repoURL, "github")
		if err != nil {
			t.Fatal(err)
		}
		g := p.(*githubHost)
		if g.c.BaseURL.String() != tc.base || g.c.UploadURL.String() != tc.upload || g.owner != "acme" || g.name != "app" {
			t.Errorf("%s: base %s, upload %s, repo %s/%s; want %s, %s", tc.repoURL, g.c.BaseURL, g.c.UploadURL, g.owner, g.name, tc.base, tc.upload)
		}
	}
	for _, provider := range []string{"github", "gitea"} {
		if _, err := sc.prProvider(context.Background(), "https://git.example.com/acme/sub/app", provider); err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), "repoURL") {
			t.Errorf("%s: a repoURL with three segments: %v", provider, err)
		}
	}
}
