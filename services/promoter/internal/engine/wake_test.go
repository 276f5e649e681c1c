package engine

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

func TestRepoKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"https://github.com/acme/app.git", "github.com/acme/app"},
		{"https://github.com/acme/app", "github.com/acme/app"},
		{"http://user@GitHub.com:443/Acme/App/", "github.com/acme/app"},
		{"git@github.com:acme/app.git", "github.com/acme/app"},
		{"ssh://git@github.com:22/acme/app.git", "github.com/acme/app"},
		{"https://gitlab.example.com/group/sub/app.git", "gitlab.example.com/group/sub/app"},
		{"", ""},
		{"not a url", ""},
		{"https://github.com/", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			if got := repoKey(tc.in); got != tc.want {
				t.Fatalf("repoKey(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// prHost is the part of GitHub's API git-wait-for-pr reads: pull request 1
// of acme/app, open until merged is set.
func prHost(t testing.TB, merged *atomic.Bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v3/repos/acme/app/pulls/1" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if merged.Load() {
			_, _ = w.Write([]byte(`{"number":1,"html_url":"http://host/pr/1","state":"closed","merged":true,"merge_commit_sha":"merged-sha-1"}`))
			return
		}
		_, _ = w.Write([]byte(`{"number":1,"html_url":"http://host/pr/1","state":"open","merged":false}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// A promotion waiting in git-wait-for-pr with an hour's poll interval runs
// the step again as soon as the engine is woken for its repository, under
// another spelling of its URL.
func TestWakeEndsPullRequestWait(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	e, err := New(Options{DataDir: t.TempDir(), Store: store, PollInterval: time.Hour, Egress: loopback(t)})
	if err != nil {
		t.Fatal(err)
	}
	var merged atomic.Bool
	base := prHost(t, &merged)
	p := &model.Promotion{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion},
		ObjectMeta: model.ObjectMeta{Name: "dev.01.wait", Namespace: project},
		Spec: model.PromotionSpec{Stage: "dev", Steps: []model.PromotionStep{
			step("git-wait-for-pr", "wait", map[string]any{"repoURL": base + "/acme/app.git", "provider": "github", "prNumber": 1}),
		}},
		Status: model.PromotionStatus{Phase: model.PromotionPhaseRunning},
	}
	waiting := make(chan struct{})
	var once atomic.Bool
	save := func(_ context.Context, p *model.Promotion) error {
		md := p.Status.StepExecutionMetadata
		if len(md) == 1 && md[0].Status == model.PromotionStepStatusRunning && strings.Contains(md[0].Message, "waiting for pull request 1") && !once.Swap(true) {
			close(waiting)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type outcome struct {
		res Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := e.Run(ctx, p, save)
		done <- outcome{res, err}
	}()
	select {
	case <-waiting:
	case o := <-done:
		t.Fatalf("Run ended before waiting: %+v %v", o.res, o.err)
	case <-ctx.Done():
		t.Fatal("the step never reported waiting")
	}
	e.Wake("other-project", base+"/acme/app.git") // another project's: no effect
	merged.Store(true)
	e.Wake(project, strings.Replace(base, "http://", "https://", 1)+"/ACME/app/")
	select {
	case o := <-done:
		if o.err != nil || o.res.Phase != model.PromotionPhaseSucceeded {
			t.Fatalf("Run = %+v, %v", o.res, o.err)
		}
	case <-ctx.Done():
		t.Fatal("the woken promotion did not finish (still waiting for its hourly poll)")
	}
	if c := p.Status.State["wait"].(map[string]any)["commit"]; c != "merged-sha-1" {
		t.Fatalf("outputs.wait.commit = %v", c)
	}
	e.wakers.mu.Lock()
	n := len(e.wakers.m)
	e.wakers.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d wakers left registered", n)
	}
}
