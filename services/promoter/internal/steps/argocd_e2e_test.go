//go:build e2e

package steps

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

var (
	crdGVR       = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	namespaceGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

// TestArgoCDE2E runs argocd-update and argocd-wait against a real API
// server holding a minimal Argo CD Application CRD. No Argo CD controller
// runs here (no kubelet, no repo server), so the test writes the
// Application's status itself, as the controller would after a sync.
func TestArgoCDE2E(t *testing.T) {
	kube := testenv.KubeAPIServer(t)
	rc, err := clientcmd.BuildConfigFromFlags("", kube.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	installApplicationCRD(ctx, t, dc)
	create(ctx, t, dc, namespaceGVR, "", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "argocd"}})

	// guestbook-dev was deployed by an earlier promotion: synced and
	// healthy at the old revisions.
	dev := application("demo:dev")
	dev["status"] = argoStatus("Healthy", "old000", "0.1.0")
	create(ctx, t, dc, applicationsGVR, "argocd", dev)
	for name, ann := range map[string]string{"guestbook-prod": "demo:prod", "guestbook-other": "other:dev", "guestbook-none": ""} {
		a := application(ann)
		md := a["metadata"].(map[string]any)
		md["name"] = name
		if ann == "" {
			delete(md, "annotations")
		}
		create(ctx, t, dc, applicationsGVR, "argocd", a)
	}

	apps := KubeApplications(dc)
	registry := Builtins()
	promotion := "dev.01.abc"
	run := func(step string, cfg map[string]any) (Result, error) {
		t.Helper()
		sc := newContext(t, cfg)
		sc.Project, sc.Stage, sc.Promotion, sc.Applications = "demo", "dev", promotion, apps
		return Run(ctx, registry[step], sc)
	}
	get := func(name string) map[string]any {
		t.Helper()
		app, err := apps.Get(ctx, "argocd", name)
		if err != nil {
			t.Fatal(err)
		}
		return app
	}
	health := func(check *model.HealthCheckStep, want model.HealthState) model.Health {
		t.Helper()
		h := CheckHealth(ctx, apps, *check, 0)
		if h.Status != want {
			t.Fatalf("health of %s: %+v, want %s", check.Uses, h, want)
		}
		return h
	}

	t.Run("update", func(t *testing.T) {
		res, err := run("argocd-update", argoConfigUnderTest)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != StatusRunning || res.HealthCheck == nil || res.HealthCheck.Uses != "argocd-update" {
			t.Fatalf("first run: %+v", res)
		}
		app := get("guestbook-dev")
		sources := app["spec"].(map[string]any)["sources"].([]any)
		git, chart := sources[0].(map[string]any), sources[1].(map[string]any)
		if git["targetRevision"] != "abc123" || chart["targetRevision"] != "0.2.0" {
			t.Fatalf("revisions: %v / %v", git["targetRevision"], chart["targetRevision"])
		}
		if got := git["kustomize"].(map[string]any)["images"]; !reflect.DeepEqual(got, []any{"ghcr.io/acme/guestbook:1.4.0", "nginx:1.25"}) {
			t.Fatalf("kustomize images %v", got)
		}
		want := []any{map[string]any{"name": "image.tag", "value": "1.4.0"}, map[string]any{"name": "replicas", "value": "2"}}
		if got := chart["helm"].(map[string]any)["parameters"]; !reflect.DeepEqual(got, want) {
			t.Fatalf("helm parameters %v", got)
		}
		// The sync request survived the API server (not pruned by the
		// schema), as the Argo CD controller would read it.
		op, _ := app["operation"].(map[string]any)
		if _, ok := op["sync"].(map[string]any); !ok {
			t.Fatalf("no sync was requested: operation %v", app["operation"])
		}
		if nestedString(op, "initiatedBy", "username") != "caravan" || !strings.Contains(nestedString(app, "status", "sync", "status"), "Synced") {
			t.Fatalf("operation %v, status %v", op, app["status"])
		}
		if promotionOf(op) != "dev.01.abc" || nestedString(app, "metadata", "annotations", AnnotationRefresh) != "hard" {
			t.Fatalf("operation info %v, annotations %v", op["info"], app["metadata"])
		}

		// While the sync is pending nothing is written again, and neither
		// the wait nor the health check takes the old status for the new
		// revisions.
		rv := app["metadata"].(map[string]any)["resourceVersion"]
		if res, err := run("argocd-update", argoConfigUnderTest); err != nil || res.Status != StatusRunning {
			t.Fatalf("second run: %+v %v", res, err)
		}
		if got := get("guestbook-dev")["metadata"].(map[string]any)["resourceVersion"]; got != rv {
			t.Fatalf("the second run wrote the Application (resourceVersion %v -> %v)", rv, got)
		}
		if res, err := run("argocd-wait", argoConfigUnderTest); err != nil || res.Status != StatusRunning {
			t.Fatalf("wait before the sync: %+v %v", res, err)
		}
		health(res.HealthCheck, model.HealthStateProgressing)

		// Argo CD (here the test) runs the sync: it clears the operation
		// and records its result, then, on its next reconciliation, the
		// sync and health status: until then health is not trusted.
		setStatus(ctx, t, dc, "guestbook-dev", func(app map[string]any) {
			finishSync(app, "Succeeded", "successfully synced (all tasks run)", "abc123", "0.2.0")
		})
		res, err = run("argocd-update", argoConfigUnderTest)
		if err != nil || res.Status != "" || res.HealthCheck == nil {
			t.Fatalf("after the sync: %+v %v", res, err)
		}
		if res, err := run("argocd-wait", argoConfigUnderTest); err != nil || res.Status != StatusRunning || !strings.Contains(res.Message, "not reconciled") {
			t.Fatalf("wait before the refresh: %+v %v", res, err)
		}
		health(res.HealthCheck, model.HealthStateUnknown)
		setStatus(ctx, t, dc, "guestbook-dev", func(app map[string]any) {
			refresh(app, "Healthy", "abc123", "0.2.0")
		})
		health(res.HealthCheck, model.HealthStateHealthy)
		waited, err := run("argocd-wait", argoConfigUnderTest)
		if err != nil || waited.Status != "" || waited.HealthCheck == nil || waited.HealthCheck.Uses != "argocd-wait" {
			t.Fatalf("wait after the sync: %+v %v", waited, err)
		}
		health(waited.HealthCheck, model.HealthStateHealthy)

		setStatus(ctx, t, dc, "guestbook-dev", func(app map[string]any) {
			app["status"].(map[string]any)["health"] = map[string]any{"status": "Degraded", "message": "back-off restarting"}
		})
		for _, check := range []*model.HealthCheckStep{res.HealthCheck, waited.HealthCheck} {
			h := health(check, model.HealthStateUnhealthy)
			if len(h.Issues) != 1 || !strings.Contains(h.Issues[0], "argocd/guestbook-dev") || !strings.Contains(h.Issues[0], "Degraded") {
				t.Fatalf("issues %q", h.Issues)
			}
		}
		// Degraded after its sync settled: the wait fails at once.
		if res, err := run("argocd-wait", argoConfigUnderTest); err != nil || res.Status != model.PromotionStepStatusFailed || !strings.Contains(res.Message, "Degraded after its sync") {
			t.Fatalf("wait while degraded: %+v %v", res, err)
		}
	})

	// A sync that failed for an earlier promotion is not this one's
	// verdict: argocd-update syncs again, though nothing changed, and
	// fails on its own sync's failure.
	t.Run("failed sync", func(t *testing.T) {
		promotion = "dev.02.def"
		defer func() { promotion = "dev.01.abc" }()
		setStatus(ctx, t, dc, "guestbook-dev", func(app map[string]any) {
			app["status"].(map[string]any)["operationState"].(map[string]any)["phase"] = "Failed"
		})
		if res, err := run("argocd-update", argoConfigUnderTest); err != nil || res.Status != StatusRunning {
			t.Fatalf("after an earlier failure: %+v %v", res, err)
		}
		app := get("guestbook-dev")
		if op, _ := app["operation"].(map[string]any); promotionOf(op) != "dev.02.def" {
			t.Fatalf("no sync for dev.02.def was requested: operation %v", app["operation"])
		}
		setStatus(ctx, t, dc, "guestbook-dev", func(app map[string]any) {
			finishSync(app, "Failed", "one or more objects failed to apply", "abc123", "0.2.0")
		})
		res, err := run("argocd-update", argoConfigUnderTest)
		if err != nil || res.Status != model.PromotionStepStatusFailed || !strings.Contains(res.Message, "failed to apply") {
			t.Fatalf("after its own failure: %+v %v", res, err)
		}
	})

	t.Run("unauthorized", func(t *testing.T) {
		for name, ann := range map[string]string{"guestbook-prod": "demo:prod", "guestbook-other": "other:dev", "guestbook-none": ""} {
			before := get(name)
			cfg := map[string]any{"apps": []any{map[string]any{"name": name, "sources": argoConfigUnderTest["apps"].([]any)[0].(map[string]any)["sources"]}}}
			_, err := run("argocd-update", cfg)
			if err == nil || !IsTerminal(err) {
				t.Fatalf("%s: err %v, want a terminal error", name, err)
			}
			for _, want := range []string{"argocd/" + name, "not authorized for stage dev", AnnotationAuthorizedStage, `"` + ann + `"`, `"demo:dev"`} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("%s: error %q does not say %s", name, err, want)
				}
			}
			if after := get(name); !reflect.DeepEqual(after, before) {
				t.Fatalf("%s was changed:\n%v\n%v", name, before, after)
			}
		}
	})

	// A label selector reaches the Applications the API server lists for
	// it, and of those only the ones whose annotation lists the stage; the
	// sync carries each one's syncPolicy retry and syncOptions.
	t.Run("selector", func(t *testing.T) {
		retry := map[string]any{"limit": int64(3), "backoff": map[string]any{"duration": "5s", "factor": int64(2), "maxDuration": "3m"}}
		for name, ann := range map[string]string{"web-a": "demo:test, demo:dev", "web-b": "demo:prod"} {
			a := application(ann)
			a["metadata"].(map[string]any)["name"] = name
			a["metadata"].(map[string]any)["labels"] = map[string]any{"app.kubernetes.io/name": "web"}
			a["spec"].(map[string]any)["syncPolicy"] = map[string]any{"retry": retry, "syncOptions": []any{"CreateNamespace=true"}}
			create(ctx, t, dc, applicationsGVR, "argocd", a)
		}
		before := get("web-b")
		selector := map[string]any{"matchExpressions": []any{map[string]any{"key": "app.kubernetes.io/name", "operator": "In", "values": []any{"web", "api"}}}}
		sources := []any{map[string]any{"repoURL": "https://github.com/acme/gitops", "desiredRevision": "fed987", "updateTargetRevision": true}}
		res, err := run("argocd-update", map[string]any{"apps": []any{map[string]any{"selector": selector, "sources": sources}}})
		if err != nil || res.Status != StatusRunning || !strings.Contains(res.Message, "web-a") || strings.Contains(res.Message, "web-b") {
			t.Fatalf("update: %+v %v", res, err)
		}
		app := get("web-a")
		if rev := app["spec"].(map[string]any)["sources"].([]any)[0].(map[string]any)["targetRevision"]; rev != "fed987" {
			t.Fatalf("web-a targetRevision %v", rev)
		}
		op := app["operation"].(map[string]any)
		if !reflect.DeepEqual(op["retry"], retry) || !reflect.DeepEqual(op["sync"].(map[string]any)["syncOptions"], []any{"CreateNamespace=true"}) {
			t.Fatalf("web-a operation %v", op)
		}
		if after := get("web-b"); !reflect.DeepEqual(after, before) {
			t.Fatalf("web-b, not authorized, was changed:\n%v\n%v", before, after)
		}

		wait := map[string]any{"apps": []any{map[string]any{"selector": selector, "waitFor": []any{"operation", "sync"}}}}
		if res, err := run("argocd-wait", wait); err != nil || res.Status != StatusRunning || !strings.Contains(res.Message, "argocd/web-a: a sync is pending") {
			t.Fatalf("wait while the sync is pending: %+v %v", res, err)
		}
		setStatus(ctx, t, dc, "web-a", func(app map[string]any) {
			finishSync(app, "Succeeded", "successfully synced (all tasks run)", "fed987", "0.1.0")
			app["status"].(map[string]any)["sync"] = map[string]any{"status": "Synced", "revisions": []any{"fed987", "0.1.0"}}
		})
		// Health is not waited for: web-a has none yet.
		if res, err := run("argocd-wait", wait); err != nil || res.Status != "" {
			t.Fatalf("wait after the sync: %+v %v", res, err)
		}
		h := health(res.HealthCheck, model.HealthStateUnknown)
		if len(h.Issues) != 1 || !strings.Contains(h.Issues[0], "argocd/web-a") {
			t.Fatalf("health issues %q", h.Issues)
		}
	})

	t.Run("missing", func(t *testing.T) {
		cfg := map[string]any{"apps": []any{map[string]any{"name": "nope"}}}
		_, err := run("argocd-update", cfg)
		if !apierrors.IsNotFound(err) || IsTerminal(err) {
			t.Fatalf("err %v, want a retryable not-found error", err)
		}
	})
}

// argoStatus is an Application's status after a sync of a two-source
// Application to the given revisions, as Argo CD writes it.
func argoStatus(health, gitRevision, chartVersion string) map[string]any {
	return map[string]any{
		"operationState": map[string]any{
			"phase": "Succeeded", "message": "successfully synced (all tasks run)",
			"syncResult": map[string]any{"revisions": []any{gitRevision, chartVersion}},
		},
		"sync":   map[string]any{"status": "Synced", "revisions": []any{gitRevision, chartVersion}},
		"health": map[string]any{"status": health},
	}
}

// installApplicationCRD installs a minimal Application CRD shaped like Argo
// CD's: namespaced, spec, status and operation kept as given. Like Argo
// CD's, it has no status subresource: the controller writes status through
// the main resource.
func installApplicationCRD(ctx context.Context, t *testing.T, dc dynamic.Interface) {
	t.Helper()
	open := map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}
	create(ctx, t, dc, crdGVR, "", map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "applications.argoproj.io"},
		"spec": map[string]any{
			"group": "argoproj.io", "scope": "Namespaced",
			"names": map[string]any{"kind": "Application", "listKind": "ApplicationList", "plural": "applications", "singular": "application", "shortNames": []any{"app", "apps"}},
			"versions": []any{map[string]any{
				"name": "v1alpha1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type": "object", "required": []any{"metadata", "spec"},
					"properties": map[string]any{
						"apiVersion": map[string]any{"type": "string"},
						"kind":       map[string]any{"type": "string"},
						"metadata":   map[string]any{"type": "object"},
						"spec":       open, "status": open, "operation": open,
					},
				}},
			}},
		},
	})
	for {
		crd, err := dc.Resource(crdGVR).Get(ctx, "applications.argoproj.io", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
				// Established is set a moment before the resource is served.
				if _, err := dc.Resource(applicationsGVR).Namespace("argocd").List(ctx, metav1.ListOptions{}); err == nil {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the Application CRD is not established: %v", conds)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func create(ctx context.Context, t *testing.T, dc dynamic.Interface, gvr schema.GroupVersionResource, namespace string, obj map[string]any) {
	t.Helper()
	var err error
	if namespace == "" {
		_, err = dc.Resource(gvr).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	} else {
		_, err = dc.Resource(gvr).Namespace(namespace).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatalf("create %s: %v", gvr.Resource, err)
	}
}

// setStatus changes an Application as the Argo CD controller would.
func setStatus(ctx context.Context, t *testing.T, dc dynamic.Interface, name string, change func(app map[string]any)) {
	t.Helper()
	u, err := dc.Resource(applicationsGVR).Namespace("argocd").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	change(u.Object)
	if _, err := dc.Resource(applicationsGVR).Namespace("argocd").Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
