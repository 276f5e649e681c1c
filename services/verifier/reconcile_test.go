package verifier

import (
	"context"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/verification"
)

// succeeded records, as the promoter does, that promotion p of freight
// succeeded on stage and was announced, without publishing
// PromotionSucceeded (the event is lost).
func (h *harness) succeeded(stage, freight, p string) {
	h.t.Helper()
	h.promoted(stage, freight, model.HealthStateHealthy)
	_, _, err := state.Update(context.Background(), h.env.Store.KV(state.Stages), state.Key(project, stage), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
		ref := model.FreightReference{Name: freight, Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}}
		s.LastPromotion = &model.PromotionReference{Name: p, Freight: &ref, Status: &model.PromotionStatus{Phase: model.PromotionPhaseSucceeded}}
		return s, nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	promotion := &model.Promotion{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion},
		ObjectMeta: model.ObjectMeta{Name: p, Namespace: project, Annotations: map[string]string{model.AnnotationPromotionAnnounced: "true"}},
		Spec:       model.PromotionSpec{Stage: stage, Freight: freight},
		Status:     model.PromotionStatus{Phase: model.PromotionPhaseSucceeded},
	}
	h.apply(promotion)
}

// A stage whose PromotionSucceeded was lost is verified anyway: the
// reconciler starts the verification; a stage without verification is
// qualified the same way.
func TestLostPromotionSucceededIsVerified(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app := newMetricServer(t, "ok")
	h.apply(smokeSecret(), smokeTemplate(1, ""), stage("qa", nil, "", smokeVerification(app.URL)), stage("plain", nil, "", nil))
	h.freight("f1")
	h.succeeded("qa", "f1", "qa-p1")
	h.succeeded("plain", "f1", "plain-p1")
	h.startWith("v1", func(c *Config) { c.ReconcileInterval = 300 * time.Millisecond })
	if ev := h.verified("qa", "qa-p1"); ev.Phase != string(analysis.PhaseSuccessful) {
		t.Fatalf("StageVerified %+v", ev)
	}
	if ev := h.verified("plain", "plain-p1"); ev.Phase != string(analysis.PhaseSuccessful) {
		t.Fatalf("StageVerified %+v", ev)
	}
	time.Sleep(time.Second) // more passes: nothing is verified twice
	if r := h.record("qa", "qa-p1"); r.Attempts != 1 {
		t.Fatalf("attempts %d", r.Attempts)
	}
}

// A verification interrupted by its replica stopping is continued by
// another replica from the measurements saved so far: it ends with all of
// them, not with a run started over.
func TestInterruptedVerificationKeepsItsMeasurements(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app := newMetricServer(t, "ok")
	const count = 4
	h.apply(smokeSecret(), smokeTemplate(count, "400ms"), stage("qa", nil, "", smokeVerification(app.URL)))
	h.freight("f1")
	h.promoted("qa", "f1", model.HealthStateHealthy)
	v1 := h.start("v1")
	id := h.promote("qa", "f1")
	h.waitRecord("qa", id, func(r verification.Record) bool {
		return r.Result != nil && len(r.Result.Metrics) == 1 && r.Result.Metrics[0].Taken == 2
	})
	v1.stop(t) // the record keeps v1's lease until it lapses
	h.start("v2")
	if ev := h.verified("qa", id); ev.Phase != string(analysis.PhaseSuccessful) {
		t.Fatalf("StageVerified %+v", ev)
	}
	r := h.waitRecord("qa", id, func(r verification.Record) bool { return r.Applied })
	m := r.Result.Metrics[0]
	if r.Holder != "v2" || r.Attempts != 2 || m.Count != count || m.Taken != count || len(m.Measurements) != count {
		t.Fatalf("owner %s, attempts %d, metric %+v", r.Holder, r.Attempts, m)
	}
	app.mu.Lock()
	requests := app.requests
	app.mu.Unlock()
	// A measurement in flight when v1 stopped may be taken again.
	if requests > count+1 {
		t.Fatalf("%d measurements taken for a count of %d: the run started over", requests, count)
	}
}
