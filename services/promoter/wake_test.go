package promoter

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/promoter/internal/engine"
)

// A promotion waiting in git-wait-for-pr, with an hour between polls,
// finishes as soon as PullRequestClosed is published for its repository:
// the replica that takes the event wakes every replica over core NATS.
func TestPullRequestClosedWakesWaitingPromotion(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var merged atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v3/repos/acme/app/pulls/1" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		pr := map[string]any{"number": 1, "html_url": "http://host/pr/1", "state": "open"}
		if merged.Load() {
			pr["state"], pr["merged"], pr["merge_commit_sha"] = "closed", true, "merged-sha-1"
		}
		_ = json.NewEncoder(w).Encode(pr)
	}))
	t.Cleanup(srv.Close)
	repoURL := srv.URL + "/acme/app.git"
	stage := h.stage("dev", func(s *model.Stage) {
		s.Spec.PromotionTemplate.Spec.Steps = []model.PromotionStep{
			{Uses: "git-wait-for-pr", As: "wait", Config: map[string]any{"repoURL": repoURL, "provider": "github", "prNumber": 1}},
		}
	})
	f := h.freight("v1", time.Now())

	wakes := make(chan *nats.Msg, 16)
	sub, err := h.srv.Conn(t).ChanSubscribe(wakePrefix+".>", wakes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	eng, err := engine.New(engine.Options{DataDir: t.TempDir(), Store: h.env.Store, PollInterval: time.Hour, Egress: h.env.Egress})
	if err != nil {
		t.Fatal(err)
	}
	h.start("a", eng, nil)
	eventually(t, 30*time.Second, func() bool {
		_, err := h.env.JS.Consumer(t.Context(), events.StreamEvents, events.PromoterPullRequestClosed.Durable)
		return err == nil
	}, func() string { return "consumer " + events.PromoterPullRequestClosed.Durable + " declared" })

	p := h.promote(stage, f, "alice")
	var got model.Promotion
	eventually(t, 30*time.Second, func() bool {
		got = h.promotion(p.Name)
		md := got.Status.StepExecutionMetadata
		return len(md) == 1 && md[0].Status == model.PromotionStepStatusRunning && strings.Contains(md[0].Message, "waiting for pull request 1")
	}, func() string { return "promotion waiting for pull request 1, got " + string(got.Status.Phase) })

	merged.Store(true)
	h.publish(events.Ref{Kind: "Repository", Name: repoURL},
		events.PullRequestClosed{RepoURL: repoURL, Number: 1, Merged: true, MergeCommit: "merged-sha-1", Branch: "main", Provider: "github"})
	// Far below the hour the step would otherwise wait.
	got = h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	if c := got.Status.State["wait"].(map[string]any)["commit"]; c != "merged-sha-1" {
		t.Fatalf("outputs.wait.commit = %v", c)
	}
	select {
	case m := <-wakes:
		var w wakeMessage
		if err := json.Unmarshal(m.Data, &w); err != nil || m.Subject != wakePrefix+"."+project || w != (wakeMessage{Project: project, RepoURL: repoURL}) {
			t.Fatalf("wake on %s: %s (%v)", m.Subject, m.Data, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no wake was broadcast to the replicas")
	}
}
