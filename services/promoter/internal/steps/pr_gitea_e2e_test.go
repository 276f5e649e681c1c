//go:build e2e

package steps

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
)

// realGiteaPull is what the test reads of GET /repos/{owner}/{repo}/pulls/{n}.
type realGiteaPull struct {
	Number         int64  `json:"number"`
	Title          string `json:"title"`
	Body           string `json:"body"`
	State          string `json:"state"`
	HTMLURL        string `json:"html_url"`
	Merged         bool   `json:"merged"`
	MergeCommitSHA string `json:"merge_commit_sha"`
	Head           struct {
		Ref string `json:"ref"`
	} `json:"head"`
	Base struct {
		Ref string `json:"ref"`
	} `json:"base"`
}

// TestGiteaPullRequestsE2E runs git-open-pr, git-wait-for-pr and
// git-merge-pr, as the step registry gives them, against a real Gitea
// (tools/gitea, started by testenv.GiteaServer with SQLite in a temp dir),
// and checks each result through Gitea's own API: the pull request's
// title, body, branches and state, its merge commit and the target
// branch's head. It speaks to the steps only through their configuration
// and outputs, so it holds for any implementation of the Gitea provider.
func TestGiteaPullRequestsE2E(t *testing.T) {
	gt := testenv.GiteaServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	repo := gt.CreateRepo(t, "app")
	repoURL := gt.RepoURL(repo)
	gt.Push(t, repo, "", "main", map[string]string{"stages/dev/values.yaml": "image: 1.0.0\n"}, "Initial commit")

	registry := Builtins()
	step := func(uses string, cfg map[string]any) (Result, error) {
		t.Helper()
		cfg["repoURL"], cfg["provider"] = repoURL, "gitea"
		sc := newContext(t, cfg)
		sc.Project, sc.Stage, sc.Promotion = "demo", "dev", "dev.01.abc"
		sc.Egress = allowLoopback(t, egress.Config{})
		sc.Credentials = func(_ context.Context, project, u string) (*gitmirror.Auth, error) {
			if project != "demo" || u != repoURL {
				return nil, fmt.Errorf("credentials asked for project %q, repository %q", project, u)
			}
			return &gitmirror.Auth{Username: gt.User, Password: gt.Token}, nil
		}
		return Run(ctx, registry[uses], sc)
	}
	mustStep := func(uses string, cfg map[string]any) Result {
		t.Helper()
		res, err := step(uses, cfg)
		if err != nil {
			t.Fatalf("%s: %v", uses, err)
		}
		return res
	}
	succeeded := func(res Result) bool {
		return res.Status == "" || res.Status == model.PromotionStepStatusSucceeded
	}
	pull := func(n int64) realGiteaPull {
		t.Helper()
		var p realGiteaPull
		gt.API(t, http.MethodGet, fmt.Sprintf("/repos/%s/pulls/%d", repo, n), nil, &p)
		return p
	}
	head := func(branch string) string {
		t.Helper()
		var b struct {
			Commit struct {
				ID string `json:"id"`
			} `json:"commit"`
		}
		gt.API(t, http.MethodGet, "/repos/"+repo+"/branches/"+branch, nil, &b)
		return b.Commit.ID
	}
	parents := func(sha string) int {
		t.Helper()
		var c struct {
			Parents []struct {
				SHA string `json:"sha"`
			} `json:"parents"`
		}
		gt.API(t, http.MethodGet, "/repos/"+repo+"/git/commits/"+sha, nil, &c)
		return len(c.Parents)
	}
	prID := func(res Result) int64 {
		t.Helper()
		pr, ok := res.Output["pr"].(map[string]any)
		if !ok {
			t.Fatalf("no pr output: %+v", res)
		}
		id, ok := pr["id"].(float64)
		if !ok || id <= 0 {
			t.Fatalf("pr.id %v", pr["id"])
		}
		return int64(id)
	}
	// Gitea checks a new pull request's mergeability in a background
	// queue and answers a merge 405 until it has: poll, with a generous
	// deadline (this is readiness, not a speed assertion).
	waitFor := func(what string, done func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !done() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not done in 2m", what)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	t.Run("open, merged in Gitea, wait", func(t *testing.T) {
		source := "caravan/promotion/dev.01.abc"
		gt.Push(t, repo, "main", source, map[string]string{"stages/dev/values.yaml": "image: 1.1.0\n"}, "Promote dev to 1.1.0\n\nFreight abc.")
		// No title: Kargo's default takes the head commit's first line, and
		// the rest as the body.
		open := map[string]any{"sourceBranch": source, "targetBranch": "main"}
		res := mustStep("git-open-pr", open)
		n := prID(res)
		pr := res.Output["pr"].(map[string]any)
		got := pull(n)
		if got.Title != "Promote dev to 1.1.0" || got.Body != "Freight abc." || got.Head.Ref != source || got.Base.Ref != "main" || got.State != "open" {
			t.Fatalf("opened %+v", got)
		}
		if pr["url"] != got.HTMLURL || pr["open"] != true || pr["merged"] != false {
			t.Fatalf("git-open-pr output %v, Gitea has %+v", res.Output, got)
		}
		// A resumed promotion finds the open pull request, not a second one.
		if again := mustStep("git-open-pr", map[string]any{"sourceBranch": source, "targetBranch": "main"}); prID(again) != n {
			t.Fatalf("a second git-open-pr gave %v, want pull request %d", again.Output, n)
		}
		var all []realGiteaPull
		gt.API(t, http.MethodGet, "/repos/"+repo+"/pulls?state=all", nil, &all)
		if len(all) != 1 {
			t.Fatalf("%d pull requests after opening twice, want 1", len(all))
		}

		if res := mustStep("git-wait-for-pr", map[string]any{"prNumber": float64(n), "pollInterval": "3s"}); res.Status != StatusRunning || res.PollAfter != 3*time.Second {
			t.Fatalf("git-wait-for-pr on an open pull request: %+v", res)
		}
		// Someone merges it in Gitea.
		waitFor("merge through Gitea's API", func() bool {
			return gt.API(t, http.MethodPost, fmt.Sprintf("/repos/%s/pulls/%d/merge", repo, n), map[string]any{"Do": "merge"}, nil,
				http.StatusOK, http.StatusMethodNotAllowed, http.StatusConflict) == http.StatusOK
		})
		res = mustStep("git-wait-for-pr", map[string]any{"prNumber": float64(n)})
		got = pull(n)
		if !succeeded(res) || !got.Merged || got.State != "closed" {
			t.Fatalf("git-wait-for-pr on a merged pull request: %+v (Gitea: %+v)", res, got)
		}
		out := res.Output["pr"].(map[string]any)
		if res.Output["commit"] != got.MergeCommitSHA || got.MergeCommitSHA != head("main") || out["merged"] != true || out["open"] != false {
			t.Fatalf("git-wait-for-pr output %v; Gitea: merge commit %s, main at %s", res.Output, got.MergeCommitSHA, head("main"))
		}
		if p := parents(got.MergeCommitSHA); p != 2 {
			t.Fatalf("merge commit has %d parents, want 2", p)
		}
	})

	t.Run("open, git-merge-pr squash", func(t *testing.T) {
		source := "caravan/promotion/dev.02.def"
		gt.Push(t, repo, "main", source, map[string]string{"stages/dev/values.yaml": "image: 1.2.0\n"}, "Promote dev to 1.2.0")
		res := mustStep("git-open-pr", map[string]any{"sourceBranch": source, "title": "Promote 1.2.0 to dev", "description": "Freight def."})
		n := prID(res)
		if got := pull(n); got.Title != "Promote 1.2.0 to dev" || got.Body != "Freight def." || got.Base.Ref != "main" {
			t.Fatalf("opened %+v", got)
		}
		// With wait, the step stays Running while Gitea cannot merge yet,
		// as the engine would run it again.
		merge := map[string]any{"prNumber": float64(n), "mergeMethod": "squash", "wait": true, "pollInterval": "1s"}
		waitFor("git-merge-pr", func() bool {
			res = mustStep("git-merge-pr", merge)
			return res.Status != StatusRunning
		})
		got := pull(n)
		if !succeeded(res) || !got.Merged || got.State != "closed" {
			t.Fatalf("git-merge-pr: %+v (Gitea: %+v)", res, got)
		}
		if res.Output["commit"] != got.MergeCommitSHA || got.MergeCommitSHA != head("main") {
			t.Fatalf("git-merge-pr output %v; Gitea: merge commit %s, main at %s", res.Output, got.MergeCommitSHA, head("main"))
		}
		if p := parents(got.MergeCommitSHA); p != 1 {
			t.Fatalf("squash commit has %d parents, want 1", p)
		}
		// Merging a merged pull request succeeds with the same commit.
		if again := mustStep("git-merge-pr", merge); !succeeded(again) || again.Output["commit"] != got.MergeCommitSHA {
			t.Fatalf("git-merge-pr again: %+v", again)
		}
	})

	t.Run("closed without merging", func(t *testing.T) {
		source := "caravan/promotion/dev.03.ghi"
		gt.Push(t, repo, "main", source, map[string]string{"stages/dev/values.yaml": "image: 1.3.0\n"}, "Promote dev to 1.3.0")
		n := prID(mustStep("git-open-pr", map[string]any{"sourceBranch": source}))
		gt.API(t, http.MethodPatch, fmt.Sprintf("/repos/%s/pulls/%d", repo, n), map[string]any{"state": "closed"}, nil)
		if res := mustStep("git-wait-for-pr", map[string]any{"prNumber": float64(n)}); res.Status != model.PromotionStepStatusFailed {
			t.Fatalf("git-wait-for-pr on a closed pull request: %+v", res)
		}
		if res := mustStep("git-merge-pr", map[string]any{"prNumber": float64(n)}); res.Status != model.PromotionStepStatusFailed {
			t.Fatalf("git-merge-pr on a closed pull request: %+v", res)
		}
		if got := pull(n); got.Merged || got.State != "closed" {
			t.Fatalf("Gitea: %+v", got)
		}
	})
}
