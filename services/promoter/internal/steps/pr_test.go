package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
)

// fakeHost speaks the subset of the GitHub (/api/v3), GitLab (/api/v4)
// and Gitea (/api/v1) REST APIs the pull request steps use: list, create,
// get and merge pull (merge) requests, and GitHub's labels. It is not a
// full implementation of any of them.
type fakeHost struct {
	mu      sync.Mutex
	prs     []*fakePR
	tokens  []string
	labeled map[int]bool
	// merges holds the body of each merge request.
	merges []map[string]any
	// opened holds the body of each request that opened one.
	opened []map[string]any
	// blockMerges answers merges 405, as a host does while checks run.
	blockMerges bool
}

type fakePR struct {
	number         int
	source, target string
	state          string // open, closed, merged
}

var (
	ghPulls = regexp.MustCompile(`^/api/v3/repos/acme/app/pulls(?:/(\d+)(/merge)?)?$`)
	ghLabel = regexp.MustCompile(`^/api/v3/repos/acme/app/issues/(\d+)/labels$`)
	glMRs   = regexp.MustCompile(`^/api/v4/projects/acme%2Fapp/merge_requests(?:/(\d+)(/merge)?)?$`)
	gtPulls = regexp.MustCompile(`^/api/v1/repos/acme/app/pulls(?:/(\d+)(/merge)?)?$`)
)

func (f *fakeHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = append(f.tokens, r.Header.Get("Authorization")+r.Header.Get("PRIVATE-TOKEN"))
	path := r.URL.EscapedPath()
	var in map[string]any
	_ = json.NewDecoder(r.Body).Decode(&in)
	reply := func(v any) { _ = json.NewEncoder(w).Encode(v) }
	gh := func(p *fakePR) map[string]any {
		sha := ""
		if p.state == "merged" {
			sha = fmt.Sprintf("merged-sha-%d", p.number)
		}
		state := p.state
		if state == "merged" {
			state = "closed"
		}
		return map[string]any{"number": p.number, "html_url": fmt.Sprintf("http://host/pr/%d", p.number), "state": state,
			"merged": p.state == "merged", "merge_commit_sha": sha, "head": map[string]any{"ref": p.source}, "base": map[string]any{"ref": p.target}}
	}
	gl := func(p *fakePR) map[string]any {
		state := map[string]string{"open": "opened", "closed": "closed", "merged": "merged"}[p.state]
		sha := ""
		if p.state == "merged" {
			sha = fmt.Sprintf("merged-sha-%d", p.number)
		}
		return map[string]any{"iid": p.number, "web_url": fmt.Sprintf("http://host/mr/%d", p.number), "state": state, "merge_commit_sha": sha,
			"source_branch": p.source, "target_branch": p.target}
	}
	find := func(n string) *fakePR {
		i, _ := strconv.Atoi(n)
		if i < 1 || i > len(f.prs) {
			return nil
		}
		return f.prs[i-1]
	}
	create := func(source, target string) *fakePR {
		p := &fakePR{number: len(f.prs) + 1, source: source, target: target, state: "open"}
		f.prs = append(f.prs, p)
		w.WriteHeader(http.StatusCreated)
		return p
	}
	var m []string
	var render func(*fakePR) map[string]any
	switch {
	case ghLabel.MatchString(path):
		f.labeled[len(f.prs)] = true
		reply([]any{})
		return
	case ghPulls.MatchString(path):
		m, render = ghPulls.FindStringSubmatch(path), gh
	case gtPulls.MatchString(path):
		m, render = gtPulls.FindStringSubmatch(path), gh
	case glMRs.MatchString(path):
		m, render = glMRs.FindStringSubmatch(path), gl
	default:
		http.NotFound(w, r)
		return
	}
	switch {
	case m[1] == "" && r.Method == http.MethodGet:
		var out []any
		for _, p := range f.prs {
			if p.state == "open" {
				out = append(out, render(p))
			}
		}
		reply(out)
	case m[1] == "" && r.Method == http.MethodPost:
		f.opened = append(f.opened, in)
		if strings.Contains(path, "/api/v4/") {
			reply(render(create(in["source_branch"].(string), in["target_branch"].(string))))
		} else {
			reply(render(create(in["head"].(string), in["base"].(string))))
		}
	case m[2] == "" && r.Method == http.MethodGet:
		p := find(m[1])
		if p == nil {
			http.NotFound(w, r)
			return
		}
		reply(render(p))
	case m[2] == "/merge" && f.blockMerges:
		http.Error(w, "not mergeable yet", http.StatusMethodNotAllowed)
	case m[2] == "/merge":
		f.merges = append(f.merges, in)
		p := find(m[1])
		if p == nil {
			http.NotFound(w, r)
			return
		}
		p.state = "merged"
		reply(render(p))
	default:
		http.Error(w, "unsupported", http.StatusMethodNotAllowed)
	}
}

func TestPullRequestSteps(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{"github", "gitlab", "gitea"} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			host := &fakeHost{labeled: map[int]bool{}}
			srv := httptest.NewServer(host)
			t.Cleanup(srv.Close)
			repoURL := srv.URL + "/acme/app.git"
			sc := newContext(t, nil)
			sc.Egress = allowLoopback(t, egress.Config{})
			sc.Credentials = func(context.Context, string, string) (*gitmirror.Auth, error) {
				return &gitmirror.Auth{Username: "x", Password: "tok-123"}, nil
			}
			run := func(uses string, cfg map[string]any) Result {
				t.Helper()
				cfg["repoURL"], cfg["provider"] = repoURL, provider
				sc.Config = cfg
				res, err := run(t, uses, sc)
				if err != nil {
					t.Fatalf("%v", err)
				}
				return res
			}
			open := map[string]any{"sourceBranch": "kargo/promotion/p1", "targetBranch": "main", "title": "promote", "labels": []any{"kargo"}}
			res := run("git-open-pr", open)
			pr := res.Output["pr"].(map[string]any)
			if pr["id"] != 1.0 || !strings.Contains(pr["url"].(string), "/1") || pr["open"] != true || pr["merged"] != false {
				t.Fatalf("open: %v", res.Output)
			}
			if again := run("git-open-pr", open); again.Output["pr"].(map[string]any)["id"] != 1.0 || len(host.prs) != 1 {
				t.Fatalf("a second open made another pull request: %v", again.Output)
			}
			if res := run("git-wait-for-pr", map[string]any{"prNumber": 1.0}); res.Status != StatusRunning {
				t.Fatalf("wait on an open PR: %+v", res)
			}
			res = run("git-merge-pr", map[string]any{"prNumber": "1", "mergeMethod": "squash"})
			if res.Output["commit"] != "merged-sha-1" || res.Output["pr"].(map[string]any)["merged"] != true {
				t.Fatalf("merge: %+v", res)
			}
			wantMerge := map[string]map[string]any{"github": {"merge_method": "squash"}, "gitlab": {"squash": true}, "gitea": {"Do": "squash"}}[provider]
			if fmt.Sprint(host.merges[0]) != fmt.Sprint(wantMerge) {
				t.Errorf("merge request body %v, want %v", host.merges[0], wantMerge)
			}
			res = run("git-wait-for-pr", map[string]any{"prNumber": 1.0})
			if pr := res.Output["pr"].(map[string]any); res.Status != "" || res.Output["commit"] != "merged-sha-1" || pr["merged"] != true || pr["open"] != false {
				t.Fatalf("wait on a merged PR: %+v", res)
			}
			host.prs = append(host.prs, &fakePR{number: 2, source: "x", target: "main", state: "closed"})
			if res := run("git-wait-for-pr", map[string]any{"prNumber": 2.0}); res.Status != model.PromotionStepStatusFailed {
				t.Fatalf("wait on a closed PR: %+v", res)
			}
			want := map[string]string{"github": "Bearer tok-123", "gitlab": "tok-123", "gitea": "token tok-123"}[provider]
			for _, tok := range host.tokens {
				if tok != want {
					t.Fatalf("credential header %q, want %q", tok, want)
				}
			}
			if provider == "github" && !host.labeled[1] {
				t.Fatal("labels were not set")
			}
		})
	}
}

// description is the pull request's body; createTargetBranch is taken and
// does nothing, as in Kargo; pollInterval spaces the checks of a waiting
// step; git-merge-pr with wait waits while the host cannot merge yet, and
// fails without it.
func TestPullRequestOptions(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{"github", "gitlab", "gitea"} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			host := &fakeHost{labeled: map[int]bool{}}
			srv := httptest.NewServer(host)
			t.Cleanup(srv.Close)
			sc := newContext(t, nil)
			sc.Egress = allowLoopback(t, egress.Config{})
			sc.Credentials = func(context.Context, string, string) (*gitmirror.Auth, error) { return nil, nil }
			cfg := func(m map[string]any) *Context {
				m["repoURL"], m["provider"] = srv.URL+"/acme/app.git", provider
				sc.Config = m
				return sc
			}
			if _, err := run(t, "git-open-pr", cfg(map[string]any{"sourceBranch": "kargo/promotion/p1", "targetBranch": "main", "title": "promote",
				"description": "Promotes freight abc.", "createTargetBranch": true})); err != nil {
				t.Fatal(err)
			}
			key := map[string]string{"github": "body", "gitlab": "description", "gitea": "body"}[provider]
			if got := host.opened[0][key]; got != "Promotes freight abc." {
				t.Fatalf("opened with %s %v (request %v)", key, got, host.opened[0])
			}
			res, err := run(t, "git-wait-for-pr", cfg(map[string]any{"prNumber": 1.0, "pollInterval": "42s"}))
			if err != nil || res.Status != StatusRunning || res.PollAfter != 42*time.Second {
				t.Fatalf("wait on an open PR: %+v %v", res, err)
			}
			host.mu.Lock()
			host.blockMerges = true
			host.mu.Unlock()
			if _, err := run(t, "git-merge-pr", cfg(map[string]any{"prNumber": 1.0})); err == nil {
				t.Fatal("a merge the host refuses succeeded without wait")
			}
			res, err = run(t, "git-merge-pr", cfg(map[string]any{"prNumber": 1.0, "wait": true, "pollInterval": "7s"}))
			if err != nil || res.Status != StatusRunning || res.PollAfter != 7*time.Second {
				t.Fatalf("merge with wait while the host refuses: %+v %v", res, err)
			}
			host.mu.Lock()
			host.blockMerges = false
			host.mu.Unlock()
			res, err = run(t, "git-merge-pr", cfg(map[string]any{"prNumber": 1.0, "wait": true, "pollInterval": "7s"}))
			if err != nil || res.Output["commit"] != "merged-sha-1" {
				t.Fatalf("merge once the host can: %+v %v", res, err)
			}
		})
	}
}

// git-open-pr reads every page of a host's open pull requests, following
// the Link headers as Gitea's API documents them (GET
// /repos/{owner}/{repo}/pulls with page and limit, Link rel="next"), and
// retries a GET answered 503 or rate limited (429, GitHub's 403 with
// X-RateLimit-Remaining: 0) after the Retry-After the host asks for. A next
// link to another host is not followed.
func TestPullRequestPagesAndRetries(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var gets, creates int
	var elsewhere string
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/api/v1/repos/acme/app/pulls" {
			http.NotFound(w, r)
			return
		}
		if r.Method == http.MethodPost {
			creates++
			_ = json.NewEncoder(w).Encode(map[string]any{"number": 99, "state": "open", "head": map[string]any{"ref": "x"}, "base": map[string]any{"ref": "main"}})
			return
		}
		gets++
		switch gets {
		case 1:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		case 3:
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusForbidden)
			return
		}
		page, _ := strconv.Atoi(r.URL.Query().Get("page"))
		if page == 0 {
			page = 1
		}
		if page < 3 {
			next := fmt.Sprintf("%s%s?state=open&limit=2&page=%d", srv.URL, r.URL.Path, page+1)
			if r.URL.Query().Get("source") == "elsewhere" {
				next = "http://other.invalid/api/v1/repos/acme/app/pulls?page=2"
				elsewhere = next
			}
			w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next", <%s?page=3>; rel="last"`, next, srv.URL+r.URL.Path))
		}
		var prs []any
		for i := range 2 {
			n := (page-1)*2 + i + 1
			source := fmt.Sprintf("feature-%d", n)
			if n == 6 {
				source = "kargo/promotion/p1"
			}
			prs = append(prs, map[string]any{"number": n, "state": "open", "html_url": fmt.Sprintf("http://host/pr/%d", n),
				"head": map[string]any{"ref": source}, "base": map[string]any{"ref": "main"}})
		}
		_ = json.NewEncoder(w).Encode(prs)
	}))
	t.Cleanup(srv.Close)
	sc := newContext(t, map[string]any{"repoURL": srv.URL + "/acme/app.git", "provider": "gitea", "sourceBranch": "kargo/promotion/p1", "targetBranch": "main"})
	sc.Egress = allowLoopback(t, egress.Config{})
	res, err := run(t, "git-open-pr", sc)
	if err != nil {
		t.Fatal(err)
	}
	if pr := res.Output["pr"].(map[string]any); pr["id"] != 6.0 || creates != 0 || gets != 5 {
		t.Fatalf("pr %v, %d creates, %d gets (want the existing 6 of page 3, found after a 503 and a rate limit)", pr, creates, gets)
	}
	if next := nextLink([]string{`<https://x/a?page=2>; rel="next", <https://x/a?page=9>; rel="last"`}); next != "https://x/a?page=2" {
		t.Fatalf("nextLink %q", next)
	}
	c := &apiClient{http: sc.client(), base: srv.URL + "/api/v1"}
	err = list(context.Background(), c, "/repos/acme/app/pulls?source=elsewhere", func([]githubPR) bool { return false })
	if err == nil || !strings.Contains(err.Error(), "not on the API's host") || elsewhere == "" {
		t.Fatalf("a next page elsewhere: %v", err)
	}
}
