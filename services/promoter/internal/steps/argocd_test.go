package steps

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/caravan-cd/caravan/pkg/model"
)

// fakeApps is a hand-written Applications holding objects in memory.
type fakeApps struct {
	mu      sync.Mutex
	apps    map[string]map[string]any
	updates int
	// conflicts is how many updates fail with a conflict first.
	conflicts int
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

func (f *fakeApps) List(_ context.Context, ns, selector string) ([]map[string]any, error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []map[string]any
	for key, a := range f.apps {
		md, _ := a["metadata"].(map[string]any)
		set := labels.Set{}
		l, _ := md["labels"].(map[string]any)
		for k, v := range l {
			set[k], _ = v.(string)
		}
		if strings.HasPrefix(key, ns+"/") && sel.Matches(set) {
			out = append(out, deepCopy(a))
		}
	}
	return out, nil
}

func (f *fakeApps) Update(_ context.Context, ns string, app map[string]any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := app["metadata"].(map[string]any)["name"].(string)
	if f.conflicts > 0 {
		f.conflicts--
		return apierrors.NewConflict(schema.GroupResource{Group: "argoproj.io", Resource: "applications"}, name, errors.New("the object has been modified"))
	}
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
	// Argo CD (here the test) runs the sync; until it reconciled the
	// Application again, its health is not trusted.
	finishSync(app, "Succeeded", "successfully synced", "abc123", "0.2.0")
	if res, err := run(t, "argocd-update", sc); err != nil || res.Status != "" || apps.updates != 1 {
		t.Fatalf("after the sync: %+v %v, %d updates", res, err, apps.updates)
	}
	if h := CheckHealth(context.Background(), apps, *res.HealthCheck, 0); h.Status != model.HealthStateUnknown || len(h.Issues) != 1 || !strings.Contains(h.Issues[0], "not reconciled") {
		t.Fatalf("health before the refresh %+v", h)
	}
	refresh(app, "Healthy", "abc123", "0.2.0")
	if h := CheckHealth(context.Background(), apps, *res.HealthCheck, 0); h.Status != model.HealthStateHealthy {
		t.Fatalf("health %+v", h)
	}
	// Within the settling window after a sync, health is not trusted yet.
	if h := CheckHealth(context.Background(), apps, *res.HealthCheck, time.Hour); h.Status != model.HealthStateProgressing || !strings.Contains(h.Issues[0], "trusted 1h0m0s after a sync") {
		t.Fatalf("health while settling %+v", h)
	}
	app["status"].(map[string]any)["health"] = map[string]any{"status": "Degraded", "message": "back-off"}
	if h := CheckHealth(context.Background(), apps, *res.HealthCheck, 0); h.Status != model.HealthStateUnhealthy || len(h.Issues) != 1 || !strings.Contains(h.Issues[0], "Degraded: back-off") {
		t.Fatalf("degraded health %+v", h)
	}
}

// finishSync ends the sync an Application's operation asks for, as the Argo
// CD controller does: it moves the operation into status.operationState
// with its result and finish time. Sync and health status change on its
// next reconciliation (refresh).
func finishSync(app map[string]any, phase, message string, revisions ...any) {
	status, _ := app["status"].(map[string]any)
	if status == nil {
		status = map[string]any{}
		app["status"] = status
	}
	now := time.Now().UTC().Format(time.RFC3339)
	status["operationState"] = map[string]any{
		"operation": app["operation"], "phase": phase, "message": message,
		"startedAt": now, "finishedAt": now,
		"syncResult": map[string]any{"revisions": revisions},
	}
	delete(app, "operation")
}

// refresh is Argo CD's reconciliation after a sync: health and sync status
// of the revisions synced, reconciledAt.
func refresh(app map[string]any, health string, revisions ...any) {
	status := app["status"].(map[string]any)
	status["reconciledAt"] = time.Now().UTC().Format(time.RFC3339)
	status["health"] = map[string]any{"status": health}
	status["sync"] = map[string]any{"status": "Synced", "revisions": revisions}
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
	RequestSync(app, "dev.00.old", "")
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
	now := time.Now()
	at := func(d time.Duration) string { return now.Add(d).UTC().Format(time.RFC3339) }
	app := func(health, revision string, operation bool, change ...func(status map[string]any)) map[string]any {
		a := map[string]any{
			"spec":   map[string]any{"source": map[string]any{"repoURL": "https://github.com/acme/gitops.git", "targetRevision": "abc123"}},
			"status": map[string]any{"health": map[string]any{"status": health}, "sync": map[string]any{"status": "Synced", "revision": revision}},
		}
		if operation {
			a["operation"] = map[string]any{"sync": map[string]any{}}
		}
		for _, c := range change {
			c(a["status"].(map[string]any))
		}
		return a
	}
	synced := func(revision, finished, reconciled string) func(map[string]any) {
		return func(st map[string]any) {
			st["operationState"] = map[string]any{"phase": "Succeeded", "finishedAt": finished, "syncResult": map[string]any{"revision": revision}}
			st["reconciledAt"] = reconciled
		}
	}
	for _, tc := range []struct {
		name string
		app  map[string]any
		want model.HealthState
	}{
		{"synced", app("Healthy", "abc123", false), model.HealthStateHealthy},
		{"old revision, no sync yet", app("Healthy", "old000", false), model.HealthStateProgressing},
		{"sync pending", app("Healthy", "abc123", true), model.HealthStateProgressing},
		{"sync running", app("Healthy", "abc123", false, func(st map[string]any) { st["operationState"] = map[string]any{"phase": "Running"} }), model.HealthStateProgressing},
		{"degraded", app("Degraded", "abc123", false), model.HealthStateUnhealthy},
		{"unknown health", app("Unknown", "abc123", false), model.HealthStateUnhealthy},
		{"suspended", app("Suspended", "abc123", false), model.HealthStateProgressing},
		{"comparison error", app("Healthy", "abc123", false, func(st map[string]any) {
			st["conditions"] = []any{map[string]any{"type": "ComparisonError", "message": "no repo"}}
		}), model.HealthStateUnhealthy},
		{"synced by a sync", app("Healthy", "abc123", false, synced("abc123", at(-time.Minute), at(-time.Minute))), model.HealthStateHealthy},
		{"synced at another revision", app("Healthy", "abc123", false, synced("fff999", at(-time.Minute), at(0))), model.HealthStateUnhealthy},
		{"not reconciled since the sync", app("Healthy", "abc123", false, synced("abc123", at(-time.Minute), at(-2*time.Minute))), model.HealthStateUnknown},
		{"settling", app("Healthy", "abc123", false, synced("abc123", at(-2*time.Second), at(0))), model.HealthStateProgressing},
		{"no status", map[string]any{"spec": map[string]any{}}, model.HealthStateUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got, why := appHealth(tc.app, want, 10*time.Second, now); got != tc.want {
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
}

// argocd-wait is Running until the Applications are healthy, and fails
// once its timeout (Caravan's) has passed since it started.
func TestArgoCDWaitTimeout(t *testing.T) {
	t.Parallel()
	app := application("demo:dev")
	app["status"] = map[string]any{"health": map[string]any{"status": "Progressing"}}
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": app}}
	sc := newContext(t, map[string]any{"apps": []any{map[string]any{"name": "guestbook-dev"}}, "timeout": "10m"})
	sc.Project, sc.Stage, sc.Applications, sc.StartedAt = "demo", "dev", apps, time.Now()
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != StatusRunning {
		t.Fatalf("within the timeout: %+v %v", res, err)
	}
	sc.StartedAt = time.Now().Add(-11 * time.Minute)
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != model.PromotionStepStatusFailed || !strings.Contains(res.Message, "not ready after 10m0s") {
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

// The authorized-stage annotation lists stages, comma-separated, as Kargo
// reads it; glob patterns, which Kargo dropped, and malformed entries are
// refused with an error naming the annotation.
func TestAuthorizedStages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		annotation string
		ok         bool
		says       string
	}{
		{"demo:dev", true, ""},
		{"demo:test,demo:dev", true, ""},
		{" demo:test , demo:dev ,", true, ""},
		{"demo:prod", false, "not authorized for stage dev"},
		{"", false, "not authorized for stage dev"},
		{"other:dev,demo:test", false, "not authorized for stage dev"},
		{"demo:*", false, "glob pattern"},
		{"*:*,demo:dev", false, "glob pattern"},
		{"demo", false, "is not <project>:<stage>"},
		{"demo:dev,:dev", false, "is not <project>:<stage>"},
	} {
		err := authorized(application(tc.annotation), "demo", "dev")
		if (err == nil) != tc.ok || (err != nil && (!strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), AnnotationAuthorizedStage))) {
			t.Errorf("%q: %v", tc.annotation, err)
		}
	}
}

func labelled(name, stage string, l map[string]any) map[string]any {
	app := application(stage)
	app["metadata"].(map[string]any)["name"] = name
	app["metadata"].(map[string]any)["labels"] = l
	return app
}

// A selector updates every Application of the namespace it matches that
// the stage is authorized for, and registers a health check of each by
// name; unauthorized ones are left alone.
func TestArgoCDUpdateSelector(t *testing.T) {
	t.Parallel()
	apps := &fakeApps{apps: map[string]map[string]any{
		"argocd/web-a":      labelled("web-a", "demo:dev", map[string]any{"app": "web", "tier": "front"}),
		"argocd/web-b":      labelled("web-b", "demo:test, demo:dev", map[string]any{"app": "web"}),
		"argocd/web-prod":   labelled("web-prod", "demo:prod", map[string]any{"app": "web"}),
		"argocd/api":        labelled("api", "demo:dev", map[string]any{"app": "api"}),
		"elsewhere/web-dev": labelled("web-dev", "demo:dev", map[string]any{"app": "web"}),
	}}
	sources := []any{map[string]any{"repoURL": "https://github.com/acme/gitops", "desiredRevision": "abc123", "updateTargetRevision": true}}
	sc := newContext(t, map[string]any{"apps": []any{map[string]any{
		"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}, "matchExpressions": []any{
			map[string]any{"key": "tier", "operator": "NotIn", "values": []any{"back"}}}},
		"sources": sources,
	}}})
	sc.Project, sc.Stage, sc.Promotion, sc.Applications = "demo", "dev", "dev.01.abc", apps
	res, err := run(t, "argocd-update", sc)
	if err != nil || res.Status != StatusRunning {
		t.Fatalf("%+v %v", res, err)
	}
	rev := func(key string) any {
		return apps.apps[key]["spec"].(map[string]any)["sources"].([]any)[0].(map[string]any)["targetRevision"]
	}
	for key, want := range map[string]string{"argocd/web-a": "abc123", "argocd/web-b": "abc123", "argocd/web-prod": "main", "argocd/api": "main", "elsewhere/web-dev": "main"} {
		if got := rev(key); got != want {
			t.Errorf("%s: targetRevision %v, want %s", key, got, want)
		}
	}
	var names []string
	for _, a := range res.HealthCheck.Config["apps"].([]any) {
		names = append(names, a.(map[string]any)["name"].(string))
	}
	slices.Sort(names)
	if !reflect.DeepEqual(names, []string{"web-a", "web-b"}) {
		t.Fatalf("health check of %v", names)
	}
	if h := CheckHealth(context.Background(), apps, *res.HealthCheck, 0); h.Status != model.HealthStateProgressing || len(h.Issues) != 2 {
		t.Fatalf("health %+v", h)
	}

	for _, tc := range []struct {
		name      string
		selector  map[string]any
		terminal  bool
		says      string
		namespace string
	}{
		{"nothing matches", map[string]any{"matchLabels": map[string]any{"app": "nope"}}, false, "no Application of namespace argocd matches", ""},
		{"none authorized", map[string]any{"matchLabels": map[string]any{"app": "web"}}, true, AnnotationAuthorizedStage, ""},
		{"bad operator", map[string]any{"matchExpressions": []any{map[string]any{"key": "app", "operator": "Like"}}}, true, "apps[0].selector: matchExpressions[0].operator", ""},
		{"empty", map[string]any{}, true, "apps[0].selector: needs matchLabels or matchExpressions", ""},
	} {
		sc := newContext(t, map[string]any{"apps": []any{map[string]any{"selector": tc.selector, "sources": sources}}})
		sc.Project, sc.Stage, sc.Applications = "demo", "dev", apps
		if tc.name == "none authorized" {
			sc.Stage = "qa"
		}
		_, err := run(t, "argocd-update", sc)
		if err == nil || IsTerminal(err) != tc.terminal || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	sc = newContext(t, map[string]any{"apps": []any{map[string]any{"name": "api", "selector": map[string]any{"matchLabels": map[string]any{"app": "web"}}}}})
	sc.Project, sc.Stage, sc.Applications = "demo", "dev", apps
	if _, err := run(t, "argocd-update", sc); err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), "name or selector, not both") {
		t.Errorf("name and selector: %v", err)
	}
}

// When one of the selected Applications lacks a source to update, none
// is changed.
func TestArgoCDUpdateSelectorChecksAllFirst(t *testing.T) {
	t.Parallel()
	other := labelled("web-b", "demo:dev", map[string]any{"app": "web"})
	other["spec"].(map[string]any)["sources"] = []any{map[string]any{"repoURL": "https://github.com/acme/other.git", "targetRevision": "main"}}
	apps := &fakeApps{apps: map[string]map[string]any{
		"argocd/web-a": labelled("web-a", "demo:dev", map[string]any{"app": "web"}),
		"argocd/web-b": other,
	}}
	sc := newContext(t, map[string]any{"apps": []any{map[string]any{
		"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
		"sources":  []any{map[string]any{"repoURL": "https://github.com/acme/gitops", "desiredRevision": "abc123", "updateTargetRevision": true}},
	}}})
	sc.Project, sc.Stage, sc.Applications = "demo", "dev", apps
	_, err := run(t, "argocd-update", sc)
	if err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), "argocd/web-b") || apps.updates != 0 {
		t.Fatalf("err %v, %d updates", err, apps.updates)
	}
}

// Like Kargo, the sync argocd-update asks for carries the Application's
// syncPolicy retry and syncOptions.
func TestArgoCDUpdateSyncOptions(t *testing.T) {
	t.Parallel()
	app := application("demo:dev")
	retry := map[string]any{"limit": float64(5), "backoff": map[string]any{"duration": "5s", "factor": float64(2)}}
	app["spec"].(map[string]any)["syncPolicy"] = map[string]any{"retry": retry, "syncOptions": []any{"CreateNamespace=true", "ServerSideApply=true"}}
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": app}}
	sc := newContext(t, argoConfigUnderTest)
	sc.Project, sc.Stage, sc.Promotion, sc.Applications = "demo", "dev", "dev.01.abc", apps
	if _, err := run(t, "argocd-update", sc); err != nil {
		t.Fatal(err)
	}
	op := apps.apps["argocd/guestbook-dev"]["operation"].(map[string]any)
	if !reflect.DeepEqual(op["retry"], retry) || !reflect.DeepEqual(op["sync"].(map[string]any)["syncOptions"], []any{"CreateNamespace=true", "ServerSideApply=true"}) {
		t.Fatalf("operation %v", op)
	}
	// Without a syncPolicy, the sync has no options.
	apps.apps["argocd/guestbook-dev"] = application("demo:dev")
	if _, err := run(t, "argocd-update", sc); err != nil {
		t.Fatal(err)
	}
	op = apps.apps["argocd/guestbook-dev"]["operation"].(map[string]any)
	if _, ok := op["retry"]; ok || len(op["sync"].(map[string]any)) != 0 {
		t.Fatalf("operation %v", op)
	}
}

// argocd-wait's waitFor as Kargo documents it: health conditions ORed,
// the others ANDed, health, sync and operation by default.
func TestArgoCDWaitFor(t *testing.T) {
	t.Parallel()
	status := func(health, sync string, running bool) map[string]any {
		st := map[string]any{"health": map[string]any{"status": health}, "sync": map[string]any{"status": sync}}
		if running {
			st["operationState"] = map[string]any{"phase": "Running"}
		}
		return st
	}
	for _, tc := range []struct {
		name    string
		waitFor []any
		status  map[string]any
		ready   bool
		says    string
	}{
		{"default ready", nil, status("Healthy", "Synced", false), true, ""},
		{"default out of sync", nil, status("Healthy", "OutOfSync", false), false, "it is OutOfSync"},
		{"default degraded", nil, status("Degraded", "Synced", false), false, "it is Degraded, not Healthy"},
		{"default running", nil, status("Healthy", "Synced", true), false, "its sync is running"},
		{"health only", []any{"health"}, status("Healthy", "OutOfSync", true), true, ""},
		{"sync only", []any{"sync"}, status("Degraded", "Synced", false), true, ""},
		{"operation only", []any{"operation"}, status("Degraded", "OutOfSync", false), true, ""},
		{"suspended", []any{"suspended"}, status("Suspended", "Synced", false), true, ""},
		{"health or suspended", []any{"health", "suspended"}, status("Suspended", "Synced", false), true, ""},
		{"health or degraded, progressing", []any{"health", "degraded"}, status("Progressing", "Synced", false), false, "not Healthy or Degraded"},
		{"degraded and sync", []any{"degraded", "sync"}, status("Degraded", "OutOfSync", false), false, "it is OutOfSync"},
	} {
		app := application("demo:dev")
		app["status"] = tc.status
		apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": app}}
		entry := map[string]any{"name": "guestbook-dev"}
		if tc.waitFor != nil {
			entry["waitFor"] = tc.waitFor
		}
		sc := newContext(t, map[string]any{"apps": []any{entry}})
		sc.Project, sc.Stage, sc.Applications = "demo", "dev", apps
		res, err := run(t, "argocd-wait", sc)
		if err != nil || (res.Status == "") != tc.ready || !strings.Contains(res.Message, tc.says) {
			t.Errorf("%s: %+v %v", tc.name, res, err)
		}
	}
	app := application("demo:dev")
	app["status"] = status("Healthy", "Synced", false)
	app["status"].(map[string]any)["conditions"] = []any{map[string]any{"type": "ComparisonError", "message": "repository not found"}}
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": app}}
	sc := newContext(t, map[string]any{"apps": []any{map[string]any{"name": "guestbook-dev", "waitFor": []any{"sync"}}}})
	sc.Project, sc.Stage, sc.Applications = "demo", "dev", apps
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != model.PromotionStepStatusFailed || !strings.Contains(res.Message, "ComparisonError: repository not found") {
		t.Errorf("comparison error: %+v %v", res, err)
	}
	sc.Config = map[string]any{"apps": []any{map[string]any{"name": "guestbook-dev", "waitFor": []any{"ready"}}}}
	if _, err := run(t, "argocd-wait", sc); err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), "apps[0].waitFor[0]") {
		t.Errorf("unknown waitFor: %v", err)
	}
	// A selector waits for each authorized Application it matches.
	sc.Config = map[string]any{"apps": []any{map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}}}}}
	apps.apps = map[string]map[string]any{
		"argocd/web-a": labelled("web-a", "demo:dev", map[string]any{"app": "web"}),
		"argocd/web-b": labelled("web-b", "demo:prod", map[string]any{"app": "web"}),
	}
	apps.apps["argocd/web-a"]["status"] = status("Progressing", "Synced", false)
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != StatusRunning || !strings.Contains(res.Message, "argocd/web-a") || strings.Contains(res.Message, "web-b") {
		t.Errorf("selector: %+v %v", res, err)
	}
}

// Without desiredRevision, a source's desired revision is the freight's
// commit of its git repository or version of its chart, as Kargo derives
// it; the Application's sources the config does not name are checked at
// the freight's revisions too. The sync records the promotion and who
// asked for it as Kargo does.
func TestArgoCDUpdateDesiredRevisionFromFreight(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		actor, username string
		automated       bool
	}{
		{"alice", "alice", false},
		{"auto", OperationInitiator, true},
	} {
		app := application("demo:dev")
		app["status"] = map[string]any{"operationState": map[string]any{"phase": "Succeeded", "operation": map[string]any{"initiatedBy": map[string]any{"username": "admin"}}}}
		apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": app}}
		sc := newContext(t, map[string]any{"apps": []any{map[string]any{"name": "guestbook-dev", "sources": []any{
			map[string]any{"repoURL": "https://github.com/acme/gitops", "updateTargetRevision": true},
		}}}})
		sc.Project, sc.Stage, sc.Promotion, sc.Actor, sc.Applications = "demo", "dev", "dev.01.abc", tc.actor, apps
		sc.Freight = []model.FreightReference{
			{Name: "f1", Commits: []model.GitCommit{{RepoURL: "https://github.com/acme/gitops.git", ID: "c0ffee"}}},
			{Name: "f2", Charts: []model.Chart{{RepoURL: "https://charts.acme.io", Name: "guestbook", Version: "0.3.0"}}},
		}
		res, err := run(t, "argocd-update", sc)
		if err != nil || res.Status != StatusRunning {
			t.Fatalf("%s: %+v %v", tc.actor, res, err)
		}
		got := apps.apps["argocd/guestbook-dev"]
		sources := got["spec"].(map[string]any)["sources"].([]any)
		if rev := sources[0].(map[string]any)["targetRevision"]; rev != "c0ffee" {
			t.Errorf("git targetRevision %v", rev)
		}
		if rev := sources[1].(map[string]any)["targetRevision"]; rev != "0.1.0" {
			t.Errorf("chart targetRevision %v changed without an update", rev)
		}
		wantCheck := []any{map[string]any{"name": "guestbook-dev", "namespace": "argocd", "sources": []any{
			map[string]any{"repoURL": "https://github.com/acme/gitops", "desiredRevision": "c0ffee"},
			map[string]any{"repoURL": "https://charts.acme.io", "chart": "guestbook", "desiredRevision": "0.3.0"},
		}}}
		if !reflect.DeepEqual(res.HealthCheck.Config["apps"], wantCheck) {
			t.Errorf("health check %v", res.HealthCheck.Config["apps"])
		}
		op := got["operation"].(map[string]any)
		wantOp := map[string]any{
			"initiatedBy": map[string]any{"username": tc.username, "automated": tc.automated},
			"info": []any{
				map[string]any{"name": "Reason", "value": "Promotion triggered a sync of this Application resource."},
				map[string]any{"name": InfoPromotion, "value": "dev.01.abc"},
			},
			"sync": map[string]any{},
		}
		if !reflect.DeepEqual(op, wantOp) {
			t.Errorf("%s: operation %v", tc.actor, op)
		}
		if ann := got["metadata"].(map[string]any)["annotations"].(map[string]any); ann[AnnotationRefresh] != "hard" {
			t.Errorf("annotations %v", ann)
		}
		if _, ok := got["status"].(map[string]any)["operationState"]; ok {
			t.Errorf("the previous operation state was kept")
		}
	}
}

// A sync someone else started is waited for before this promotion's own
// is requested; a sync of this promotion that ended at other revisions is
// requested again.
func TestArgoCDUpdateWaitsForOthersSync(t *testing.T) {
	t.Parallel()
	app := application("demo:dev")
	app["status"] = map[string]any{"operationState": map[string]any{"phase": "Running", "operation": map[string]any{"initiatedBy": map[string]any{"username": "admin"}}}}
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": app}}
	sc := newContext(t, argoConfigUnderTest)
	sc.Project, sc.Stage, sc.Promotion, sc.Applications = "demo", "dev", "dev.01.abc", apps
	res, err := run(t, "argocd-update", sc)
	if err != nil || res.Status != StatusRunning || apps.updates != 0 || !strings.Contains(res.Message, "a sync started by admin is running") {
		t.Fatalf("while admin's sync runs: %+v %v, %d updates", res, err, apps.updates)
	}
	app["status"].(map[string]any)["operationState"].(map[string]any)["phase"] = "Succeeded"
	if res, err := run(t, "argocd-update", sc); err != nil || res.Status != StatusRunning || apps.updates != 1 {
		t.Fatalf("after admin's sync: %+v %v, %d updates", res, err, apps.updates)
	}
	app = apps.apps["argocd/guestbook-dev"]
	finishSync(app, "Succeeded", "ok", "abc123", "0.1.9")
	if res, err := run(t, "argocd-update", sc); err != nil || res.Status != StatusRunning || apps.updates != 2 {
		t.Fatalf("after a sync at other revisions: %+v %v, %d updates", res, err, apps.updates)
	}
	app = apps.apps["argocd/guestbook-dev"]
	finishSync(app, "Succeeded", "ok", "abc123", "0.2.0")
	if res, err := run(t, "argocd-update", sc); err != nil || res.Status != "" || apps.updates != 2 {
		t.Fatalf("after the sync: %+v %v, %d updates", res, err, apps.updates)
	}
}

// argocd-wait does not trust health within the settling window after a
// sync, and fails at once on an Application Degraded after its sync
// settled (unless degraded is what it waits for).
func TestArgoCDWaitSettleAndDegraded(t *testing.T) {
	t.Parallel()
	app := application("demo:dev")
	app["operation"] = map[string]any{"sync": map[string]any{}}
	finishSync(app, "Succeeded", "ok", "abc123", "0.2.0")
	refresh(app, "Healthy", "abc123", "0.2.0")
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": app}}
	sc := newContext(t, map[string]any{"apps": []any{map[string]any{"name": "guestbook-dev"}}})
	sc.Project, sc.Stage, sc.Applications, sc.ArgoCDSettle = "demo", "dev", apps, time.Hour
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != StatusRunning || !strings.Contains(res.Message, "trusted 1h0m0s after a sync") {
		t.Fatalf("settling: %+v %v", res, err)
	}
	sc.ArgoCDSettle = 0
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != "" {
		t.Fatalf("settled: %+v %v", res, err)
	}
	app["status"].(map[string]any)["health"] = map[string]any{"status": "Degraded", "message": "back-off restarting failed container"}
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != model.PromotionStepStatusFailed || !strings.Contains(res.Message, "Degraded after its sync: back-off") {
		t.Fatalf("degraded: %+v %v", res, err)
	}
	sc.Config = map[string]any{"apps": []any{map[string]any{"name": "guestbook-dev", "waitFor": []any{"health", "degraded"}}}}
	if res, err := run(t, "argocd-wait", sc); err != nil || res.Status != "" {
		t.Fatalf("waiting for degraded: %+v %v", res, err)
	}
}

// An update that lost a race with another writer (Argo CD writes status
// often) leaves the step Running, to decide again from a fresh read.
func TestArgoCDUpdateConflict(t *testing.T) {
	t.Parallel()
	apps := &fakeApps{apps: map[string]map[string]any{"argocd/guestbook-dev": application("demo:dev")}, conflicts: 1}
	sc := newContext(t, argoConfigUnderTest)
	sc.Project, sc.Stage, sc.Promotion, sc.Applications = "demo", "dev", "dev.01.abc", apps
	if res, err := run(t, "argocd-update", sc); err != nil || res.Status != StatusRunning || apps.updates != 0 || !strings.Contains(res.Message, "trying again") {
		t.Fatalf("on a conflict: %+v %v, %d updates", res, err, apps.updates)
	}
	if res, err := run(t, "argocd-update", sc); err != nil || res.Status != StatusRunning || apps.updates != 1 {
		t.Fatalf("after it: %+v %v, %d updates", res, err, apps.updates)
	}
}
