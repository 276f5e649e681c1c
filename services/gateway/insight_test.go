package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// TestInsightRoutes checks the read routes the web UI added: a promotion's
// pushed diff and the commits between two freight (read from a real git
// server with the project's credentials), and a stage's verifications.
func TestInsightRoutes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	g := testenv.GitServer(t, testenv.WithBasicAuth("bot", "pw"))
	url := g.CreateRepo(t, "deploy")
	c1 := g.Seed(t, "deploy", map[string]string{"env/prod/values.yaml": "tag: 1.0.0\n"}, "init")
	c2 := g.Seed(t, "deploy", map[string]string{"env/prod/values.yaml": "tag: 1.0.1\n"}, "promote prod")
	h.mustApply([]byte(`apiVersion: v1
kind: Secret
metadata:
  name: deploy-creds
  namespace: demo
  labels: {kargo.akuity.io/cred-type: git}
stringData: {repoURL: "` + url + `", username: bot, password: pw}
`))
	ctx := context.Background()
	now := model.NewTime(time.Now().UTC().Truncate(time.Second))
	p := &model.Promotion{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion},
		ObjectMeta: model.ObjectMeta{Name: "prod.1.abc", Namespace: "demo", CreationTimestamp: now},
		Spec:       model.PromotionSpec{Stage: "prod", Freight: "abc"},
		Status: model.PromotionStatus{Phase: model.PromotionPhaseSucceeded, FinishedAt: now,
			StepExecutionMetadata: []model.StepExecutionMetadata{{Alias: "clone"}, {Alias: "push"}},
			State:                 map[string]any{"clone": map[string]any{}, "push": map[string]any{"repoURL": url, "commit": c2, "branch": "main"}}}}
	if _, err := h.env.Store.PutObject(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	var diff struct {
		Pushes []struct {
			Step, Commit, Error string
			Diff                *struct {
				Parent string
				Patch  string
				Files  []struct{ Path string }
			}
		}
	}
	if st := h.get("/v1/projects/demo/promotions/prod.1.abc/diff", &diff); st != http.StatusOK || len(diff.Pushes) != 1 {
		t.Fatalf("diff: %d %+v", st, diff)
	}
	if d := diff.Pushes[0].Diff; d == nil || d.Parent != c1 || !strings.Contains(d.Patch, "+tag: 1.0.1") || d.Files[0].Path != "env/prod/values.yaml" {
		t.Errorf("diff: %+v", diff.Pushes[0])
	}

	// Two freight with commits of the repository: the commits between.
	for i, c := range []string{c1, c2} {
		f := &model.Freight{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
			ObjectMeta: model.ObjectMeta{Namespace: "demo", CreationTimestamp: now}, Alias: []string{"old", "new"}[i],
			Origin:  model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
			Commits: []model.GitCommit{{RepoURL: url, ID: c}}, Images: []model.Image{{RepoURL: "ghcr.io/example/app", Tag: []string{"1.0.0", "1.0.1"}[i]}}}
		f.Name = f.GenerateID()
		if _, err := h.env.Store.PutObject(ctx, f, 0); err != nil {
			t.Fatal(err)
		}
	}
	var cmp struct {
		Artifacts []struct{ Kind, From, To string }
		Commits   []struct {
			Error   string
			Commits []struct{ ID, Message string }
		}
	}
	if st := h.get("/v1/projects/demo/freight/old/compare/new", &cmp); st != http.StatusOK || len(cmp.Artifacts) != 2 || len(cmp.Commits) != 1 {
		t.Fatalf("compare: %d %+v", st, cmp)
	}
	if cs := cmp.Commits[0].Commits; len(cs) != 1 || cs[0].ID != c2 || cs[0].Message != "promote prod" {
		t.Errorf("commits between: %+v", cmp.Commits[0])
	}
	if st := h.get("/v1/projects/demo/freight/new/compare/old", &cmp); st != http.StatusOK || len(cmp.Commits) != 1 || len(cmp.Commits[0].Commits) != 1 {
		t.Errorf("compare the other way: %d %+v", st, cmp)
	}

	// Verifications, newest first, with their measurements; lease
	// bookkeeping stays inside.
	for i, id := range []string{"v1", "v2"} {
		rec := map[string]any{"project": "demo", "stage": "dev", "id": id, "freight": []string{"abc"}, "phase": "Successful",
			"createdAt": time.Now().Add(time.Duration(i) * time.Minute), "owner": "verifier-1", "leaseUntil": time.Now(),
			"result": map[string]any{"phase": "Successful", "metrics": []any{map[string]any{"name": "latency", "phase": "Successful",
				"measurements": []any{map[string]any{"phase": "Successful", "value": "12.5"}}}}}}
		if _, err := state.Put(ctx, h.env.Store.KV(state.Verifications), state.Key("run", "demo", "dev", id), rec); err != nil {
			t.Fatal(err)
		}
	}
	var vl struct{ Items []json.RawMessage }
	if st := h.get("/v1/projects/demo/stages/dev/verifications", &vl); st != http.StatusOK || len(vl.Items) != 2 ||
		!strings.Contains(string(vl.Items[0]), `"id":"v2"`) || strings.Contains(string(vl.Items[0]), "owner") || !strings.Contains(string(vl.Items[0]), `"value":"12.5"`) {
		t.Errorf("verifications: %d %s", st, vl.Items)
	}
	if st := h.get("/v1/projects/demo/stages/dev/verifications/v1", nil); st != http.StatusOK {
		t.Errorf("one verification: %d", st)
	}
	if st := h.get("/v1/projects/demo/stages/dev/verifications/nope", nil); st != http.StatusNotFound {
		t.Errorf("missing verification: %d", st)
	}
	var who struct {
		Name, Role string
		Admin      bool
	}
	if st := h.get("/v1/whoami?project=demo", &who); st != http.StatusOK || !who.Admin || who.Role != "admin" {
		t.Errorf("whoami: %d %+v", st, who)
	}
}
