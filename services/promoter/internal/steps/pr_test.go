package steps

import (
	"context"
	"encoding/base64"
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

// fakeHost speaks the subset of the GitHub (/api/v3), GitLab (/api/v4),
// Gitea (/api/v1), Bitbucket Cloud (/2.0) and Azure DevOps (7.1) REST APIs
// the pull request steps use: list, create, get and merge pull (merge)
// requests, read a branch's head commit, and GitHub's labels. It is not a
// full implementation of any of them. The references followed:
// https://docs.github.com/en/rest/pulls/pulls,
// https://docs.gitlab.com/api/merge_requests/,
// https://gitea.com/api/swagger,
// https://developer.atlassian.com/cloud/bitbucket/rest/api-group-pullrequests/
// and .../api-group-commits/ (GET .../commit/{commit}, which expands the
// abbreviated merge_commit.hash),
// https://learn.microsoft.com/en-us/rest/api/azure/devops/git/pull-requests?view=azure-devops-rest-7.1,
// with the api-version in the query or the Accept header
// (https://learn.microsoft.com/en-us/rest/api/azure/devops/?view=azure-devops-rest-7.1#api-and-tfs-version-mapping)
// and the resource locations the Azure DevOps SDK reads first (OPTIONS
// ORG/_apis, see azureLocations).
type fakeHost struct {
	mu      sync.Mutex
	prs     []*fakePR
	tokens  []string
	labeled map[int]bool
	// merges holds the body of each merge request.
	merges []map[string]any
	// opened holds the body of each request that opened one.
	opened []map[string]any
	// blockMerges answers merges 405, as a host does while checks run
	// (Azure DevOps: the pull request stays active).
	blockMerges bool
	// head is the message of every branch's head commit.
	head string
}

type fakePR struct {
	number         int
	source, target string
	state          string // open, closed, merged
}

var (
	ghPulls  = regexp.MustCompile(`^/api/v3/repos/acme/app/pulls(?:/(\d+)(/merge)?)?$`)
	ghLabel  = regexp.MustCompile(`^/api/v3/repos/acme/app/issues/(\d+)/labels$`)
	glMRs    = regexp.MustCompile(`^/api/v4/projects/acme%2Fapp/merge_requests(?:/(\d+)(/merge)?)?$`)
	gtPulls  = regexp.MustCompile(`^/api/v1/repos/acme/app/pulls(?:/(\d+)(/merge)?)?$`)
	bbPulls  = regexp.MustCompile(`^/2.0/repositories/acme/app/pullrequests(?:/(\d+)(/merge)?)?/?$`)
	bbCommit = regexp.MustCompile(`^/2.0/repositories/acme/app/commit/msha(\d+)$`)
	// Azure DevOps paths are case-insensitive (the SDK's route is
	// .../pullRequests).
	azPulls = regexp.MustCompile(`^(?i)/acme/proj/_apis/git/repositories/app/pullrequests(?:/(\d+))?$`)
	// Each host's branch (or ref) route, for the head commit's message.
	branchRoutes = regexp.MustCompile(`^(?:/api/v3/repos/acme/app/branches/|/api/v1/repos/acme/app/branches/|/api/v4/projects/acme%2Fapp/repository/branches/|/2.0/repositories/acme/app/refs/branches/|/acme/proj/_apis/git/repositories/app/(refs|commits/))`)
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
	bb := func(p *fakePR) map[string]any {
		out := map[string]any{"id": p.number, "state": map[string]string{"open": "OPEN", "closed": "DECLINED", "merged": "MERGED"}[p.state],
			"links":  map[string]any{"html": map[string]any{"href": fmt.Sprintf("http://host/pr/%d", p.number)}},
			"source": map[string]any{"branch": map[string]any{"name": p.source}}, "destination": map[string]any{"branch": map[string]any{"name": p.target}}}
		if p.state == "merged" { // abbreviated, as Bitbucket answers
			out["merge_commit"] = map[string]any{"hash": fmt.Sprintf("msha%d", p.number)}
		}
		return out
	}
	az := func(p *fakePR) map[string]any {
		out := map[string]any{"pullRequestId": p.number, "status": map[string]string{"open": "active", "closed": "abandoned", "merged": "completed"}[p.state],
			"sourceRefName": "refs/heads/" + p.source, "targetRefName": "refs/heads/" + p.target, "lastMergeSourceCommit": map[string]any{"commitId": "src-sha"}}
		if p.state == "merged" {
			out["lastMergeCommit"] = map[string]any{"commitId": fmt.Sprintf("merged-sha-%d", p.number)}
		}
		return out
	}
	if path == "/api/v1/repos/acme/app/labels" { // Gitea: GET /repos/{owner}/{repo}/labels
		reply([]any{map[string]any{"id": 7, "name": "caravan"}, map[string]any{"id": 8, "name": "other"}})
		return
	}
	if r.Method == http.MethodOptions && path == "/acme/_apis" {
		azureLocations(w)
		return
	}
	if c := bbCommit.FindStringSubmatch(path); c != nil {
		reply(map[string]any{"hash": "merged-sha-" + c[1]})
		return
	}
	if b := branchRoutes.FindStringSubmatch(path); b != nil {
		switch {
		case b[1] == "refs":
			name := "refs/" + r.URL.Query().Get("filter")
			reply(map[string]any{"value": []any{map[string]any{"name": name, "objectId": "head-sha"}, map[string]any{"name": name + "-other", "objectId": "x"}}})
		case b[1] != "":
			reply(map[string]any{"commitId": "head-sha", "comment": f.head})
		case strings.HasPrefix(path, "/api/v3/"):
			reply(map[string]any{"commit": map[string]any{"commit": map[string]any{"message": f.head}}})
		case strings.HasPrefix(path, "/2.0/"):
			reply(map[string]any{"target": map[string]any{"message": f.head}})
		default:
			reply(map[string]any{"commit": map[string]any{"message": f.head}})
		}
		return
	}
	var m []string
	var render func(*fakePR) map[string]any
	switch {
	case azPulls.MatchString(path):
		if !azureVersion(r) {
			http.Error(w, "api-version is required", http.StatusBadRequest)
			return
		}
		m, render = azPulls.FindStringSubmatch(path), az
		m = append(m, "")
		if r.Method == http.MethodPatch {
			m[2] = "/merge"
			if f.blockMerges {
				reply(render(find(m[1]))) // still active: completion is queued
				return
			}
		}
	case bbPulls.MatchString(path):
		m, render = bbPulls.FindStringSubmatch(path), bb
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
		switch {
		case strings.HasPrefix(path, "/2.0/"):
			reply(map[string]any{"values": out, "pagelen": 50})
		case strings.Contains(path, "/_apis/"):
			reply(map[string]any{"value": out, "count": len(out)})
		default:
			reply(out)
		}
	case m[1] == "" && r.Method == http.MethodPost:
		f.opened = append(f.opened, in)
		switch {
		case strings.Contains(path, "/api/v4/"):
			reply(render(create(in["source_branch"].(string), in["target_branch"].(string))))
		case strings.HasPrefix(path, "/2.0/"):
			name := func(k string) string { return in[k].(map[string]any)["branch"].(map[string]any)["name"].(string) }
			reply(render(create(name("source"), name("destination"))))
		case strings.Contains(path, "/_apis/"):
			reply(render(create(strings.TrimPrefix(in["sourceRefName"].(string), "refs/heads/"), strings.TrimPrefix(in["targetRefName"].(string), "refs/heads/"))))
		default:
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

// prProviders are the hosts the pull request steps speak to.
var prProviders = []string{"github", "gitlab", "gitea", "bitbucket", "azure"}

// fakeRepoURL is the repository URL of acme/app on the fake host srv.
func fakeRepoURL(srv *httptest.Server, provider string) string {
	if provider == "azure" {
		return srv.URL + "/acme/proj/_git/app"
	}
	return srv.URL + "/acme/app.git"
}

func TestPullRequestSteps(t *testing.T) {
	t.Parallel()
	for _, provider := range prProviders {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			host := &fakeHost{labeled: map[int]bool{}}
			srv := httptest.NewServer(host)
			t.Cleanup(srv.Close)
			repoURL := fakeRepoURL(srv, provider)
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
			open := map[string]any{"sourceBranch": "caravan/promotion/p1", "targetBranch": "main", "title": "promote", "description": "d", "labels": []any{"caravan"}}
			if provider == "bitbucket" {
				delete(open, "labels") // Bitbucket has none
			}
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
			wantMerge := map[string]map[string]any{"github": {"merge_method": "squash"}, "gitlab": {"squash": true}, "gitea": {"Do": "squash"},
				// go-bitbucket's merge body: merge_strategy and the fields it always sends
				"bitbucket": {"merge_strategy": "squash", "message": "", "close_source_branch": false, "title": "", "description": "", "reviewers": []any{}, "source": map[string]any{}, "destination": map[string]any{}},
				"azure":     {"status": "completed", "lastMergeSourceCommit": map[string]any{"commitId": "src-sha"}, "completionOptions": map[string]any{"mergeStrategy": "squash"}}}[provider]
			gotMerge := host.merges[0]
			if provider == "gitea" {
				// Gitea's SDK sends every field of its MergePullRequestOption,
				// the zero ones too: compare those that are set.
				gotMerge = map[string]any{}
				for k, v := range host.merges[0] {
					if v != "" && v != false {
						gotMerge[k] = v
					}
				}
			}
			if fmt.Sprint(gotMerge) != fmt.Sprint(wantMerge) {
				t.Errorf("merge request body %v, want %v", gotMerge, wantMerge)
			}
			res = run("git-wait-for-pr", map[string]any{"prNumber": 1.0})
			if pr := res.Output["pr"].(map[string]any); res.Status != "" || res.Output["commit"] != "merged-sha-1" || pr["merged"] != true || pr["open"] != false {
				t.Fatalf("wait on a merged PR: %+v", res)
			}
			host.prs = append(host.prs, &fakePR{number: 2, source: "x", target: "main", state: "closed"})
			if res := run("git-wait-for-pr", map[string]any{"prNumber": 2.0}); res.Status != model.PromotionStepStatusFailed {
				t.Fatalf("wait on a closed PR: %+v", res)
			}
			want := map[string]string{"github": "Bearer tok-123", "gitlab": "tok-123", "gitea": "token tok-123", "bitbucket": "Basic " + base64.StdEncoding.EncodeToString([]byte("x:tok-123")), // an app password
				"azure": "Basic " + base64.StdEncoding.EncodeToString([]byte(":tok-123"))}[provider]
			for _, tok := range host.tokens {
				if tok != want {
					t.Fatalf("credential header %q, want %q", tok, want)
				}
			}
			if provider == "github" && !host.labeled[1] {
				t.Fatal("labels were not set")
			}
			if provider == "gitea" && fmt.Sprint(host.opened[0]["labels"]) != "[7]" {
				t.Fatalf("gitea labels %v, want the ID of caravan", host.opened[0]["labels"])
			}
			if provider == "azure" && fmt.Sprint(host.opened[0]["labels"]) != "[map[name:caravan]]" {
				t.Fatalf("azure labels %v", host.opened[0]["labels"])
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
	for _, provider := range prProviders {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			host := &fakeHost{labeled: map[int]bool{}}
			srv := httptest.NewServer(host)
			t.Cleanup(srv.Close)
			sc := newContext(t, nil)
			sc.Egress = allowLoopback(t, egress.Config{})
			sc.Credentials = func(context.Context, string, string) (*gitmirror.Auth, error) { return nil, nil }
			cfg := func(m map[string]any) *Context {
				m["repoURL"], m["provider"] = fakeRepoURL(srv, provider), provider
				sc.Config = m
				return sc
			}
			if _, err := run(t, "git-open-pr", cfg(map[string]any{"sourceBranch": "caravan/promotion/p1", "targetBranch": "main", "title": "promote",
				"description": "Promotes freight abc.", "createTargetBranch": true})); err != nil {
				t.Fatal(err)
			}
			key := map[string]string{"github": "body", "gitlab": "description", "gitea": "body", "bitbucket": "description", "azure": "description"}[provider]
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
// X-RateLimit-Remaining: 0) after the Retry-After the host asks for. The
// SDK reads the next page's number from the Link header and asks the API's
// own host for it, so the token never follows a link elsewhere.
func TestPullRequestPagesAndRetries(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var gets, creates int
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
			w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next", <%s?page=3>; rel="last"`, next, srv.URL+r.URL.Path))
		}
		var prs []any
		for i := range 2 {
			n := (page-1)*2 + i + 1
			source := fmt.Sprintf("feature-%d", n)
			if n == 6 {
				source = "caravan/promotion/p1"
			}
			prs = append(prs, map[string]any{"number": n, "state": "open", "html_url": fmt.Sprintf("http://host/pr/%d", n),
				"head": map[string]any{"ref": source}, "base": map[string]any{"ref": "main"}})
		}
		_ = json.NewEncoder(w).Encode(prs)
	}))
	t.Cleanup(srv.Close)
	sc := newContext(t, map[string]any{"repoURL": srv.URL + "/acme/app.git", "provider": "gitea", "sourceBranch": "caravan/promotion/p1", "targetBranch": "main"})
	sc.Egress = allowLoopback(t, egress.Config{})
	res, err := run(t, "git-open-pr", sc)
	if err != nil {
		t.Fatal(err)
	}
	if pr := res.Output["pr"].(map[string]any); pr["id"] != 6.0 || creates != 0 || gets != 5 {
		t.Fatalf("pr %v, %d creates, %d gets (want the existing 6 of page 3, found after a 503 and a rate limit)", pr, creates, gets)
	}
}

// Without a title, git-open-pr takes Kargo's: the first line of the head
// commit of sourceBranch, and the rest as the body; with a title only, the
// body is the whole message. Each host's branch route is the one its API
// reference documents (see fakeHost).
func TestPullRequestDefaultText(t *testing.T) {
	t.Parallel()
	for _, provider := range prProviders {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			host := &fakeHost{labeled: map[int]bool{}, head: "Promote freight abc to prod\n\nimage: app:1.2.3\n"}
			srv := httptest.NewServer(host)
			t.Cleanup(srv.Close)
			sc := newContext(t, nil)
			sc.Egress = allowLoopback(t, egress.Config{})
			sc.Credentials = func(context.Context, string, string) (*gitmirror.Auth, error) {
				return &gitmirror.Auth{Username: "x-token-auth", Password: "tok"}, nil
			}
			key := map[string]string{"github": "body", "gitea": "body"}[provider]
			if key == "" {
				key = "description"
			}
			for i, tc := range []struct {
				title, wantTitle, wantBody string
			}{
				{"", "Promote freight abc to prod", "image: app:1.2.3"},
				{"mine", "mine", host.head},
			} {
				sc.Config = map[string]any{"repoURL": fakeRepoURL(srv, provider), "provider": provider,
					"sourceBranch": fmt.Sprintf("caravan/promotion/p%d", i), "targetBranch": "main"}
				if tc.title != "" {
					sc.Config["title"] = tc.title
				}
				if _, err := run(t, "git-open-pr", sc); err != nil {
					t.Fatal(err)
				}
				if got := host.opened[i]; got["title"] != tc.wantTitle || got[key] != tc.wantBody {
					t.Errorf("opened with %v, want title %q and %s %q", got, tc.wantTitle, key, tc.wantBody)
				}
			}
			if provider == "bitbucket" && host.tokens[0] != "Bearer tok" {
				t.Errorf("an x-token-auth credential is sent as %q, want a Bearer token", host.tokens[0])
			}
		})
	}
}

// Bitbucket pages its lists in the body ({"values", "next"}, see
// https://developer.atlassian.com/cloud/bitbucket/rest/intro/#pagination)
// and Azure DevOps with $top and $skip
// (https://learn.microsoft.com/en-us/rest/api/azure/devops/git/pull-requests/get-pull-requests?view=azure-devops-rest-7.1):
// git-open-pr reads every page, after a 503 and a 429 on the way, and finds
// the pull request on the last one instead of opening another.
func TestPullRequestPagesBitbucketAzure(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{"bitbucket", "azure"} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var gets, creates int
			var srv *httptest.Server
			srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				if r.Method == http.MethodOptions && r.URL.Path == "/acme/_apis" {
					azureLocations(w)
					return
				}
				if r.Method != http.MethodGet {
					creates++
					http.Error(w, "no", http.StatusBadRequest)
					return
				}
				gets++
				switch gets {
				case 1:
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				case 2:
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(http.StatusTooManyRequests)
					return
				}
				q := r.URL.Query()
				if provider == "bitbucket" {
					page, _ := strconv.Atoi(q.Get("page"))
					if page == 0 {
						page = 1
					}
					source := "other"
					if page == 3 {
						source = "caravan/promotion/p1"
					}
					out := map[string]any{"values": []any{map[string]any{"id": page, "state": "OPEN",
						"source": map[string]any{"branch": map[string]any{"name": source}}, "destination": map[string]any{"branch": map[string]any{"name": "main"}}}}}
					if page < 3 {
						out["next"] = fmt.Sprintf("%s%s?page=%d", srv.URL, r.URL.Path, page+1)
					}
					_ = json.NewEncoder(w).Encode(out)
					return
				}
				top, _ := strconv.Atoi(q.Get("$top"))
				skip, _ := strconv.Atoi(q.Get("$skip"))
				var value []any
				for i := skip; i < skip+top && i < 250; i++ {
					source := "other"
					if i == 240 {
						source = "caravan/promotion/p1"
					}
					value = append(value, map[string]any{"pullRequestId": i + 1, "status": "active", "sourceRefName": "refs/heads/" + source, "targetRefName": "refs/heads/main"})
				}
				_ = json.NewEncoder(w).Encode(map[string]any{"value": value, "count": len(value)})
			}))
			t.Cleanup(srv.Close)
			sc := newContext(t, map[string]any{"repoURL": fakeRepoURL(srv, provider), "provider": provider, "sourceBranch": "caravan/promotion/p1", "targetBranch": "main", "title": "t", "description": "d"})
			sc.Egress = allowLoopback(t, egress.Config{})
			res, err := run(t, "git-open-pr", sc)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]float64{"bitbucket": 3, "azure": 241}[provider]
			if pr := res.Output["pr"].(map[string]any); pr["id"] != want || creates != 0 || gets != 5 {
				t.Fatalf("pr %v, %d creates, %d gets (want %v from the third page, after a 503 and a 429)", pr, creates, gets, want)
			}
		})
	}
}

// A repoURL that is not a repository of the host's form is refused, naming
// the field; Bitbucket refuses labels, which it does not have.
func TestPullRequestHostURLs(t *testing.T) {
	t.Parallel()
	sc := newContext(t, nil)
	for _, tc := range []struct{ repoURL, provider, want string }{
		{"https://dev.azure.com/org/proj/app", "", "dev.azure.com/ORG/PROJECT/_git/REPO"},
		{"https://bitbucket.org/team", "", "bitbucket.org/WORKSPACE/REPO"},
		{"https://git.example.com/a/b", "", "set provider"},
		{"https://git.example.com/a/b", "forgejo", `provider "forgejo" is not supported`},
	} {
		_, err := sc.prProvider(context.Background(), tc.repoURL, tc.provider)
		if err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a terminal error naming %q", tc.repoURL, err, tc.want)
		}
	}
	p, err := sc.prProvider(context.Background(), "https://bitbucket.org/team/app", "")
	if err != nil {
		t.Fatal(err)
	}
	if b := p.(*bitbucket); b.base != "https://api.bitbucket.org/2.0" || b.owner != "team" || b.slug != "app" {
		t.Fatalf("bitbucket.org: base %s, repo %s/%s", b.base, b.owner, b.slug)
	}
	if _, err := p.open(context.Background(), "a", "b", nil, []string{"x"}); err == nil || !strings.Contains(err.Error(), "labels") {
		t.Fatalf("bitbucket labels: %v", err)
	}
	p, err = sc.prProvider(context.Background(), "https://org.visualstudio.com/proj/_git/app", "")
	if err != nil {
		t.Fatal(err)
	}
	if a := p.(*azure); a.project != "proj" || a.repo != "app" || a.web != "https://org.visualstudio.com/proj/_git/app" {
		t.Fatalf("visualstudio.com: project %s, repo %s, web %s", a.project, a.repo, a.web)
	}
}

// azureLocations answers OPTIONS ORG/_apis as Azure DevOps does: the
// resource locations (id, area, resource name, route template and versions)
// the Azure DevOps Go SDK reads to build its URLs
// (azuredevops/client.go, getResourceLocationsFromServer), for the git
// resources the pull request steps use: pullRequests
// (https://learn.microsoft.com/en-us/rest/api/azure/devops/git/pull-requests?view=azure-devops-rest-7.1),
// refs (.../git/refs/list) and commits (.../git/commits/get).
func azureLocations(w http.ResponseWriter) {
	loc := func(id, resource string) map[string]any {
		return map[string]any{"id": id, "area": "git", "resourceName": resource,
			"routeTemplate":   "{project}/_apis/{area}/repositories/{repositoryId}/{resource}/{" + map[string]string{"pullRequests": "pullRequestId", "refs": "*filter", "commits": "commitId"}[resource] + "}",
			"resourceVersion": 1, "minVersion": "1.0", "maxVersion": "7.1", "releasedVersion": "7.1"}
	}
	value := []any{loc("9946fd70-0d40-406e-b686-b4744cbbcc37", "pullRequests"), loc("2d874a60-a811-4f62-9c9f-963a6ea0a55b", "refs"),
		loc("c2570c3b-5b3f-41b8-98bf-5407bfde8d58", "commits")}
	_ = json.NewEncoder(w).Encode(map[string]any{"count": len(value), "value": value})
}

// azureVersion tells whether r names an Azure DevOps 7.1 api-version, in
// the query or in the Accept header (application/json;api-version=7.1...).
func azureVersion(r *http.Request) bool {
	v := r.URL.Query().Get("api-version")
	if _, p, ok := strings.Cut(r.Header.Get("Accept"), "api-version="); ok {
		v = p
	}
	return strings.HasPrefix(v, "7.1")
}
