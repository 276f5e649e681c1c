package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

const rollbackPipeline = `apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: demo}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: demo, namespace: demo}
spec:
  promotionPolicies:
  - stage: prod
    autoRollback: {onVerification: [Failed]}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: demo}
spec:
  interval: 24h
  subscriptions:
  - image: {repoURL: registry.invalid/demo/app}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: smoke, namespace: demo}
spec:
  metrics:
  - name: health
    successCondition: result == true
    provider:
      web:
        url: "%s/health"
        jsonPath: "{$.ok}"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: prod, namespace: demo}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: git-clone
        config:
          repoURL: %s
          checkout: [{branch: main, path: ./src}]
      - uses: kustomize-set-image
        as: update
        config:
          path: ./src/env/prod
          images: [{image: registry.invalid/demo/app}]
      - uses: git-commit
        config: {path: ./src, message: "${{ outputs.update.commitMessage }}"}
      - uses: git-push
        config: {path: ./src}
  verification:
    analysisTemplates: [{name: smoke}]
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: f1, namespace: demo}
origin: {kind: Warehouse, name: app}
images: [{repoURL: registry.invalid/demo/app, tag: 1.0.0}]
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: f2, namespace: demo}
origin: {kind: Warehouse, name: app}
images: [{repoURL: registry.invalid/demo/app, tag: 2.0.0}]
`

// getJSON GETs path and decodes the answer into v.
func (r *running) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, body := r.get(t, r.token, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// postJSON POSTs a JSON body and returns the status and the raw answer.
func (r *running) postJSON(t *testing.T, path string, body any) (int, string) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, r.url+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return resp.StatusCode, out.String()
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAutoRollbackOnFailedWebMetric runs the whole server with real
// parts: git over HTTP, the git-clone, kustomize-set-image, git-commit and
// git-push steps, and a verification whose web metric fails while the
// stage runs 2.0.0. Promoting 2.0.0 over a verified 1.0.0 rolls the stage
// back once, to 1.0.0, with one rollback commit pushed, and holds
// auto-promotion; a further failed verification does not roll back again.
func TestAutoRollbackOnFailedWebMetric(t *testing.T) {
	g := testenv.GitServer(t)
	g.CreateRepo(t, "gitops")
	g.Seed(t, "gitops", map[string]string{
		"env/prod/kustomization.yaml": "images:\n  - name: registry.invalid/demo/app\n    newTag: 0.0.0\n",
	}, "init")
	deployed := func() string {
		out, err := exec.Command("git", "--git-dir", g.Path("gitops"), "show", "main:env/prod/kustomization.yaml").Output()
		if err != nil {
			return "unreadable: " + err.Error()
		}
		return string(out)
	}
	var failAll atomic.Bool
	metric := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ok := !failAll.Load() && !strings.Contains(deployed(), "newTag: 2.0.0")
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"ok": %t}`, ok)
	}))
	t.Cleanup(metric.Close)

	r := start(t, t.TempDir(), func(c *server.Config) { c.Egress.Allow = "127.0.0.0/8" })
	defer r.stop(t)
	if code, body := r.do(t, http.MethodPost, "/v1/resources", fmt.Sprintf(rollbackPipeline, metric.URL, g.URL("gitops"))); code != http.StatusOK {
		t.Fatalf("apply: %d %v", code, body)
	}

	stage := func() model.Stage {
		var st model.Stage
		r.getJSON(t, "/v1/projects/demo/stages/prod", &st)
		return st
	}
	promotions := func() []model.Promotion {
		var out struct {
			Items []model.Promotion `json:"items"`
		}
		r.getJSON(t, "/v1/projects/demo/promotions?limit=100", &out)
		return out.Items
	}
	rollbacks := func() []model.Promotion {
		var out []model.Promotion
		for _, p := range promotions() {
			if p.Annotations[model.AnnotationRollback] != "" {
				out = append(out, p)
			}
		}
		return out
	}
	// current returns the stage's freight and its newest verification's
	// phase.
	current := func() (string, model.VerificationPhase) {
		st := stage()
		if len(st.Status.FreightHistory) == 0 {
			return "", ""
		}
		fc := st.Status.FreightHistory[0]
		name := ""
		for _, ref := range fc.Freight {
			name = ref.Name
		}
		if len(fc.VerificationHistory) == 0 {
			return name, ""
		}
		return name, fc.VerificationHistory[0].Phase
	}
	describe := func() string {
		f, ph := current()
		var ps []string
		for _, p := range promotions() {
			ps = append(ps, fmt.Sprintf("%s(%s %s %s)", p.Name, p.Spec.Freight, p.Status.Phase, p.Status.Message))
		}
		return fmt.Sprintf("stage on %q verification %q; promotions %v", f, ph, ps)
	}
	promote := func(freight string) {
		t.Helper()
		if code, body := r.postJSON(t, "/v1/projects/demo/stages/prod/promotions", map[string]string{"freight": freight}); code != http.StatusCreated {
			t.Fatalf("promote %s: %d %s", freight, code, body)
		}
	}

	promote("f1")
	waitFor(t, 2*time.Minute, func() bool { f, ph := current(); return f == "f1" && ph == model.VerificationPhaseSuccessful },
		func() string { return "f1 verified in prod: " + describe() })
	promote("f2")
	var f2Commit string
	waitFor(t, 2*time.Minute, func() bool {
		if strings.Contains(deployed(), "newTag: 2.0.0") && f2Commit == "" {
			f2Commit = g.Head(t, "gitops")
		}
		rbs := rollbacks() // once: the list may change between two reads
		return len(rbs) == 1 && rbs[0].Status.Phase == model.PromotionPhaseSucceeded
	}, func() string { return "one successful rollback: " + describe() })
	if f2Commit == "" {
		t.Fatalf("2.0.0 never reached the remote: %s", deployed())
	}
	rb := rollbacks()[0]
	if rb.Spec.Freight != "f1" || rb.Annotations[model.AnnotationPromotionCreatedBy] != "auto-rollback" {
		t.Fatalf("rollback to %s by %q, want f1 by auto-rollback", rb.Spec.Freight, rb.Annotations[model.AnnotationPromotionCreatedBy])
	}
	if !strings.Contains(deployed(), "newTag: 1.0.0") {
		t.Errorf("remote after the rollback:\n%s", deployed())
	}
	since := func() string {
		return strings.TrimSpace(g.Run(t, g.Path("gitops"), "rev-list", "--count", f2Commit+"..main"))
	}
	if n := since(); n != "1" {
		t.Errorf("%s commits after 2.0.0's, want 1 (the rollback)", n)
	}
	if st := stage(); !st.Status.Held(model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}) {
		t.Errorf("auto-promotion not held after the rollback: %+v", st.Status.AutoPromotionHolds)
	}
	waitFor(t, 2*time.Minute, func() bool { f, ph := current(); return f == "f1" && ph == model.VerificationPhaseSuccessful },
		func() string { return "f1 verified again after the rollback: " + describe() })

	// A further failure (f1's verification now fails too) does not roll
	// back again.
	failAll.Store(true)
	if code, body := r.postJSON(t, "/v1/projects/demo/stages/prod/verification", map[string]string{}); code != http.StatusAccepted {
		t.Fatalf("verify: %d %s", code, body)
	}
	waitFor(t, 2*time.Minute, func() bool { f, ph := current(); return f == "f1" && ph == model.VerificationPhaseFailed },
		func() string { return "f1's second verification failed: " + describe() })
	time.Sleep(3 * time.Second) // room for a wrong rollback to show
	if n := len(rollbacks()); n != 1 {
		t.Errorf("%d rollbacks after a further failure, want 1: %s", n, describe())
	}
	if n := len(promotions()); n != 3 {
		t.Errorf("%d promotions, want 3 (f1, f2, the rollback): %s", n, describe())
	}
	if n := since(); n != "1" {
		t.Errorf("%s commits after 2.0.0's after a further failure, want 1", n)
	}
	var recs struct {
		Items []struct {
			Object    string `json:"object"`
			Automatic bool   `json:"automatic"`
		} `json:"items"`
	}
	r.getJSON(t, "/v1/projects/demo/audit?action=rollback", &recs)
	if len(recs.Items) != 1 || !recs.Items[0].Automatic {
		t.Errorf("rollback audit records: %+v", recs.Items)
	}
}
