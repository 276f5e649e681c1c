package steps

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

// fakeApps is a hand-written Applications holding objects in memory.
type fakeApps struct {
	mu      sync.Mutex
	apps    map[string]map[string]any
	updates int
}

func (f *fakeApps) Get(_ context.Context, ns, name string) (map[string]any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.apps[ns+"/"+name]
	if !ok {
		return nil, errors.New("not found")
	}
	return deepCopy(a), nil
}

func (f *fakeApps) Update(_ context.Context, ns string, app map[string]any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := app["metadata"].(map[string]any)["name"].(string)
	f.apps[ns+"/"+name] = deepCopy(app)
	f.updates++
	return nil
}

func deepCopy(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

func application(stage string) map[string]any {
	return deepCopy(map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
		"metadata": map[string]any{"name": "guestbook-dev", "namespace": "argocd",
			"annotations": map[string]any{AnnotationAuthorizedStage: stage}},
		"spec": map[string]any{"sources": []any{
			map[string]any{"repoURL": "https://github.com/acme/gitops.git", "targetRevision": "main", "path": "env/dev",
				"kustomize": map[string]any{"images": []any{"ghcr.io/acme/guestbook:1.0.0", "nginx:1.25"}}},
			map[string]any{"repoURL": "https://charts.acme.io", "chart": "guestbook", "targetRevision": "0.1.0",
				"helm": map[string]any{"parameters": []any{map[string]any{"name": "image.tag", "value": "1.0.0"}}}},
		}},
	})
}

var argoConfigUnderTest = map[string]any{"apps": []any{map[string]any{
	"name": "guestbook-dev",
	"sources": []any{
		map[string]any{"repoURL": "https://github.com/acme/gitops", "desiredRevision": "abc123",
			"kustomize": map[string]any{"images": []any{map[string]any{"repoURL": "ghcr.io/acme/guestbook", "tag": "1.4.0"}}}},
		map[string]any{"repoURL": "https://charts.acme.io", "chart": "guestbook", "desiredRevision": "0.2.0",
			"helm": map[string]any{"images": []any{map[string]any{"key": "image.tag", "value": "1.4.0"}, map[string]any{"key": "replicas", "value": "2"}}}},
	},
}}}

func TestArgoCDUpdate(t *testing.T) {
	t.Parallel()
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": application("demo:dev")}}
	sc := newContext(t, argoConfigUnderTest)
	sc.Project, sc.Stage, sc.Promotion, sc.Applications = "demo", "dev", "dev.01.abc", apps
	res, err := argocdUpdate(context.Background(), sc)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusRunning || res.HealthCheck == nil || res.HealthCheck.Uses != "argocd-update" {
		t.Fatalf("first run: %+v", res)
	}
	app := apps.apps["argocd/guestbook-dev"]
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
	if _, ok := app["operation"].(map[string]any)["sync"]; !ok {
		t.Fatal("no sync was requested")
	}
	// While the sync runs, nothing is patched again.
	if res, _ := argocdUpdate(context.Background(), sc); res.Status != StatusRunning || apps.updates != 1 {
		t.Fatalf("second run: %+v, %d updates", res, apps.updates)
	}
	// Argo CD (here the test) finishes the sync.
	delete(app, "operation")
	app["status"] = map[string]any{"operationState": map[string]any{"phase": "Succeeded"},
		"health": map[string]any{"status": "Healthy"}, "sync": map[string]any{"status": "Synced"}}
	if res, err := argocdUpdate(context.Background(), sc); err != nil || res.Status != "" {
		t.Fatalf("after the sync: %+v %v", res, err)
	}
	if h := CheckHealth(context.Background(), apps, *res.HealthCheck); h.Status != model.HealthStateHealthy {
		t.Fatalf("health %+v", h)
	}
	app["status"].(map[string]any)["health"] = map[string]any{"status": "Degraded"}
	if h := CheckHealth(context.Background(), apps, *res.HealthCheck); h.Status != model.HealthStateUnhealthy || len(h.Issues) != 1 {
		t.Fatalf("degraded health %+v", h)
	}
}

func TestArgoCDUpdateNeedsAuthorizedStage(t *testing.T) {
	t.Parallel()
	for _, ann := range []string{"", "demo:prod", "other:dev"} {
		apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": application(ann)}}
		sc := newContext(t, argoConfigUnderTest)
		sc.Project, sc.Stage, sc.Applications = "demo", "dev", apps
		_, err := argocdUpdate(context.Background(), sc)
		if err == nil || !IsTerminal(err) || apps.updates != 0 {
			t.Fatalf("annotation %q: err %v, %d updates", ann, err, apps.updates)
		}
	}
}
