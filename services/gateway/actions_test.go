package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// call sends a JSON action as the admin and decodes a 2xx answer into v.
func (h *harness) call(method, path string, body any, v any) (int, apiError) {
	h.t.Helper()
	return h.callAs(token, method, path, body, v)
}

func (h *harness) callAs(tok, method, path string, body any, v any) (int, apiError) {
	h.t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			h.t.Fatal(err)
		}
	}
	ct := ""
	if body != nil {
		ct = "application/json"
	}
	status, out, _ := h.do(method, path, tok, ct, b)
	var e apiError
	if status >= 300 {
		if err := json.Unmarshal(out, &e); err != nil {
			h.t.Fatalf("%s %s: %d with a body that is not a JSON error: %s", method, path, status, out)
		}
		return status, e
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			h.t.Fatalf("%s %s: decode %s: %v", method, path, out, err)
		}
	}
	return status, e
}

// discovered records what discovery would have found for warehouse app.
func (h *harness) discovered(tags ...string) {
	h.t.Helper()
	var refs []model.DiscoveredImageReference
	for i, tag := range tags {
		refs = append(refs, model.DiscoveredImageReference{Tag: tag, Digest: "sha256:" + string(rune('a'+i)) + "000000000000000000000000000000000000000000000000000000000000000"[1:]})
	}
	st := model.WarehouseStatus{DiscoveredArtifacts: &model.DiscoveredArtifacts{
		Images: []model.ImageDiscoveryResult{{RepoURL: "ghcr.io/example/app", References: refs}},
	}}
	if _, err := state.Put(context.Background(), h.env.Store.KV(state.Warehouses), state.Key("demo", "app"), st); err != nil {
		h.t.Fatal(err)
	}
}

func payload[T events.Event](t *testing.T, env events.Envelope) T {
	t.Helper()
	var v T
	if err := env.Decode(v); err == nil {
		_ = v
	}
	p := new(T)
	if err := json.Unmarshal(env.Payload, p); err != nil {
		t.Fatalf("decode %s: %v", env.Type, err)
	}
	if env.Type != (*p).EventType() {
		t.Fatalf("event type %s, want %s", env.Type, (*p).EventType())
	}
	return *p
}

func TestActions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.discovered("1.0.0", "1.1.0")
	wait := collectEvents(t, h.nc)

	// Refresh.
	var env events.Envelope
	if st, e := h.call("POST", "/v1/projects/demo/warehouses/app/refresh", nil, &env); st != http.StatusAccepted {
		t.Fatalf("refresh: %d %+v", st, e)
	}
	if p := payload[events.WarehouseRefreshRequested](t, wait(1)[0]); p.Warehouse != "app" || p.Reason != "refresh requested by admin" {
		t.Errorf("refresh event: %+v", p)
	}
	// A reason says why (the demo says what it pushed).
	if st, e := h.call("POST", "/v1/projects/demo/warehouses/app/refresh", map[string]string{"reason": "pushed app:1.2.3"}, nil); st != http.StatusAccepted {
		t.Fatalf("refresh with a reason: %d %+v", st, e)
	}
	if p := payload[events.WarehouseRefreshRequested](t, wait(1)[0]); p.Reason != "pushed app:1.2.3 (refresh requested by admin)" {
		t.Errorf("refresh event with a reason: %+v", p)
	}
	if st, e := h.call("POST", "/v1/projects/demo/warehouses/app/refresh", map[string]string{"reason": "two\nlines"}, nil); st != http.StatusBadRequest || e.Details[0].Field != "reason" {
		t.Errorf("refresh with a bad reason: %d %+v", st, e)
	}
	if st, _ := h.call("POST", "/v1/projects/demo/warehouses/nope/refresh", nil, nil); st != http.StatusNotFound {
		t.Errorf("refresh unknown warehouse: %d", st)
	}
	// An unknown project is named as such, not as an unknown stage.
	for path, body := range map[string]any{"/v1/projects/nope/stages/dev/promotions": map[string]string{"freight": "x"}, "/v1/projects/nope/warehouses/app/refresh": nil, "/v1/projects/nope/stages/dev/verification": nil} {
		if st, e := h.call("POST", path, body, nil); st != http.StatusNotFound || e.Message != `project "nope" not found` {
			t.Errorf("POST %s: %d %+v", path, st, e)
		}
	}

	// Assemble freight by hand.
	origin := map[string]string{"kind": "Warehouse", "name": "app"}
	var f1 model.Freight
	if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": origin, "images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": "1.0.0"}}}, &f1); st != http.StatusCreated {
		t.Fatalf("create freight: %d %+v", st, e)
	}
	if f1.Name == "" || f1.Alias == "" || len(f1.Images) != 1 || f1.Images[0].Digest == "" || f1.Labels[model.LabelAlias] != f1.Alias {
		t.Errorf("created freight: %+v", f1)
	}
	if p := payload[events.FreightDiscovered](t, wait(1)[0]); p.Freight != f1.Name || p.Alias != f1.Alias || p.Origin.Name != "app" {
		t.Errorf("FreightDiscovered: %+v", p)
	}
	if st, _ := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": origin, "images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": "1.0.0"}}}, nil); st != http.StatusConflict {
		t.Errorf("same freight again: %d, want 409", st)
	}
	if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": origin, "images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": "9.9.9"}}}, nil); st != http.StatusBadRequest || e.Details[0].Field != "images[0]" {
		t.Errorf("undiscovered image: %d %+v", st, e)
	}
	for _, bad := range []string{`{"origin":{"kind":"Warehouse","name":"app"}}`, `{"origin":{"kind":"Warehouse","name":"nope"},"images":[{"repoURL":"x","tag":"1"}]}`, `{"bogus":1}`, `not json`} {
		if st, _, _ := h.do("POST", "/v1/projects/demo/freight", token, "application/json", []byte(bad)); st != http.StatusBadRequest {
			t.Errorf("create freight %s: %d, want 400", bad, st)
		}
	}
	time.Sleep(1100 * time.Millisecond) // creation times have a resolution of a second
	var f2 model.Freight
	if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": origin, "alias": "second", "images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": "1.1.0"}}}, &f2); st != http.StatusCreated || f2.Alias != "second" {
		t.Fatalf("create second freight: %d %+v %+v", st, e, f2)
	}
	wait(1)

	// Rename an alias; a taken alias is a conflict.
	var renamed model.Freight
	if st, e := h.call("PATCH", "/v1/projects/demo/freight/"+f1.Name, map[string]string{"alias": "first"}, &renamed); st != http.StatusOK || renamed.Alias != "first" || renamed.Labels[model.LabelAlias] != "first" {
		t.Fatalf("rename: %d %+v %+v", st, e, renamed)
	}
	if p := payload[events.FreightUpdated](t, wait(1)[0]); p.Freight != f1.Name || p.Alias != "first" || p.Change != "alias" {
		t.Errorf("FreightUpdated: %+v", p)
	}
	if st, _ := h.call("PATCH", "/v1/projects/demo/freight/first", map[string]string{"alias": "second"}, nil); st != http.StatusConflict {
		t.Errorf("taken alias: %d", st)
	}
	if st, _ := h.call("PATCH", "/v1/projects/demo/freight/first", map[string]string{"alias": "Not Valid"}, nil); st != http.StatusBadRequest {
		t.Errorf("invalid alias: %d", st)
	}

	// Available freight: dev takes it directly (newest first); prod none.
	names := func(path string) []string {
		t.Helper()
		var l struct {
			Items []model.Freight `json:"items"`
		}
		if st := h.get(path, &l); st != http.StatusOK {
			t.Fatalf("GET %s: %d", path, st)
		}
		var out []string
		for _, f := range l.Items {
			out = append(out, f.Alias)
		}
		return out
	}
	if got := names("/v1/projects/demo/freight?stage=dev"); len(got) != 2 || got[0] != "second" || got[1] != "first" {
		t.Errorf("available to dev: %v, want [second first]", got)
	}
	if got := names("/v1/projects/demo/freight?stage=dev&limit=1"); len(got) != 1 || got[0] != "second" {
		t.Errorf("available to dev, limit 1: %v", got)
	}
	// The next page, and the whole list oldest first.
	var page struct {
		Metadata struct {
			Continue string `json:"continue"`
		} `json:"metadata"`
	}
	if st := h.get("/v1/projects/demo/freight?stage=dev&limit=1", &page); st != http.StatusOK || page.Metadata.Continue == "" {
		t.Fatalf("available to dev, limit 1: %d, continue %q", st, page.Metadata.Continue)
	}
	if got := names("/v1/projects/demo/freight?stage=dev&limit=1&continue=" + page.Metadata.Continue); len(got) != 1 || got[0] != "first" {
		t.Errorf("available to dev, second page: %v, want [first]", got)
	}
	if got := names("/v1/projects/demo/freight?stage=dev&sort=oldest"); len(got) != 2 || got[0] != "first" {
		t.Errorf("available to dev, oldest first: %v", got)
	}
	if got := names("/v1/projects/demo/freight?stage=prod"); len(got) != 0 {
		t.Errorf("available to prod: %v, want none", got)
	}
	if st := h.get("/v1/projects/demo/freight?stage=nope", nil); st != http.StatusNotFound {
		t.Errorf("available to unknown stage: %d", st)
	}

	// Promote: by alias into dev; not available into prod (409).
	var p model.Promotion
	if st, e := h.call("POST", "/v1/projects/demo/stages/dev/promotions", map[string]string{"freight": "first"}, &p); st != http.StatusCreated {
		t.Fatalf("promote: %d %+v", st, e)
	}
	if p.Spec.Stage != "dev" || p.Spec.Freight != f1.Name || p.Status.Phase != model.PromotionPhasePending || len(p.Spec.Steps) != 4 || p.Annotations[model.AnnotationPromotionCreatedBy] != "admin" {
		t.Errorf("promotion: %+v", p)
	}
	if pr := payload[events.PromotionRequested](t, wait(1)[0]); pr.Promotion != p.Name || pr.Stage != "dev" || pr.Freight != f1.Name {
		t.Errorf("PromotionRequested: %+v", pr)
	}
	var stored model.Promotion
	if st := h.get("/v1/projects/demo/promotions/"+p.Name, &stored); st != http.StatusOK || stored.Status.Phase != model.PromotionPhasePending {
		t.Errorf("stored promotion: %d %+v", st, stored)
	}
	if st, e := h.call("POST", "/v1/projects/demo/stages/prod/promotions", map[string]string{"freight": "first"}, nil); st != http.StatusConflict || e.Code != "not_available" {
		t.Errorf("promote unavailable: %d %+v", st, e)
	}
	var latest model.Promotion
	if st, e := h.call("POST", "/v1/projects/demo/stages/dev/promotions", map[string]string{"warehouse": "app"}, &latest); st != http.StatusCreated || latest.Spec.Freight != f2.Name {
		t.Errorf("promote newest from warehouse: %d %+v %+v", st, e, latest)
	}
	wait(1)
	for _, body := range []map[string]string{{}, {"freight": "a", "warehouse": "b"}} {
		if st, _ := h.call("POST", "/v1/projects/demo/stages/dev/promotions", body, nil); st != http.StatusBadRequest {
			t.Errorf("promote %v: %d", body, st)
		}
	}
	if st, _ := h.call("POST", "/v1/projects/demo/stages/dev/promotions", map[string]string{"freight": "nope"}, nil); st != http.StatusNotFound {
		t.Errorf("promote unknown freight: %d", st)
	}
	if st, _ := h.call("POST", "/v1/projects/demo/stages/nope/promotions", map[string]string{"freight": "first"}, nil); st != http.StatusNotFound {
		t.Errorf("promote into unknown stage: %d", st)
	}

	// Approve for prod: then it is available there.
	var approved model.Freight
	if st, e := h.call("POST", "/v1/projects/demo/freight/first/approve", map[string]string{"stage": "prod"}, &approved); st != http.StatusOK || !approved.IsApprovedFor("prod") {
		t.Fatalf("approve: %d %+v %+v", st, e, approved.Status)
	}
	if pa := payload[events.FreightApproved](t, wait(1)[0]); pa.Freight != f1.Name || pa.Stage != "prod" {
		t.Errorf("FreightApproved: %+v", pa)
	}
	if got := names("/v1/projects/demo/freight?stage=prod"); len(got) != 1 || got[0] != "first" {
		t.Errorf("available to prod after approval: %v", got)
	}
	if st, _ := h.call("POST", "/v1/projects/demo/freight/first/approve", map[string]string{"stage": "nope"}, nil); st != http.StatusBadRequest {
		t.Errorf("approve for unknown stage: %d", st)
	}

	// Abort: a pending promotion can be; an ended one cannot.
	if st, e := h.call("POST", "/v1/projects/demo/promotions/"+p.Name+"/abort", nil, nil); st != http.StatusAccepted {
		t.Errorf("abort: %d %+v", st, e)
	}
	if pa := payload[events.PromotionAbortRequested](t, wait(1)[0]); pa.Promotion != p.Name || pa.Stage != "dev" {
		t.Errorf("PromotionAbortRequested: %+v", pa)
	}
	done := stored
	done.Status.Phase = model.PromotionPhaseSucceeded
	done.Name = "dev.done.1"
	if _, err := h.env.Store.PutObject(context.Background(), &done, 0); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.call("POST", "/v1/projects/demo/promotions/dev.done.1/abort", nil, nil); st != http.StatusConflict {
		t.Errorf("abort ended promotion: %d", st)
	}
	if st, _ := h.call("POST", "/v1/projects/demo/promotions/nope/abort", nil, nil); st != http.StatusNotFound {
		t.Errorf("abort unknown promotion: %d", st)
	}

	// Verification: dev has none configured.
	if st, _ := h.call("POST", "/v1/projects/demo/stages/dev/verification", nil, nil); st != http.StatusConflict {
		t.Errorf("re-verify without verification: %d", st)
	}
	h.mustApply([]byte(`apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: qa, namespace: demo}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  verification:
    analysisTemplates: [{name: smoke}]
`))
	wait(1)
	if st, _ := h.call("POST", "/v1/projects/demo/stages/qa/verification", nil, nil); st != http.StatusConflict {
		t.Errorf("re-verify without freight: %d", st)
	}
	status := model.StageStatus{FreightHistory: []model.FreightCollection{{ID: "c1", Freight: map[string]model.FreightReference{"Warehouse/app": {Name: f1.Name}}}}}
	if _, err := state.Put(context.Background(), h.env.Store.KV(state.Stages), state.Key("demo", "qa"), status); err != nil {
		t.Fatal(err)
	}
	if st, e := h.call("POST", "/v1/projects/demo/stages/qa/verification", nil, nil); st != http.StatusAccepted {
		t.Errorf("re-verify: %d %+v", st, e)
	}
	if pv := payload[events.VerificationRequested](t, wait(1)[0]); pv.Stage != "qa" || pv.Freight != f1.Name {
		t.Errorf("VerificationRequested: %+v", pv)
	}
	// Nothing runs yet: 409, as re-verifying a stage without verification.
	if st, _ := h.call("DELETE", "/v1/projects/demo/stages/qa/verification", nil, nil); st != http.StatusConflict {
		t.Errorf("abort with no verification running: %d", st)
	}
	status.FreightHistory[0].VerificationHistory = []model.VerificationInfo{{ID: "v1", Phase: model.VerificationPhaseRunning}}
	if _, err := state.Put(context.Background(), h.env.Store.KV(state.Stages), state.Key("demo", "qa"), status); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.call("DELETE", "/v1/projects/demo/stages/qa/verification", nil, nil); st != http.StatusAccepted {
		t.Errorf("abort verification: %d", st)
	}
	if pv := payload[events.VerificationAbortRequested](t, wait(1)[0]); pv.Stage != "qa" {
		t.Errorf("VerificationAbortRequested: %+v", pv)
	}
	if st, _ := h.call("POST", "/v1/projects/demo/stages/qa/auto-promotion/resume", nil, nil); st != http.StatusAccepted {
		t.Errorf("resume: %d", st)
	}
	if pv := payload[events.AutoPromotionResumeRequested](t, wait(1)[0]); pv.Stage != "qa" {
		t.Errorf("AutoPromotionResumeRequested: %+v", pv)
	}
	if st, _ := h.call("POST", "/v1/projects/demo/stages/nope/auto-promotion/resume", nil, nil); st != http.StatusNotFound {
		t.Errorf("resume unknown stage: %d", st)
	}

	// Filters.
	if got := names("/v1/projects/demo/freight?warehouse=app"); len(got) != 2 {
		t.Errorf("freight of app: %v", got)
	}
	var pl struct {
		Items []model.Promotion `json:"items"`
	}
	if h.get("/v1/projects/demo/promotions?phase=Pending&stage=dev", &pl); len(pl.Items) != 2 {
		t.Errorf("pending dev promotions: %d", len(pl.Items))
	}
	if h.get("/v1/projects/demo/promotions?freight="+f2.Name, &pl); len(pl.Items) != 1 {
		t.Errorf("promotions of f2: %d", len(pl.Items))
	}
	var sl struct {
		Items []model.Stage `json:"items"`
	}
	if h.get("/v1/projects/demo/stages?warehouse=app", &sl); len(sl.Items) != 4 {
		t.Errorf("stages of app: %d", len(sl.Items))
	}
	if h.get("/v1/projects/demo/stages?warehouse=other", &sl); len(sl.Items) != 0 {
		t.Errorf("stages of other: %d", len(sl.Items))
	}
}

// Aliases stay unique under writers racing for one: of six freight renamed
// to one alias at once, one wins and the others get 409; the winner's
// previous alias is free at once; creating freight with a held alias, or
// applying a Freight manifest with one, is refused.
func TestAliasRace(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	tags := []string{"1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"}
	h.discovered(tags...)
	origin := map[string]string{"kind": "Warehouse", "name": "app"}
	names := make([]string, len(tags))
	for i, tag := range tags {
		var f model.Freight
		if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": origin, "alias": fmt.Sprintf("start-%d", i),
			"images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": tag}}}, &f); st != http.StatusCreated {
			t.Fatalf("create freight %s: %d %+v", tag, st, e)
		}
		names[i] = f.Name
	}
	statuses := make([]int, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			statuses[i], _ = h.call("PATCH", "/v1/projects/demo/freight/"+name, map[string]string{"alias": "raced"}, nil)
		})
	}
	wg.Wait()
	winner := -1
	for i, st := range statuses {
		switch {
		case st == http.StatusOK && winner < 0:
			winner = i
		case st != http.StatusConflict:
			t.Fatalf("renames to one alias: %v, want one 200 and the rest 409", statuses)
		}
	}
	if winner < 0 {
		t.Fatalf("renames to one alias: %v, nobody won", statuses)
	}
	loser := (winner + 1) % len(names)
	if st, e := h.call("PATCH", "/v1/projects/demo/freight/"+names[loser], map[string]string{"alias": fmt.Sprintf("start-%d", winner)}, nil); st != http.StatusOK {
		t.Errorf("the winner's previous alias: %d %+v", st, e)
	}
	h.discovered("2.0.0")
	if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": origin, "alias": "raced",
		"images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": "2.0.0"}}}, nil); st != http.StatusConflict {
		t.Errorf("create with a held alias: %d %+v", st, e)
	}
	manifest := fmt.Sprintf(`apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: %s, namespace: demo}
alias: raced
origin: {kind: Warehouse, name: app}
images: [{repoURL: ghcr.io/example/app, tag: 1.0.0, digest: "sha256:a000000000000000000000000000000000000000000000000000000000000000"}]
`, names[loser])
	if st, _, e := h.apply(http.MethodPost, []byte(manifest)); st != http.StatusBadRequest || len(e.Details) == 0 || e.Details[0].Field != "alias" {
		t.Errorf("apply a Freight with a held alias: %d %+v", st, e)
	}
}
