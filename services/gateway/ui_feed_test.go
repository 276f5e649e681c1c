package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway"
)

// TestUIFeedMatchesReadingAnew changes a project in every way the pipeline
// shows (a stage's status, a running promotion, freight moving, a new
// stage, a deleted one, the ProjectConfig) and checks after each change
// that the UI kept current by the feed renders exactly what a UI reading
// the project anew renders: the same graph and the same cards (the digest
// fragment hashes each card).
func TestUIFeedMatchesReadingAnew(t *testing.T) {
	t.Parallel()
	var deps gateway.Deps
	h := uiHarness(t, func(d *gateway.Deps) { deps = *d })
	deps.UIReadsAnew = true
	anew, err := gateway.NewHandler(t.Context(), deps)
	if err != nil {
		t.Fatal(err)
	}
	cookie := sessionCookie(t, h)
	get := func(handler http.Handler, path string) string {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Cookie", cookie)
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, w.Code, w.Body)
		}
		return w.Body.String()
	}
	same := func(step string, wantCards ...string) {
		t.Helper()
		var fed, read map[string]string
		for _, v := range []struct {
			h   http.Handler
			out *map[string]string
		}{{h.srv.Config.Handler, &fed}, {anew, &read}} {
			if err := json.Unmarshal([]byte(get(v.h, "/projects/demo?fragment=digest")), v.out); err != nil {
				t.Fatalf("%s: digest: %v", step, err)
			}
		}
		if len(fed) != len(read) {
			t.Errorf("%s: %d digests kept current, %d read anew: %v vs %v", step, len(fed), len(read), fed, read)
		}
		for k, v := range read {
			if fed[k] != v {
				t.Errorf("%s: %s differs: kept current %q, read anew %q", step, k, fed[k], v)
			}
		}
		for _, c := range wantCards {
			if _, ok := fed["card-"+c]; !ok {
				t.Errorf("%s: no card %s in %v", step, c, fed)
			}
		}
		// A single card as a live update fetches it.
		for _, c := range wantCards {
			p := "/projects/demo?fragment=card&stage=" + c
			if a, b := get(h.srv.Config.Handler, p), get(anew, p); a != b {
				t.Errorf("%s: card %s differs:\n%s\nread anew:\n%s", step, c, a, b)
			}
		}
	}
	same("at first", "dev", "staging", "prod")
	get(h.srv.Config.Handler, "/projects/demo") // the whole page, cached from here on

	ctx := context.Background()
	var f model.Freight
	if st := h.get("/v1/projects/demo/freight/brave-fox", &f); st != http.StatusOK {
		t.Fatalf("freight: %d", st)
	}
	now := time.Now().UTC()

	// A promotion starts running.
	p := &model.Promotion{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion},
		ObjectMeta: model.ObjectMeta{Name: "dev.p1", Namespace: "demo"}, Spec: model.PromotionSpec{Stage: "dev", Freight: f.Name,
			Steps: []model.PromotionStep{{Uses: "git-clone"}, {Uses: "git-push"}}},
		Status: model.PromotionStatus{Phase: model.PromotionPhaseRunning, CurrentStep: 1}}
	rev, err := h.env.Store.PutObject(ctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	same("promotion running", "dev")

	// It succeeds: the stage holds the freight, verified and healthy, and
	// the freight is in dev.
	p.Status.Phase = model.PromotionPhaseSucceeded
	if _, err := h.env.Store.PutObject(ctx, p, rev); err != nil {
		t.Fatal(err)
	}
	ref := model.FreightReference{Name: f.Name, Origin: f.Origin, Images: f.Images}
	status := model.StageStatus{Phase: model.StagePhaseSteady, Health: &model.Health{Status: model.HealthStateHealthy},
		FreightHistory: []model.FreightCollection{{ID: "c1", Freight: map[string]model.FreightReference{f.Origin.String(): ref},
			VerificationHistory: []model.VerificationInfo{{ID: "v1", Phase: model.VerificationPhaseSuccessful}}}}}
	if _, err := state.Put(ctx, h.env.Store.KV(state.Stages), state.Key("demo", "dev"), status); err != nil {
		t.Fatal(err)
	}
	fr, err := strconv.ParseUint(f.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	f.Status.CurrentlyIn = map[string]model.CurrentStage{"dev": {Since: model.NewTime(now)}}
	f.Status.VerifiedIn = map[string]model.VerifiedStage{"dev": {VerifiedAt: model.NewTime(now)}}
	if _, err := h.env.Store.PutObject(ctx, &f, fr); err != nil {
		t.Fatal(err)
	}
	same("promoted and verified", "dev", "staging")

	// A stage is added, one deleted, and a ProjectConfig turns
	// auto-promotion on for staging.
	h.mustApply([]byte(`apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: qa, namespace: demo, annotations: {kargo.akuity.io/color: red}}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {stages: [dev], requiredSoakTime: 1h}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: demo, namespace: demo}
spec:
  promotionPolicies:
  - stage: staging
    autoPromotionEnabled: true
`))
	same("stage added, project config", "dev", "staging", "qa")
	if st, body, _ := h.do("DELETE", "/v1/resources", token, "application/yaml", []byte("apiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {name: prod, namespace: demo}\n")); st >= 300 {
		t.Fatalf("delete prod: %d %s", st, body)
	}
	same("stage deleted", "dev", "staging", "qa")
}
