package steps

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

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
		map[string]any{"repoURL": "https://github.com/acme/gitops", "desiredRevision": "abc123", "updateTargetRevision": true,
			"kustomize": map[string]any{"images": []any{map[string]any{"repoURL": "ghcr.io/acme/guestbook", "tag": "1.4.0"}}}},
		map[string]any{"repoURL": "https://charts.acme.io", "chart": "guestbook", "desiredRevision": "0.2.0", "updateTargetRevision": true,
			"helm": map[string]any{"images": []any{map[string]any{"key": "image.tag", "value": "1.4.0"}, map[string]any{"key": "replicas", "value": "2"}}}},
	},
}}}

func TestArgoCDUpdate(t *testing.T) {
	t.Parallel()
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": application("demo:dev")}}
	sc := newContext(t, argoConfigUnderTest)
	sc.Project, sc.Stage, sc.Promotion, sc.Applications = "demo", "dev", "dev.01.abc", apps
	res, err := run(t, "argocd-update", sc)
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
	if res, _ := run(t, "argocd-update", sc); res.Status != StatusRunning || apps.updates != 1 {
		t.Fatalf("second run: %+v, %d updates", res, apps.updates)
	}
	// Argo CD (here the test) finishes the sync.
	delete(app, "operation")
	sync := map[string]any{"status": "Synced", "revisions": []any{"old000", "0.1.0"}}
	app["status"] = map[string]any{"operationState": map[string]any{"phase": "Succeeded"},
		"health": map[string]any{"status": "Healthy"}, "sync": sync}
	if res, err := run(t, "argocd-update", sc); err != nil || res.Status != "" {
		t.Fatalf("after the sync: %+v %v", res, err)
	}
	// Until Argo CD refreshed the status, it still reads the old revisions.
	if h := CheckHealth(context.Background(), apps, *res.HealthCheck); h.Status != model.HealthStateProgressing || len(h.Issues) != 1 {
		t.Fatalf("health at the old revisions %+v", h)
	}
	sync["revisions"] = []any{"abc123", "0.2.0"}
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
		_, err := run(t, "argocd-update", sc)
		if err == nil || !IsTerminal(err) || apps.updates != 0 {
			t.Fatalf("annotation %q: err %v, %d updates", ann, err, apps.updates)
		}
	}
}

func TestArgoCDUpdateSyncsAgainAfterAnotherPromotionsFailure(t *testing.T) {
	t.Parallel()
	app := application("demo:dev")
	sc := newContext(t, argoConfigUnderTest)
	sc.Project, sc.Stage, sc.Promotion = "demo", "dev", "dev.01.abc"
	var cfg argoConfig
	if err := sc.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := UpdateApplication(app, cfg.Apps[0].Sources); err != nil {
		t.Fatal(err)
	}
	RequestSync(app, "dev.00.old")
	app["status"] = map[string]any{"operationState": map[string]any{"operation": app["operation"], "phase": "Failed", "message": "boom"}}
	delete(app, "operation")
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": app}}
	sc.Applications = apps
	if res, err := run(t, "argocd-update", sc); err != nil || res.Status != StatusRunning || apps.updates != 1 {
		t.Fatalf("after dev.00.old failed: %+v %v, %d updates", res, err, apps.updates)
	}
	app = apps.apps["argocd/guestbook-dev"]
	app["status"].(map[string]any)["operationState"] = map[string]any{"operation": app["operation"], "phase": "Failed", "message": "boom"}
	delete(app, "operation")
	if res, err := run(t, "argocd-update", sc); err != nil || res.Status != model.PromotionStepStatusFailed || apps.updates != 1 {
		t.Fatalf("after its own sync failed: %+v %v, %d updates", res, err, apps.updates)
	}
}

func TestAppHealthSingleSource(t *testing.T) {
	t.Parallel()
	want := []argoSource{{RepoURL: "https://github.com/acme/gitops", DesiredRevision: "abc123"}}
	app := func(health, revision string, operation bool) map[string]any {
		a := map[string]any{
			"spec":   map[string]any{"source": map[string]any{"repoURL": "https://github.com/acme/gitops.git", "targetRevision": "abc123"}},
			"status": map[string]any{"health": map[string]any{"status": health}, "sync": map[string]any{"status": "Synced", "revision": revision}},
		}
		if operation {
			a["operation"] = map[string]any{"sync": map[string]any{}}
		}
		return a
	}
	for _, tc := range []struct {
		name string
		app  map[string]any
		want model.HealthState
	}{
		{"synced", app("Healthy", "abc123", false), model.HealthStateHealthy},
		{"old revision", app("Healthy", "old000", false), model.HealthStateProgressing},
		{"sync pending", app("Healthy", "abc123", true), model.HealthStateProgressing},
		{"degraded", app("Degraded", "abc123", false), model.HealthStateUnhealthy},
		{"no status", map[string]any{"spec": map[string]any{}}, model.HealthStateUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got, why := appHealth(tc.app, want); got != tc.want {
				t.Fatalf("%s (%s), want %s", got, why, tc.want)
			}
		})
	}
}

// Kargo's argocd-update: desiredRevision alone is what health checks
// expect; the source's targetRevision changes only with
// updateTargetRevision. An image without tag takes the freight's.
func TestArgoCDUpdateTargetRevisionAndFreightImages(t *testing.T) {
	t.Parallel()
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": application("demo:dev")}}
	sc := newContext(t, map[string]any{"apps": []any{map[string]any{"name": "guestbook-dev", "sources": []any{
		map[string]any{"repoURL": "https://github.com/acme/gitops", "desiredRevision": "abc123",
			"kustomize": map[string]any{"images": []any{map[string]any{"repoURL": "ghcr.io/acme/app"}}}},
	}}}})
	sc.Project, sc.Stage, sc.Promotion, sc.Applications = "demo", "dev", "dev.01.abc", apps
	if _, err := run(t, "argocd-update", sc); err != nil {
		t.Fatal(err)
	}
	git := apps.apps["argocd/guestbook-dev"]["spec"].(map[string]any)["sources"].([]any)[0].(map[string]any)
	if git["targetRevision"] != "main" {
		t.Errorf("targetRevision changed without updateTargetRevision: %v", git["targetRevision"])
	}
	if got := git["kustomize"].(map[string]any)["images"]; !reflect.DeepEqual(got, []any{"ghcr.io/acme/guestbook:1.0.0", "nginx:1.25", "ghcr.io/acme/app:2.0.0"}) {
		t.Errorf("images %v", got)
	}
	sc.Config = map[string]any{"apps": []any{map[string]any{"name": "guestbook-dev", "sources": []any{
		map[string]any{"repoURL": "https://github.com/acme/gitops", "updateTargetRevision": true}}}}}
	if _, err := run(t, "argocd-update", sc); err == nil || !IsTerminal(err) {
		t.Errorf("updateTargetRevision without desiredRevision: %v", err)
	}
	sc.Config = map[string]any{"apps": []any{map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}}}}}
	if _, err := run(t, "argocd-update", sc); err == nil || !strings.Contains(err.Error(), "selector: not supported by Caravan") {
		t.Errorf("a selector: %v", err)
	}
}

// argocd-wait is Running until the Applications are healthy, and fails
// once its timeout (Caravan's) has passed since it started.
func TestArgoCDWaitTimeout(t *testing.T) {
	t.Parallel()
	app := application("demo:dev")
	app["status"] = map[string]any{"health": map[string]any{"status": "Progressing"}}
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": app}}
	sc := newContext(t, map[string]any{"apps": []any{map[string]any{"name": "guestbook-dev"}}, "timeout": "10m"})
	sc.Applications, sc.StartedAt = apps, time.Now()
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != StatusRunning {
		t.Fatalf("within the timeout: %+v %v", res, err)
	}
	sc.StartedAt = time.Now().Add(-11 * time.Minute)
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != model.PromotionStepStatusFailed || !strings.Contains(res.Message, "not healthy after 10m0s") {
		t.Fatalf("past the timeout: %+v %v", res, err)
	}
	app["status"] = map[string]any{"health": map[string]any{"status": "Healthy"}, "sync": map[string]any{"status": "Synced"}}
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != "" {
		t.Fatalf("healthy: %+v %v", res, err)
	}
}

// A Kustomize image's digest and newName reach the Application as Argo
// CD writes them: "<name>=<newName>:<tag>", "<name>@<digest>".
func TestArgoCDUpdateKustomizeDigestAndNewName(t *testing.T) {
	t.Parallel()
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": application("demo:dev")}}
	sc := newContext(t, map[string]any{"apps": []any{map[string]any{"name": "guestbook-dev", "sources": []any{
		map[string]any{"repoURL": "https://github.com/acme/gitops", "kustomize": map[string]any{"images": []any{
			map[string]any{"repoURL": "ghcr.io/acme/guestbook", "digest": "sha256:0123"},
			map[string]any{"repoURL": "nginx", "newName": "mirror.example.com/nginx", "tag": "1.27"},
		}}},
	}}}})
	sc.Project, sc.Stage, sc.Promotion, sc.Applications = "demo", "dev", "dev.01.abc", apps
	if _, err := run(t, "argocd-update", sc); err != nil {
		t.Fatal(err)
	}
	git := apps.apps["argocd/guestbook-dev"]["spec"].(map[string]any)["sources"].([]any)[0].(map[string]any)
	want := []any{"ghcr.io/acme/guestbook@sha256:0123", "nginx=mirror.example.com/nginx:1.27"}
	if got := git["kustomize"].(map[string]any)["images"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("images %v, want %v", got, want)
	}
}
