package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// TestPromoteDryRun: ?dryRun=true validates like a promotion, asks a
// promoter over NATS, answers 200 with its result and stores and
// publishes nothing. The promoter here is a hand-written responder on the
// real subject (the promoter's own tests run the real step engine behind
// it, and cmd/caravan's runs the whole server).
func TestPromoteDryRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.discovered("1.0.0")
	var f model.Freight
	origin := map[string]string{"kind": "Warehouse", "name": "app"}
	if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": origin, "alias": "first", "images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": "1.0.0"}}}, &f); st != http.StatusCreated {
		t.Fatalf("create freight: %d %+v", st, e)
	}
	const path = "/v1/projects/demo/stages/dev/promotions?dryRun=true"

	// No promoter answers: 503, not a hang.
	if st, e := h.call("POST", path, map[string]string{"freight": "first"}, nil); st != http.StatusServiceUnavailable {
		t.Fatalf("without a promoter: %d %+v", st, e)
	}

	requests := make(chan events.DryRunRequest, 4)
	sub, err := h.nc.QueueSubscribe(events.DryRunSubject, events.DryRunQueue, func(m *nats.Msg) {
		var req events.DryRunRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("decode request: %v", err)
			return
		}
		requests <- req
		res := &model.PromotionDryRun{
			Stage: req.Promotion.Spec.Stage, Freight: req.Promotion.Spec.Freight, Phase: model.PromotionPhaseSucceeded,
			Steps:     []model.StepExecutionMetadata{{Alias: "clone", Uses: "git-clone", Status: model.PromotionStepStatusSucceeded}},
			StoppedAt: &model.DryRunStop{Index: 1, Alias: "push", Uses: "git-push", Reason: "effects"},
			Diffs:     []model.DryRunDiff{{RepoURL: "https://git.example.com/app.git", Path: "src", Patch: "diff --git a/x b/x\n"}},
		}
		b, _ := json.Marshal(events.DryRunReply{Result: res})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	wait := collectEvents(t, h.nc)

	var dry model.PromotionDryRun
	if st, e := h.call("POST", path, map[string]string{"freight": "first"}, &dry); st != http.StatusOK {
		t.Fatalf("dry run: %d %+v", st, e)
	}
	if dry.Freight != f.Name || dry.Stage != "dev" || len(dry.Diffs) != 1 || dry.StoppedAt == nil || dry.StoppedAt.Uses != "git-push" {
		t.Fatalf("dry run answer %+v", dry)
	}
	req := <-requests
	if p := req.Promotion; p == nil || p.Namespace != "demo" || p.Spec.Freight != f.Name || len(p.Spec.Steps) == 0 || req.Timeout <= 0 {
		t.Fatalf("request %+v", req)
	}
	// By warehouse too.
	if st, e := h.call("POST", path, map[string]string{"warehouse": "app"}, &dry); st != http.StatusOK || dry.Freight != f.Name {
		t.Fatalf("dry run by warehouse: %d %+v", st, e)
	}
	<-requests
	// Nothing stored, nothing published.
	var list struct {
		Items []model.Promotion `json:"items"`
	}
	if st := h.get("/v1/projects/demo/promotions", &list); st != http.StatusOK || len(list.Items) != 0 {
		t.Fatalf("promotions after dry runs: %d %d", st, len(list.Items))
	}
	wait(0)

	// Bad input names the field; nothing reaches the promoter.
	for _, c := range []struct {
		path   string
		body   any
		status int
		field  string
	}{
		{path, map[string]string{"freight": "nope"}, http.StatusNotFound, "freight"},
		{"/v1/projects/demo/stages/nope/promotions?dryRun=true", map[string]string{"freight": "first"}, http.StatusNotFound, "stage"},
		{path, map[string]string{}, http.StatusBadRequest, "freight"},
		{"/v1/projects/demo/stages/dev/promotions?dryRun=maybe", map[string]string{"freight": "first"}, http.StatusBadRequest, "dryRun"},
		{"/v1/projects/demo/stages/prod/promotions?dryRun=true", map[string]string{"freight": "first"}, http.StatusConflict, "freight"},
		{path, map[string]any{"freight": "first", "windowOverride": map[string]string{"reason": "why"}}, http.StatusBadRequest, "windowOverride"},
	} {
		st, e := h.call("POST", c.path, c.body, nil)
		if st != c.status || !strings.Contains(strings.ToLower(e.Message), strings.ToLower(c.field)) {
			t.Errorf("POST %s %v: %d %q, want %d naming %s", c.path, c.body, st, e.Message, c.status, c.field)
		}
	}
	select {
	case r := <-requests:
		t.Fatalf("bad input reached the promoter: %+v", r)
	default:
	}
}
