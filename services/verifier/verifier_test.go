package verifier

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/verification"
)

func TestVerificationQualifiesFreight(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app := newMetricServer(t, "ok")
	h.apply(smokeSecret(), smokeTemplate(2, "50ms"), stage("qa", nil, "", smokeVerification(app.URL)))
	h.freight("f1")
	h.promoted("qa", "f1", model.HealthStateHealthy)
	h.start("v1")

	id := h.promote("qa", "f1")
	ev := h.verified("qa", id)
	if ev.Phase != string(analysis.PhaseSuccessful) || ev.Freight != "f1" {
		t.Fatalf("StageVerified %+v", ev)
	}
	if !strings.Contains(ev.Summary, "smoke/health: Successful") {
		t.Errorf("summary %q", ev.Summary)
	}
	if n := h.events.count(func(e events.Envelope) bool { return e.Type == events.TypeVerificationStarted }); n != 1 {
		t.Errorf("%d VerificationStarted, want 1", n)
	}
	f := h.getFreight("f1")
	if v, ok := f.Status.VerifiedIn["qa"]; !ok || v.VerifiedAt == nil {
		t.Fatalf("verifiedIn = %+v", f.Status.VerifiedIn)
	}
	// Arguments: the path came from ${{ ctx.stage }}, the token from a Secret.
	app.mu.Lock()
	paths := slices.Clone(app.paths)
	app.mu.Unlock()
	if len(paths) != 2 || paths[0] != "/qa/healthz" {
		t.Errorf("requests %v, want 2 to /qa/healthz", paths)
	}
	st := h.stageStatus("qa")
	hist := st.FreightHistory[0].VerificationHistory
	if len(hist) != 1 || hist[0].ID != id || hist[0].Phase != model.VerificationPhaseSuccessful || hist[0].FinishTime == nil || hist[0].AnalysisRun == nil {
		t.Fatalf("verification history %+v", hist)
	}
}

func TestStageWithoutVerificationWaitsForHealth(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.apply(stage("dev", nil, "", nil))
	h.freight("f1")
	h.promoted("dev", "f1", model.HealthStateProgressing)
	h.start("v1")

	id := h.promote("dev", "f1")
	h.waitRecord("dev", id, func(r verification.Record) bool { return r.Holder == "v1" })
	time.Sleep(300 * time.Millisecond) // a few health polls
	if r := h.record("dev", id); r.Phase != analysis.PhasePending {
		t.Fatalf("verification %s while the stage is progressing", r.Phase)
	}
	if h.getFreight("f1").IsVerifiedIn("dev") {
		t.Fatal("freight verified while the stage is progressing")
	}
	h.setHealth("dev", model.HealthStateHealthy)
	if ev := h.verified("dev", id); ev.Phase != string(analysis.PhaseSuccessful) {
		t.Fatalf("StageVerified %+v", ev)
	}
	if !h.getFreight("f1").IsVerifiedIn("dev") {
		t.Fatal("freight not verified")
	}
	if n := len(h.stageStatus("dev").FreightHistory[0].VerificationHistory); n != 0 {
		t.Errorf("stage without verification has %d history entries", n)
	}
}

func TestFailedReverificationRevokesQualification(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app := newMetricServer(t, "ok")
	h.apply(smokeSecret(), smokeTemplate(0, ""), stage("qa", nil, "", smokeVerification(app.URL)))
	h.freight("f1")
	h.promoted("qa", "f1", model.HealthStateHealthy)
	h.start("v1")

	first := h.promote("qa", "f1")
	if ev := h.verified("qa", first); ev.Phase != string(analysis.PhaseSuccessful) {
		t.Fatalf("first verification %+v", ev)
	}
	if !h.getFreight("f1").IsVerifiedIn("qa") {
		t.Fatal("not verified after the first verification")
	}

	app.set("degraded", false)
	req := h.publish("qa", events.VerificationRequested{Stage: "qa"})
	second := "reverify-" + strings.ToLower(req.ID)
	ev := h.verified("qa", second)
	if ev.Phase != string(analysis.PhaseFailed) || !strings.Contains(ev.Message, "failed (1) > failureLimit (0)") {
		t.Fatalf("re-verification %+v", ev)
	}
	if h.getFreight("f1").IsVerifiedIn("qa") {
		t.Fatal("a failed re-verification left the freight verified (Kargo #5144)")
	}
	hist := h.stageStatus("qa").FreightHistory[0].VerificationHistory
	if len(hist) != 2 || hist[0].ID != second || hist[0].Phase != model.VerificationPhaseFailed || hist[1].ID != first {
		t.Fatalf("history (newest first) %+v", hist)
	}
	if hist[0].Actor != "test" && hist[0].Actor == "" {
		t.Errorf("actor %q", hist[0].Actor)
	}

	// And a passing re-verification qualifies it again.
	app.set("ok", false)
	req = h.publish("qa", events.VerificationRequested{Stage: "qa"})
	if ev := h.verified("qa", "reverify-"+strings.ToLower(req.ID)); ev.Phase != string(analysis.PhaseSuccessful) {
		t.Fatalf("third verification %+v", ev)
	}
	if !h.getFreight("f1").IsVerifiedIn("qa") {
		t.Fatal("not verified again")
	}
}

func TestAbortVerification(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app := newMetricServer(t, "ok")
	app.set("ok", true) // every measurement hangs
	h.apply(smokeSecret(), smokeTemplate(0, ""), stage("qa", nil, "", smokeVerification(app.URL)))
	h.freight("f1")
	h.promoted("qa", "f1", model.HealthStateHealthy)
	h.start("v1")

	id := h.promote("qa", "f1")
	<-app.arrived
	h.publish("qa", events.VerificationAbortRequested{Stage: "qa"})
	ev := h.verified("qa", id)
	if ev.Phase != string(analysis.PhaseAborted) || ev.Message != "aborted on request" {
		t.Fatalf("StageVerified %+v", ev)
	}
	if h.getFreight("f1").IsVerifiedIn("qa") {
		t.Fatal("aborted verification qualified the freight")
	}
	hist := h.stageStatus("qa").FreightHistory[0].VerificationHistory
	if len(hist) != 1 || hist[0].Phase != model.VerificationPhaseAborted {
		t.Fatalf("history %+v", hist)
	}
}

func TestNewPromotionSupersedesRunningVerification(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app := newMetricServer(t, "ok")
	app.set("ok", true)
	h.apply(smokeSecret(), smokeTemplate(0, ""), stage("qa", nil, "", smokeVerification(app.URL)))
	h.freight("f1")
	h.freight("f2")
	h.promoted("qa", "f1", model.HealthStateHealthy)
	h.start("v1")

	first := h.promote("qa", "f1")
	<-app.arrived
	app.set("ok", false)
	h.promoted("qa", "f2", model.HealthStateHealthy)
	second := h.promote("qa", "f2")
	if ev := h.verified("qa", first); ev.Phase != string(analysis.PhaseAborted) || !strings.Contains(ev.Message, "superseded") {
		t.Fatalf("first %+v", ev)
	}
	if ev := h.verified("qa", second); ev.Phase != string(analysis.PhaseSuccessful) || ev.Freight != "f2" {
		t.Fatalf("second %+v", ev)
	}
}

func TestTakeoverAfterReplicaStops(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app := newMetricServer(t, "ok")
	app.set("ok", true) // the first measurement hangs until its replica stops
	h.apply(smokeSecret(), smokeTemplate(0, ""), stage("qa", nil, "", smokeVerification(app.URL)))
	h.freight("f1")
	h.promoted("qa", "f1", model.HealthStateHealthy)
	replicas := map[string]*replica{"v1": h.start("v1"), "v2": h.start("v2")}

	id := h.promote("qa", "f1")
	<-app.arrived
	owner := h.record("qa", id).Holder
	app.set("ok", false)
	replicas[owner].stop(t) // killed mid-run: the record keeps its lease until it lapses

	ev := h.verified("qa", id)
	if ev.Phase != string(analysis.PhaseSuccessful) {
		t.Fatalf("StageVerified %+v", ev)
	}
	r := h.waitRecord("qa", id, func(r verification.Record) bool { return r.Applied })
	if r.Holder == owner || r.Attempts != 2 || !r.Applied {
		t.Fatalf("record owner %s (stopped %s), attempts %d, applied %v", r.Holder, owner, r.Attempts, r.Applied)
	}
	time.Sleep(300 * time.Millisecond) // a scan or two: nothing runs it again
	if n := h.events.count(func(e events.Envelope) bool { return e.Type == events.TypeStageVerified }); n != 1 {
		t.Fatalf("%d StageVerified published, want 1", n)
	}
	if !h.getFreight("f1").IsVerifiedIn("qa") {
		t.Fatal("freight not verified")
	}
}

// TestFanOutFanIn: staging fans out to test-a and test-b, each verified;
// prod-gate (a control-flow stage) needs both (availabilityStrategy All),
// and prod takes freight verified in prod-gate.
func TestFanOutFanIn(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app := newMetricServer(t, "ok")
	gate := stage("prod-gate", []string{"test-a", "test-b"}, model.AvailabilityStrategyAll, nil)
	prod := stage("prod", []string{"prod-gate"}, "", nil)
	h.apply(smokeSecret(), smokeTemplate(0, ""),
		stage("staging", nil, "", nil),
		stage("test-a", []string{"staging"}, "", smokeVerification(app.URL)),
		stage("test-b", []string{"staging"}, "", smokeVerification(app.URL)),
		gate, prod)
	h.freight("f1")
	h.start("v1")
	gate.Default()
	prod.Default()

	step := func(name string) {
		t.Helper()
		h.promoted(name, "f1", model.HealthStateHealthy)
		if ev := h.verified(name, h.promote(name, "f1")); ev.Phase != string(analysis.PhaseSuccessful) {
			t.Fatalf("%s: %+v", name, ev)
		}
	}
	available := func(s *model.Stage) (bool, string) {
		f := h.getFreight("f1")
		return model.FreightAvailable(f, s, time.Now())
	}

	step("staging")
	step("test-a")
	if ok, why := available(gate); ok {
		t.Fatalf("available to prod-gate after test-a alone: %s", why)
	}
	if ok, _ := available(prod); ok {
		t.Fatal("available to prod before prod-gate")
	}
	step("test-b")
	if ok, why := available(gate); !ok {
		t.Fatalf("not available to prod-gate after test-a and test-b: %s", why)
	}
	if ok, _ := available(prod); ok {
		t.Fatal("available to prod before prod-gate verified it")
	}
	step("prod-gate")
	if ok, why := available(prod); !ok {
		t.Fatalf("not available to prod: %s", why)
	}
}

func TestTemplateKindsAndErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app := newMetricServer(t, "ok")
	cluster := &model.ClusterAnalysisTemplate{
		TypeMeta:   model.TypeMeta{APIVersion: model.ArgoAPIVersion, Kind: model.KindClusterAnalysisTemplate},
		ObjectMeta: model.ObjectMeta{Name: "cluster-smoke"},
		Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{{
			Name: "up", SuccessCondition: `result == "unauthorized"`, // no token sent
			Provider: model.MetricProvider{Web: &model.WebMetric{URL: app.URL + "/", JSONPath: "{$.status}"}},
		}}},
	}
	// Argo Rollouts' template composition: spec.templates folds other
	// templates in, here one that only includes the cluster template, and
	// one that includes itself.
	composite := &model.AnalysisTemplate{
		TypeMeta:   model.TypeMeta{APIVersion: model.ArgoAPIVersion, Kind: model.KindAnalysisTemplate},
		ObjectMeta: model.ObjectMeta{Name: "composite", Namespace: project},
		Spec:       model.AnalysisTemplateSpec{Templates: []model.AnalysisTemplateRef{{TemplateName: "cluster-smoke", ClusterScope: true}}},
	}
	loop := &model.AnalysisTemplate{
		TypeMeta:   model.TypeMeta{APIVersion: model.ArgoAPIVersion, Kind: model.KindAnalysisTemplate},
		ObjectMeta: model.ObjectMeta{Name: "loop", Namespace: project},
		Spec:       model.AnalysisTemplateSpec{Templates: []model.AnalysisTemplateRef{{TemplateName: "loop"}}},
	}
	h.apply(cluster, composite, loop,
		stage("cluster", nil, "", &model.Verification{AnalysisTemplates: []model.AnalysisTemplateReference{{Name: "cluster-smoke", Kind: model.KindClusterAnalysisTemplate}}}),
		stage("missing", nil, "", &model.Verification{AnalysisTemplates: []model.AnalysisTemplateReference{{Name: "nope"}}}),
		stage("composite", nil, "", &model.Verification{AnalysisTemplates: []model.AnalysisTemplateReference{{Name: "composite"}}}),
		stage("loop", nil, "", &model.Verification{AnalysisTemplates: []model.AnalysisTemplateReference{{Name: "loop"}}}),
	)
	h.freight("f1")
	h.start("v1")
	tests := []struct {
		stage   string
		want    analysis.Phase
		wantMsg string
	}{
		{"cluster", analysis.PhaseSuccessful, ""},
		{"missing", analysis.PhaseError, `AnalysisTemplate "nope"`},
		{"composite", analysis.PhaseSuccessful, ""},
		{"loop", analysis.PhaseError, "include each other"},
	}
	for _, tt := range tests {
		h.promoted(tt.stage, "f1", model.HealthStateHealthy)
		ev := h.verified(tt.stage, h.promote(tt.stage, "f1"))
		if ev.Phase != string(tt.want) || !strings.Contains(ev.Message, tt.wantMsg) {
			t.Errorf("%s: %+v", tt.stage, ev)
		}
		hist := h.stageStatus(tt.stage).FreightHistory[0].VerificationHistory
		if len(hist) != 1 || hist[0].Phase != model.VerificationPhase(tt.want) {
			t.Errorf("%s: history %+v", tt.stage, hist)
		}
	}
	if !h.getFreight("f1").IsVerifiedIn("cluster") || h.getFreight("f1").IsVerifiedIn("missing") {
		t.Errorf("verifiedIn %v", h.getFreight("f1").Status.VerifiedIn)
	}
}

// TestAbortOnAnyReplica: the abort request reaches whichever replica its
// consumer delivers to; the owner stops at once (leases here are too long
// for a renewal to be what notices).
func TestAbortOnAnyReplica(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app := newMetricServer(t, "ok")
	app.set("ok", true)
	h.apply(smokeSecret(), smokeTemplate(0, ""), stage("qa", nil, "", smokeVerification(app.URL)))
	h.freight("f1")
	h.promoted("qa", "f1", model.HealthStateHealthy)
	long := func(c *Config) { c.LeaseTTL = time.Minute }
	h.startWith("v1", long)
	h.startWith("v2", long)

	id := h.promote("qa", "f1")
	<-app.arrived
	h.publish("qa", events.VerificationAbortRequested{Stage: "qa"})
	if ev := h.verified("qa", id); ev.Phase != string(analysis.PhaseAborted) {
		t.Fatalf("StageVerified %+v", ev)
	}
}
