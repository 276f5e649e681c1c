package steps

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
)

// AnnotationAuthorizedStage on an Argo CD Application names the stage
// ("<project>:<stage>") allowed to change it, as in Kargo.
const AnnotationAuthorizedStage = "kargo.akuity.io/authorized-stage"

// Applications reads and writes Argo CD Applications (argoproj.io/v1alpha1)
// as unstructured objects.
type Applications interface {
	Get(ctx context.Context, namespace, name string) (map[string]any, error)
	Update(ctx context.Context, namespace string, app map[string]any) error
}

type argoImage struct {
	RepoURL   string `json:"repoURL"`
	Tag       string `json:"tag"`
	Digest    string `json:"digest"`
	UseDigest bool   `json:"useDigest"`
	NewName   string `json:"newName"`
}

type argoSource struct {
	RepoURL         string `json:"repoURL"`
	Chart           string `json:"chart"`
	DesiredRevision string `json:"desiredRevision"`
	Kustomize       *struct {
		Images []argoImage `json:"images"`
	} `json:"kustomize"`
	Helm *struct {
		Images []struct {
			Key   string `json:"key"`
			Value string `json:"value"`
		} `json:"images"`
	} `json:"helm"`
}

type argoApp struct {
	Name      string       `json:"name"`
	Namespace string       `json:"namespace"`
	Sources   []argoSource `json:"sources"`
}

type argoConfig struct {
	Apps []argoApp `json:"apps"`
}

// argocdUpdate points Argo CD Applications at the promoted revisions and
// images, asks for a sync, and is Running until the sync finished. It
// registers a health check so the stage's health follows the
// Applications'.
func argocdUpdate(ctx context.Context, sc *Context) (Result, error) {
	var cfg argoConfig
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	if sc.Applications == nil {
		return Result{}, Terminal(errors.New("argocd-update: no Kubernetes API is configured"))
	}
	pending := []string{}
	for i := range cfg.Apps {
		a := &cfg.Apps[i]
		if a.Namespace == "" {
			a.Namespace = "argocd"
		}
		app, err := sc.Applications.Get(ctx, a.Namespace, a.Name)
		if err != nil {
			return Result{}, fmt.Errorf("get Application %s/%s: %w", a.Namespace, a.Name, err)
		}
		if err := authorized(app, sc.Project, sc.Stage); err != nil {
			return Result{}, Terminal(fmt.Errorf("application %s/%s: %w", a.Namespace, a.Name, err))
		}
		changed, err := UpdateApplication(app, a.Sources)
		if err != nil {
			return Result{}, Terminal(fmt.Errorf("application %s/%s: %w", a.Namespace, a.Name, err))
		}
		phase := nestedString(app, "status", "operationState", "phase")
		_, operating := app["operation"]
		switch {
		case changed || (!operating && phase == ""):
			RequestSync(app, sc.Promotion)
			if err := sc.Applications.Update(ctx, a.Namespace, app); err != nil {
				return Result{}, fmt.Errorf("update Application %s/%s: %w", a.Namespace, a.Name, err)
			}
			pending = append(pending, a.Name)
		case operating || phase == "Running" || phase == "Terminating":
			pending = append(pending, a.Name)
		case phase == "Failed" || phase == "Error":
			msg := nestedString(app, "status", "operationState", "message")
			return Result{Status: model.PromotionStepStatusFailed, Message: fmt.Sprintf("sync of Application %s/%s %s: %s", a.Namespace, a.Name, strings.ToLower(phase), msg)}, nil
		}
	}
	check := &model.HealthCheckStep{Uses: "argocd-update", Config: sc.Config}
	if len(pending) > 0 {
		return Result{Status: StatusRunning, Message: "waiting for the sync of " + strings.Join(pending, ", "), HealthCheck: check}, nil
	}
	return Result{HealthCheck: check}, nil
}

func authorized(app map[string]any, project, stage string) error {
	md, _ := app["metadata"].(map[string]any)
	ann, _ := md["annotations"].(map[string]any)
	got, _ := ann[AnnotationAuthorizedStage].(string)
	want := project + ":" + stage
	if got != want {
		return fmt.Errorf("not authorized for stage %s: annotation %s is %q, want %q", stage, AnnotationAuthorizedStage, got, want)
	}
	return nil
}

// UpdateApplication applies the configured sources to an Application's
// spec.source / spec.sources (matched by repoURL, and chart when set):
// target revision, kustomize images and helm parameters. It reports
// whether anything changed.
func UpdateApplication(app map[string]any, updates []argoSource) (bool, error) {
	spec, _ := app["spec"].(map[string]any)
	if spec == nil {
		return false, errors.New("has no spec")
	}
	var sources []map[string]any
	if s, ok := spec["source"].(map[string]any); ok {
		sources = append(sources, s)
	}
	if list, ok := spec["sources"].([]any); ok {
		for _, s := range list {
			if m, ok := s.(map[string]any); ok {
				sources = append(sources, m)
			}
		}
	}
	changed := false
	for _, u := range updates {
		var src map[string]any
		for _, s := range sources {
			repo, _ := s["repoURL"].(string)
			chart, _ := s["chart"].(string)
			if sameRepo(repo, u.RepoURL) && (u.Chart == "" || chart == u.Chart) {
				src = s
				break
			}
		}
		if src == nil {
			return false, fmt.Errorf("has no source from %s", u.RepoURL)
		}
		if u.DesiredRevision != "" && src["targetRevision"] != u.DesiredRevision {
			src["targetRevision"] = u.DesiredRevision
			changed = true
		}
		if u.Kustomize != nil && len(u.Kustomize.Images) > 0 {
			k, _ := src["kustomize"].(map[string]any)
			if k == nil {
				k = map[string]any{}
				src["kustomize"] = k
			}
			images, _ := k["images"].([]any)
			for _, img := range u.Kustomize.Images {
				images, changed = setKustomizeImage(images, img, changed)
			}
			k["images"] = images
		}
		if u.Helm != nil && len(u.Helm.Images) > 0 {
			h, _ := src["helm"].(map[string]any)
			if h == nil {
				h = map[string]any{}
				src["helm"] = h
			}
			params, _ := h["parameters"].([]any)
			for _, p := range u.Helm.Images {
				found := false
				for _, existing := range params {
					m, _ := existing.(map[string]any)
					if m != nil && m["name"] == p.Key {
						found = true
						if m["value"] != p.Value {
							m["value"], changed = p.Value, true
						}
					}
				}
				if !found {
					params = append(params, map[string]any{"name": p.Key, "value": p.Value})
					changed = true
				}
			}
			h["parameters"] = params
		}
	}
	return changed, nil
}

func sameRepo(a, b string) bool {
	return model.NormalizeGitURL(a) == model.NormalizeGitURL(b) || strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
}

// setKustomizeImage sets one image in Argo CD's kustomize image list, whose
// entries read "[<name>=]<newName>[:<tag>|@<digest>]".
func setKustomizeImage(images []any, img argoImage, changed bool) ([]any, bool) {
	value := img.RepoURL
	if img.NewName != "" {
		value = img.RepoURL + "=" + img.NewName
	}
	if img.Digest != "" && (img.UseDigest || img.Tag == "") {
		value += "@" + img.Digest
	} else {
		value += ":" + img.Tag
	}
	for i, e := range images {
		s, _ := e.(string)
		name := s
		if n, _, ok := strings.Cut(s, "="); ok {
			name = n
		} else if j := strings.LastIndexAny(s, ":@"); j > strings.LastIndex(s, "/") {
			name = s[:j]
		}
		if name == img.RepoURL {
			if s != value {
				images[i] = value
				return images, true
			}
			return images, changed
		}
	}
	return append(images, value), true
}

// RequestSync sets an Application's operation to a sync, as the Argo CD
// UI does, noting the promotion that asked.
func RequestSync(app map[string]any, promotion string) {
	app["operation"] = map[string]any{
		"initiatedBy": map[string]any{"username": "caravan", "automated": false},
		"info":        []any{map[string]any{"name": "Reason", "value": "Promotion " + promotion + " triggered a sync of this Application resource."}},
		"sync":        map[string]any{},
	}
}

func nestedString(m map[string]any, path ...string) string {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[p]
	}
	s, _ := cur.(string)
	return s
}

// ApplicationHealth maps an Application's status.health.status to a
// stage health state.
func ApplicationHealth(app map[string]any) (model.HealthState, string) {
	status := nestedString(app, "status", "health", "status")
	sync := nestedString(app, "status", "sync", "status")
	switch {
	case status == "Healthy" && (sync == "" || sync == "Synced"):
		return model.HealthStateHealthy, ""
	case status == "Healthy":
		return model.HealthStateProgressing, "the Application is " + sync
	case status == "Progressing" || status == "Suspended":
		return model.HealthStateProgressing, "the Application is " + status
	case status == "Degraded" || status == "Missing":
		return model.HealthStateUnhealthy, "the Application is " + status
	}
	return model.HealthStateUnknown, "the Application's health is unknown"
}

// argocdWait is Running until the Applications are healthy and synced; it
// registers the same health check as argocd-update.
func argocdWait(ctx context.Context, sc *Context) (Result, error) {
	var cfg argoConfig
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	if sc.Applications == nil {
		return Result{}, Terminal(errors.New("argocd-wait: no Kubernetes API is configured"))
	}
	check := &model.HealthCheckStep{Uses: "argocd-wait", Config: sc.Config}
	for _, a := range cfg.Apps {
		if a.Namespace == "" {
			a.Namespace = "argocd"
		}
		app, err := sc.Applications.Get(ctx, a.Namespace, a.Name)
		if err != nil {
			return Result{}, fmt.Errorf("get Application %s/%s: %w", a.Namespace, a.Name, err)
		}
		if state, why := ApplicationHealth(app); state != model.HealthStateHealthy {
			return Result{Status: StatusRunning, Message: fmt.Sprintf("%s/%s: %s", a.Namespace, a.Name, why), HealthCheck: check}, nil
		}
	}
	return Result{HealthCheck: check}, nil
}

// CheckHealth evaluates a health check argocd-update or argocd-wait
// registered: the worst health of its Applications.
func CheckHealth(ctx context.Context, apps Applications, check model.HealthCheckStep) model.Health {
	var cfg argoConfig
	sc := &Context{Config: check.Config}
	if err := sc.Decode(&cfg); err != nil {
		return model.Health{Status: model.HealthStateUnknown, Issues: []string{err.Error()}}
	}
	rank := map[model.HealthState]int{model.HealthStateHealthy: 0, model.HealthStateProgressing: 1, model.HealthStateUnknown: 2, model.HealthStateUnhealthy: 3}
	h := model.Health{Status: model.HealthStateHealthy}
	for _, a := range cfg.Apps {
		if a.Namespace == "" {
			a.Namespace = "argocd"
		}
		var state model.HealthState
		var why string
		app, err := apps.Get(ctx, a.Namespace, a.Name)
		if err != nil {
			state, why = model.HealthStateUnknown, err.Error()
		} else {
			state, why = ApplicationHealth(app)
		}
		if why != "" {
			h.Issues = append(h.Issues, fmt.Sprintf("%s/%s: %s", a.Namespace, a.Name, why))
		}
		if rank[state] > rank[h.Status] {
			h.Status = state
		}
	}
	return h
}
