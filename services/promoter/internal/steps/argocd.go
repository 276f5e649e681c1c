package steps

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

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
	RepoURL string `json:"repoURL" step:"required"`
	// Tag and Digest default to the freight's image of RepoURL.
	Tag    string `json:"tag"`
	Digest string `json:"digest"`
	// UseDigest (Caravan's) takes the freight's digest.
	UseDigest bool   `json:"useDigest"`
	NewName   string `json:"newName"`
}

type argoSource struct {
	RepoURL string `json:"repoURL" step:"required"`
	Chart   string `json:"chart"`
	// DesiredRevision is the revision the source must be synced at for the
	// Application to be healthy; its targetRevision is set to it only with
	// UpdateTargetRevision.
	DesiredRevision      string `json:"desiredRevision"`
	UpdateTargetRevision bool   `json:"updateTargetRevision"`
	Kustomize            *struct {
		Images []argoImage `json:"images"`
	} `json:"kustomize"`
	Helm *struct {
		Images []struct {
			Key   string `json:"key" step:"required"`
			Value string `json:"value"`
		} `json:"images" step:"required"`
	} `json:"helm"`
}

type argoApp struct {
	Name string `json:"name" step:"required"`
	// Namespace is argocd when empty.
	Namespace string       `json:"namespace"`
	Sources   []argoSource `json:"sources"`
}

type argoConfig struct {
	Apps []argoApp `json:"apps" step:"required"`
}

type argoWaitConfig struct {
	Apps []argoApp `json:"apps" step:"required"`
	// Timeout (Caravan's) fails the step when the Applications are not
	// healthy and synced that long after it started.
	Timeout model.Duration `json:"timeout"`
}

// argocdUpdate points Argo CD Applications at the promoted revisions and
// images, asks for a sync, and is Running until the sync finished. It
// registers a health check so the stage's health follows the
// Applications'.
func argocdUpdate(ctx context.Context, sc *Context, cfg *argoConfig) (Result, error) {
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
		for j := range a.Sources {
			if err := fillImages(sc.Freight, &a.Sources[j]); err != nil {
				return Result{}, err
			}
		}
		changed, err := UpdateApplication(app, a.Sources)
		if err != nil {
			return Result{}, Terminal(fmt.Errorf("application %s/%s: %w", a.Namespace, a.Name, err))
		}
		phase := nestedString(app, "status", "operationState", "phase")
		_, operating := app["operation"]
		failed := phase == "Failed" || phase == "Error"
		switch {
		// A failed sync another promotion (or someone else) asked for is
		// no verdict on this one: sync again.
		case changed || (!operating && (phase == "" || (failed && !syncedFor(app, sc.Promotion)))):
			RequestSync(app, sc.Promotion)
			if err := sc.Applications.Update(ctx, a.Namespace, app); err != nil {
				return Result{}, fmt.Errorf("update Application %s/%s: %w", a.Namespace, a.Name, err)
			}
			pending = append(pending, a.Name)
		case operating || phase == "Running" || phase == "Terminating":
			pending = append(pending, a.Name)
		case failed:
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

// fillImages gives the kustomize images of u that have neither tag nor
// digest the freight's.
func fillImages(freight []model.FreightReference, u *argoSource) error {
	if u.Kustomize == nil {
		return nil
	}
	for i := range u.Kustomize.Images {
		img := &u.Kustomize.Images[i]
		if img.Tag != "" || img.Digest != "" {
			continue
		}
		found, ok := imageFromFreight(freight, imageUpdate{Image: img.RepoURL})
		if !ok {
			return Terminal(fmt.Errorf("source %s: image %s has no tag or digest and is not in the freight", u.RepoURL, img.RepoURL))
		}
		img.Tag = found.Tag
		if img.UseDigest {
			img.Digest = found.Digest
		}
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
	sources = append(sources, specSources(spec)...)
	changed := false
	for _, u := range updates {
		i := findSource(sources, u)
		if i < 0 {
			return false, fmt.Errorf("has no source from %s", u.RepoURL)
		}
		src := sources[i]
		if u.UpdateTargetRevision && u.DesiredRevision == "" {
			return false, fmt.Errorf("source %s: updateTargetRevision needs desiredRevision", u.RepoURL)
		}
		if u.UpdateTargetRevision && src["targetRevision"] != u.DesiredRevision {
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

func specSources(spec map[string]any) []map[string]any {
	var sources []map[string]any
	list, _ := spec["sources"].([]any)
	for _, s := range list {
		if m, ok := s.(map[string]any); ok {
			sources = append(sources, m)
		}
	}
	return sources
}

// findSource is the index of the source a configured source updates (by
// repoURL, and chart when set), or -1.
func findSource(sources []map[string]any, u argoSource) int {
	for i, s := range sources {
		repo, _ := s["repoURL"].(string)
		chart, _ := s["chart"].(string)
		if sameRepo(repo, u.RepoURL) && (u.Chart == "" || chart == u.Chart) {
			return i
		}
	}
	return -1
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
		"info":        []any{map[string]any{"name": "Reason", "value": syncReason(promotion)}},
		"sync":        map[string]any{},
	}
}

func syncReason(promotion string) string {
	return "Promotion " + promotion + " triggered a sync of this Application resource."
}

// syncedFor reports whether the Application's last sync is one promotion
// asked for (Argo CD copies the operation into status.operationState).
func syncedFor(app map[string]any, promotion string) bool {
	status, _ := app["status"].(map[string]any)
	state, _ := status["operationState"].(map[string]any)
	op, _ := state["operation"].(map[string]any)
	info, _ := op["info"].([]any)
	for _, i := range info {
		if m, _ := i.(map[string]any); m["name"] == "Reason" && m["value"] == syncReason(promotion) {
			return true
		}
	}
	return false
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

// appHealth is ApplicationHealth, except that a healthy Application is
// still Progressing while a sync is pending or running, or while a source
// is synced at another revision than its desiredRevision: until Argo CD
// acts on a sync argocd-update asked for, status.sync and status.health
// describe the previous revisions, and read Synced and Healthy.
func appHealth(app map[string]any, want []argoSource) (model.HealthState, string) {
	state, why := ApplicationHealth(app)
	if state != model.HealthStateHealthy {
		return state, why
	}
	if _, ok := app["operation"]; ok {
		return model.HealthStateProgressing, "a sync is pending"
	}
	if phase := nestedString(app, "status", "operationState", "phase"); phase == "Running" || phase == "Terminating" {
		return model.HealthStateProgressing, "its sync is " + strings.ToLower(phase)
	}
	// Argo CD uses spec.sources when it has any, and status.sync.revisions
	// in the same order; otherwise spec.source and status.sync.revision.
	spec, _ := app["spec"].(map[string]any)
	status, _ := app["status"].(map[string]any)
	sync, _ := status["sync"].(map[string]any)
	sources := specSources(spec)
	var revisions []any
	if len(sources) > 0 {
		revisions, _ = sync["revisions"].([]any)
	} else if s, ok := spec["source"].(map[string]any); ok {
		sources, revisions = []map[string]any{s}, []any{sync["revision"]}
	}
	for _, u := range want {
		if u.DesiredRevision == "" {
			continue
		}
		i := findSource(sources, u)
		if i < 0 {
			return model.HealthStateUnknown, "it has no source from " + u.RepoURL
		}
		var got string
		if i < len(revisions) {
			got, _ = revisions[i].(string)
		}
		if got != u.DesiredRevision {
			if got == "" {
				return model.HealthStateProgressing, fmt.Sprintf("its source %s is not synced at %s yet", u.RepoURL, u.DesiredRevision)
			}
			return model.HealthStateProgressing, fmt.Sprintf("its source %s is synced at %s, not %s", u.RepoURL, got, u.DesiredRevision)
		}
	}
	return model.HealthStateHealthy, ""
}

// argocdWait is Running until the Applications are healthy and synced at
// their desired revisions; it registers the same health check as
// argocd-update.
func argocdWait(ctx context.Context, sc *Context, cfg *argoWaitConfig) (Result, error) {
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
		if state, why := appHealth(app, a.Sources); state != model.HealthStateHealthy {
			msg := fmt.Sprintf("%s/%s: %s", a.Namespace, a.Name, why)
			if t := cfg.Timeout.Duration; t > 0 && !sc.StartedAt.IsZero() && time.Since(sc.StartedAt) >= t {
				return Result{Status: model.PromotionStepStatusFailed, Message: fmt.Sprintf("not healthy after %s: %s", t, msg)}, nil
			}
			return Result{Status: StatusRunning, Message: msg, HealthCheck: check}, nil
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
			state, why = appHealth(app, a.Sources)
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
