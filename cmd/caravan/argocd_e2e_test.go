//go:build e2e

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// kubeREST is a minimal JSON client of the test's kube-apiserver.
type kubeREST struct {
	t    *testing.T
	kube *testenv.Kube
	hc   *http.Client
}

func (k *kubeREST) do(ctx context.Context, method, path string, body any) (int, map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.kube.URL+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.kube.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, nil
}

// must is do, failing the test on an error or an unexpected status.
func (k *kubeREST) must(method, path string, body any, want int) map[string]any {
	k.t.Helper()
	st, out, err := k.do(context.Background(), method, path, body)
	if err != nil || st != want {
		k.t.Fatalf("%s %s: %d %v %v", method, path, st, err, out)
	}
	return out
}

const appsPath = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications"

// TestArgoCDE2E promotes through argocd-update and argocd-wait from the
// shipped binary: `caravan server` built by the test, CARAVAN_KUBECONFIG
// pointed at a real kube-apiserver holding Argo CD's Application CRD. No
// Argo CD controller runs here (no kubelet, no repo server): a goroutine
// of the test stands in for it, and marks a requested sync Succeeded,
// synced at the source's targetRevision and Healthy. The desired revision
// is not configured: it is the commit of the freight, as Kargo derives
// it. A stage the Application's annotation does not list fails.
func TestArgoCDE2E(t *testing.T) {
	start := time.Now()
	kube := testenv.KubeAPIServer(t)
	k := &kubeREST{t: t, kube: kube, hc: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}} //nolint:gosec // self-signed test server
	installApplicationCRD(t, k)
	k.must("POST", "/api/v1/namespaces", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "argocd"}}, http.StatusCreated)

	bin, repoRoot := buildCaravan(t)
	s := startDemo(t, bin, repoRoot, "CARAVAN_DEMO_PUSH_INTERVAL=0", "CARAVAN_DATA_DIR="+filepath.Join(t.TempDir(), "data"),
		"CARAVAN_KUBECONFIG="+kube.Kubeconfig, "CARAVAN_ARGOCD_HEALTH_SETTLE=1s", "CARAVAN_HEALTH_INTERVAL=1s")
	gitURL := "http://" + s.addrs[2] + "/deploy.git"
	t.Logf("kube-apiserver, build and server ready after %s", time.Since(start).Round(time.Second))

	k.must("POST", appsPath, map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
		"metadata": map[string]any{"name": "guestbook", "namespace": "argocd",
			"annotations": map[string]any{"kargo.akuity.io/authorized-stage": "argo:dev"}},
		"spec": map[string]any{
			"project":     "default",
			"source":      map[string]any{"repoURL": gitURL, "targetRevision": "main", "path": "overlays/dev"},
			"destination": map[string]any{"server": "https://kubernetes.default.svc", "namespace": "guestbook"},
			"syncPolicy":  map[string]any{"syncOptions": []any{"CreateNamespace=true"}},
		},
	}, http.StatusCreated)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu  sync.Mutex
		ops []map[string]any
	)
	go fakeApplicationController(ctx, k, func(op map[string]any) {
		mu.Lock()
		defer mu.Unlock()
		ops = append(ops, op)
	})

	pipeline := fmt.Sprintf(`apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: argo
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: deploy
  namespace: argo
spec:
  interval: 5m
  subscriptions:
  - git:
      repoURL: %[1]s
      branch: main
---
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionTask
metadata:
  name: sync
  namespace: argo
spec:
  steps:
  - uses: argocd-update
    config:
      apps:
      - name: guestbook
        sources:
        - repoURL: %[1]s
          updateTargetRevision: true
  - uses: argocd-wait
    config:
      apps:
      - name: guestbook
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: dev
  namespace: argo
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: deploy}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - task: {name: sync}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: rogue
  namespace: argo
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: deploy}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - task: {name: sync}
`, gitURL)
	file := filepath.Join(t.TempDir(), "argo.yaml")
	if err := os.WriteFile(file, []byte(pipeline), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := s.cli("apply", "-f", file); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var commit, freight string
	for deadline := time.Now().Add(time.Minute); commit == ""; time.Sleep(500 * time.Millisecond) {
		for _, f := range s.freight("argo") {
			if len(f.Commits) == 1 {
				commit, freight = f.Commits[0].ID, f.Name
			}
		}
		if commit == "" && time.Now().After(deadline) {
			t.Fatal("no freight of warehouse deploy within 1 min")
		}
	}

	pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer pcancel()
	out, err := s.commandContext(pctx, "promote", "-p", "argo", "--stage", "dev", "--freight", freight, "--wait").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "succeeded") {
		t.Fatalf("promote dev: %v\n%s", err, out)
	}
	t.Logf("freight %s promoted to dev after %s", freight, time.Since(start).Round(time.Second))
	app := k.must("GET", appsPath+"/guestbook", nil, http.StatusOK)
	if rev := dig[string](app, "spec", "source", "targetRevision"); rev != commit {
		t.Errorf("targetRevision %q, want the freight's commit %s", rev, commit)
	}
	if ann := dig[map[string]any](app, "metadata", "annotations"); ann["argocd.argoproj.io/refresh"] != "hard" {
		t.Errorf("annotations %v: no hard refresh asked for", ann)
	}
	mu.Lock()
	if len(ops) != 1 {
		t.Errorf("%d syncs requested, want 1: %v", len(ops), ops)
	} else {
		op := ops[0]
		by := dig[map[string]any](op, "initiatedBy")
		// A person asked for the promotion (the CLI's local admin): the
		// sync is theirs, not automated, so that sync windows apply.
		if by["automated"] != false || by["username"] == "" || by["username"] == "caravan" {
			t.Errorf("initiatedBy %v", by)
		}
		var promotion string
		for _, i := range dig[[]any](op, "info") {
			if m := i.(map[string]any); m["name"] == "kargo.akuity.io/promotion" {
				promotion, _ = m["value"].(string)
			}
		}
		if !strings.HasPrefix(promotion, "dev.") {
			t.Errorf("operation info %v names no promotion of dev", op["info"])
		}
		if opts := dig[[]any](op, "sync", "syncOptions"); len(opts) != 1 || opts[0] != "CreateNamespace=true" {
			t.Errorf("sync options %v", opts)
		}
	}
	mu.Unlock()

	// The stage's health follows the Application's.
	stageHealth := func() *model.Health {
		out, err := s.cli("get", "stage", "dev", "-p", "argo", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var st model.Stage
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return st.Status.Health
	}
	waitHealth := func(want model.HealthState, says string) {
		t.Helper()
		var h *model.Health
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
			if h = stageHealth(); h != nil && h.Status == want && strings.Contains(strings.Join(h.Issues, "; "), says) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("stage health %+v, want %s saying %q", h, want, says)
			}
		}
	}
	waitHealth(model.HealthStateHealthy, "")
	app = k.must("GET", appsPath+"/guestbook", nil, http.StatusOK)
	app["status"].(map[string]any)["health"] = map[string]any{"status": "Degraded", "message": "back-off restarting failed container"}
	k.must("PUT", appsPath+"/guestbook", app, http.StatusOK)
	waitHealth(model.HealthStateUnhealthy, "argocd/guestbook: the Application is Degraded: back-off")

	// rogue is not listed in the Application's annotation.
	rv := dig[string](k.must("GET", appsPath+"/guestbook", nil, http.StatusOK), "metadata", "resourceVersion")
	out, err = s.commandContext(pctx, "promote", "-p", "argo", "--stage", "rogue", "--freight", freight, "--wait").CombinedOutput()
	if err == nil {
		t.Fatalf("promote rogue succeeded:\n%s", out)
	}
	promos, err := s.cli("get", "promotions", "-p", "argo", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Items []model.Promotion `json:"items"`
	}
	if err := json.Unmarshal([]byte(promos), &list); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range list.Items {
		if p.Spec.Stage == "rogue" {
			found = true
			if p.Status.Phase != model.PromotionPhaseErrored || !strings.Contains(p.Status.Message, "kargo.akuity.io/authorized-stage") || !strings.Contains(p.Status.Message, `"argo:rogue"`) {
				t.Errorf("rogue promotion %s: %s", p.Status.Phase, p.Status.Message)
			}
		}
	}
	if !found {
		t.Errorf("no promotion of rogue:\n%s", out)
	}
	if got := dig[string](k.must("GET", appsPath+"/guestbook", nil, http.StatusOK), "metadata", "resourceVersion"); got != rv {
		t.Errorf("the unauthorized promotion changed the Application (resourceVersion %s -> %s)", rv, got)
	}
}

// fakeApplicationController stands in for Argo CD's application
// controller, which cannot run here: it runs every sync an Application's
// operation requests, as the controller records one (operationState with
// the operation, Succeeded, finishedAt, the revision synced: the source's
// targetRevision, which a real controller resolves to a commit), then
// reconciles (sync status, health Healthy, reconciledAt). seen gets each
// operation.
func fakeApplicationController(ctx context.Context, k *kubeREST, seen func(op map[string]any)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		st, app, err := k.do(ctx, "GET", appsPath+"/guestbook", nil)
		op, _ := app["operation"].(map[string]any)
		if err != nil || st != http.StatusOK || op == nil {
			continue
		}
		rev := dig[string](app, "spec", "source", "targetRevision")
		now := time.Now().UTC().Format(time.RFC3339)
		status, _ := app["status"].(map[string]any)
		if status == nil {
			status = map[string]any{}
			app["status"] = status
		}
		status["operationState"] = map[string]any{"operation": op, "phase": "Succeeded", "message": "successfully synced (all tasks run)",
			"startedAt": now, "finishedAt": now, "syncResult": map[string]any{"revision": rev}}
		status["sync"] = map[string]any{"status": "Synced", "revision": rev}
		status["health"] = map[string]any{"status": "Healthy"}
		status["reconciledAt"] = now
		delete(app, "operation")
		if st, _, err := k.do(ctx, "PUT", appsPath+"/guestbook", app); err == nil && st == http.StatusOK {
			seen(op)
		}
	}
}

// installApplicationCRD installs a minimal Application CRD shaped like Argo
// CD's (namespaced; spec, status and operation kept as given; no status
// subresource) and waits until it is served.
func installApplicationCRD(t *testing.T, k *kubeREST) {
	t.Helper()
	open := map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	k.must("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "applications.argoproj.io"},
		"spec": map[string]any{
			"group": "argoproj.io", "scope": "Namespaced",
			"names": map[string]any{"kind": "Application", "listKind": "ApplicationList", "plural": "applications", "singular": "application"},
			"versions": []any{map[string]any{
				"name": "v1alpha1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object",
					"properties": map[string]any{
						"apiVersion": map[string]any{"type": "string"}, "kind": map[string]any{"type": "string"},
						"metadata": map[string]any{"type": "object"}, "spec": open, "status": open, "operation": open,
					},
				}},
			}},
		},
	}, http.StatusCreated)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if st, _, err := k.do(context.Background(), "GET", appsPath, nil); err == nil && st == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the Application CRD is not served after 30 s")
		}
	}
}
