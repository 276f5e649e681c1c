package steps

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/caravan-cd/caravan/pkg/model"
)

// AnnotationAuthorizedStage on an Argo CD Application lists the stages
// ("<project>:<stage>", comma-separated) allowed to change it, as in Kargo.
// Kargo dropped glob patterns ("demo:*"): an entry holding one is refused.
const AnnotationAuthorizedStage = "kargo.akuity.io/authorized-stage"

// Applications reads and writes Argo CD Applications (argoproj.io/v1alpha1)
// as unstructured objects.
type Applications interface {
	Get(ctx context.Context, namespace, name string) (map[string]any, error)
	// List returns the Applications of namespace whose labels match
	// selector (Kubernetes label selector syntax).
	List(ctx context.Context, namespace, selector string) ([]map[string]any, error)
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

// appSelector selects Applications by label, as a Kubernetes
// LabelSelector does (requirements ANDed).
type appSelector struct {
	MatchLabels      map[string]string `json:"matchLabels"`
	MatchExpressions []struct {
		Key string `json:"key" step:"required"`
		// Operator is In, NotIn, Exists or DoesNotExist.
		Operator string   `json:"operator" step:"required"`
		Values   []string `json:"values"`
	} `json:"matchExpressions"`
}

type argoApp struct {
	// Name and Selector are exclusive: one Application by name, or every
	// Application of Namespace the selector matches and the stage is
	// authorized for.
	Name     string       `json:"name"`
	Selector *appSelector `json:"selector"`
	// Namespace is argocd when empty.
	Namespace string       `json:"namespace"`
	Sources   []argoSource `json:"sources"`
}

type argoConfig struct {
	Apps []argoApp `json:"apps" step:"required"`
}

type argoWaitApp struct {
	argoApp
	// WaitFor is what the Application must show: health, sync, operation
	// (Kargo's default, all three), suspended, degraded. Health
	// conditions (health, suspended, degraded) are ORed, the rest ANDed.
	WaitFor []string `json:"waitFor"`
}

type argoWaitConfig struct {
	Apps []argoWaitApp `json:"apps" step:"required"`
	// Timeout (Caravan's) fails the step when the Applications are not
	// ready that long after it started.
	Timeout model.Duration `json:"timeout"`
}

// resolved is one Application a config entry names or selects.
type resolved struct {
	namespace, name string
	app             map[string]any
	sources         []argoSource
}

func (r resolved) String() string { return r.namespace + "/" + r.name }

// resolveApps reads the Applications config entry a (field names it in
// errors) names or selects, the ones the stage is not authorized for left
// out: by name, such an Application is a terminal error naming the
// annotation; by selector, it is skipped, and an error only when none is
// left.
func resolveApps(ctx context.Context, sc *Context, field string, a argoApp) ([]resolved, error) {
	ns := a.Namespace
	if ns == "" {
		ns = "argocd"
	}
	switch {
	case a.Name != "" && a.Selector != nil:
		return nil, Terminal(fmt.Errorf("%s: set name or selector, not both", field))
	case a.Name == "" && a.Selector == nil:
		return nil, Terminal(fmt.Errorf("%s: set name or selector", field))
	case a.Name != "":
		app, err := sc.Applications.Get(ctx, ns, a.Name)
		if err != nil {
			return nil, fmt.Errorf("get Application %s/%s: %w", ns, a.Name, err)
		}
		if err := authorized(app, sc.Project, sc.Stage); err != nil {
			return nil, Terminal(fmt.Errorf("application %s/%s: %w", ns, a.Name, err))
		}
		return []resolved{{namespace: ns, name: a.Name, app: app, sources: a.Sources}}, nil
	}
	sel, err := labelSelector(a.Selector)
	if err != nil {
		return nil, Terminal(fmt.Errorf("%s.selector: %w", field, err))
	}
	apps, err := sc.Applications.List(ctx, ns, sel)
	if err != nil {
		return nil, fmt.Errorf("list Applications of %s matching %q: %w", ns, sel, err)
	}
	var out []resolved
	var refused []string
	for _, app := range apps {
		name := nestedString(app, "metadata", "name")
		if err := authorized(app, sc.Project, sc.Stage); err != nil {
			refused = append(refused, name)
			continue
		}
		out = append(out, resolved{namespace: ns, name: name, app: app, sources: a.Sources})
	}
	switch {
	case len(apps) == 0:
		// An ApplicationSet may not have made them yet: retried.
		return nil, fmt.Errorf("%s.selector: no Application of namespace %s matches %q", field, ns, sel)
	case len(out) == 0:
		return nil, Terminal(fmt.Errorf("%s.selector: the Applications of %s matching %q (%s) are not authorized for stage %s: annotation %s does not list %q",
			field, ns, sel, strings.Join(refused, ", "), sc.Stage, AnnotationAuthorizedStage, sc.Project+":"+sc.Stage))
	}
	return out, nil
}

// labelSelector is s in Kubernetes label selector syntax.
func labelSelector(s *appSelector) (string, error) {
	if len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0 {
		return "", errors.New("needs matchLabels or matchExpressions")
	}
	sel := labels.NewSelector()
	for k, v := range s.MatchLabels {
		req, err := labels.NewRequirement(k, selection.Equals, []string{v})
		if err != nil {
			return "", fmt.Errorf("matchLabels %s: %w", k, err)
		}
		sel = sel.Add(*req)
	}
	ops := map[string]selection.Operator{"In": selection.In, "NotIn": selection.NotIn, "Exists": selection.Exists, "DoesNotExist": selection.DoesNotExist}
	for i, e := range s.MatchExpressions {
		op, ok := ops[e.Operator]
		if !ok {
			return "", fmt.Errorf("matchExpressions[%d].operator: %q is not In, NotIn, Exists or DoesNotExist", i, e.Operator)
		}
		req, err := labels.NewRequirement(e.Key, op, e.Values)
		if err != nil {
			return "", fmt.Errorf("matchExpressions[%d]: %w", i, err)
		}
		sel = sel.Add(*req)
	}
	return sel.String(), nil
}

// argocdUpdate points Argo CD Applications at the promoted revisions and
// images, asks for a sync, and is Running until the sync finished. It
// registers a health check so the stage's health follows the
// Applications'. Every Application is checked before any is written: a
// source one of them lacks changes none.
func argocdUpdate(ctx context.Context, sc *Context, cfg *argoConfig) (Result, error) {
	if sc.Applications == nil {
		return Result{}, Terminal(errors.New("argocd-update: no Kubernetes API is configured (set CARAVAN_KUBECONFIG)"))
	}
	type target struct {
		resolved
		changed bool
	}
	var targets []target
	var problems []error
	for i := range cfg.Apps {
		a := &cfg.Apps[i]
		for j := range a.Sources {
			if err := fillImages(sc.Freight, &a.Sources[j]); err != nil {
				return Result{}, err
			}
		}
		apps, err := resolveApps(ctx, sc, fmt.Sprintf("apps[%d]", i), *a)
		if err != nil {
			return Result{}, err
		}
		for _, r := range apps {
			changed, err := UpdateApplication(r.app, a.Sources)
			if err != nil {
				problems = append(problems, fmt.Errorf("application %s: %w", r, err))
				continue
			}
			targets = append(targets, target{resolved: r, changed: changed})
		}
	}
	if len(problems) > 0 {
		return Result{}, Terminal(fmt.Errorf("no Application was changed: %w", errors.Join(problems...)))
	}
	pending := []string{}
	checked := make([]resolved, 0, len(targets))
	for _, t := range targets {
		app := t.app
		checked = append(checked, t.resolved)
		phase := nestedString(app, "status", "operationState", "phase")
		_, operating := app["operation"]
		failed := phase == "Failed" || phase == "Error"
		switch {
		// A failed sync another promotion (or someone else) asked for is
		// no verdict on this one: sync again.
		case t.changed || (!operating && (phase == "" || (failed && !syncedFor(app, sc.Promotion)))):
			RequestSync(app, sc.Promotion)
			if err := sc.Applications.Update(ctx, t.namespace, app); err != nil {
				return Result{}, fmt.Errorf("update Application %s: %w", t, err)
			}
			pending = append(pending, t.name)
		case operating || phase == "Running" || phase == "Terminating":
			pending = append(pending, t.name)
		case failed:
			msg := nestedString(app, "status", "operationState", "message")
			return Result{Status: model.PromotionStepStatusFailed, Message: fmt.Sprintf("sync of Application %s %s: %s", t, strings.ToLower(phase), msg)}, nil
		}
	}
	check := healthCheck("argocd-update", checked)
	if len(pending) > 0 {
		return Result{Status: StatusRunning, Message: "waiting for the sync of " + strings.Join(pending, ", "), HealthCheck: check}, nil
	}
	return Result{HealthCheck: check}, nil
}

// healthCheck is the check of the Applications a step resolved: by name,
// so one a selector matched keeps being checked, with the revisions they
// must be synced at.
func healthCheck(uses string, apps []resolved) *model.HealthCheckStep {
	list := make([]any, 0, len(apps))
	for _, r := range apps {
		sources := make([]any, 0, len(r.sources))
		for _, s := range r.sources {
			src := map[string]any{"repoURL": s.RepoURL}
			if s.Chart != "" {
				src["chart"] = s.Chart
			}
			if s.DesiredRevision != "" {
				src["desiredRevision"] = s.DesiredRevision
			}
			sources = append(sources, src)
		}
		app := map[string]any{"name": r.name, "namespace": r.namespace}
		if len(sources) > 0 {
			app["sources"] = sources
		}
		list = append(list, app)
	}
	return &model.HealthCheckStep{Uses: uses, Config: map[string]any{"apps": list}}
}

// authorized checks that the Application's authorized-stage annotation
// lists project:stage.
func authorized(app map[string]any, project, stage string) error {
	md, _ := app["metadata"].(map[string]any)
	ann, _ := md["annotations"].(map[string]any)
	got, _ := ann[AnnotationAuthorizedStage].(string)
	want := project + ":" + stage
	found := false
	for _, e := range strings.Split(got, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		p, s, ok := strings.Cut(e, ":")
		if !ok || p == "" || s == "" {
			return fmt.Errorf("annotation %s is %q: entry %q is not <project>:<stage>", AnnotationAuthorizedStage, got, e)
		}
		if strings.Contains(e, "*") {
			return fmt.Errorf("annotation %s is %q: entry %q is a glob pattern, which Kargo no longer accepts: list the stages", AnnotationAuthorizedStage, got, e)
		}
		found = found || (strings.TrimSpace(p) == project && strings.TrimSpace(s) == stage)
	}
	if found {
		return nil
	}
	return fmt.Errorf("not authorized for stage %s: annotation %s is %q, want %q among its comma-separated entries", stage, AnnotationAuthorizedStage, got, want)
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
// UI does, noting the promotion that asked; like Kargo, it copies the
// Application's syncPolicy retry and syncOptions into the operation, which
// Argo CD otherwise applies only to automated syncs.
func RequestSync(app map[string]any, promotion string) {
	sync := map[string]any{}
	op := map[string]any{
		"initiatedBy": map[string]any{"username": "caravan", "automated": false},
		"info":        []any{map[string]any{"name": "Reason", "value": syncReason(promotion)}},
		"sync":        sync,
	}
	spec, _ := app["spec"].(map[string]any)
	if policy, ok := spec["syncPolicy"].(map[string]any); ok {
		if retry, ok := policy["retry"]; ok && retry != nil {
			op["retry"] = retry
		}
		if opts, ok := policy["syncOptions"].([]any); ok && len(opts) > 0 {
			sync["syncOptions"] = opts
		}
	}
	app["operation"] = op
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
	return syncedAt(app, want)
}

// syncedAt checks that every source of want with a desiredRevision is
// synced at it.
func syncedAt(app map[string]any, want []argoSource) (model.HealthState, string) {
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

// waitConditions are the values of argocd-wait's waitFor, and whether
// each is a health condition.
var waitConditions = map[string]bool{"health": true, "suspended": true, "degraded": true, "sync": false, "operation": false}

// argocdWait is Running until the Applications show what waitFor asks
// (healthy, synced at their desired revisions, no operation running, by
// default); it registers the same health check as argocd-update. An
// Application with a ComparisonError or InvalidSpecError condition fails
// it.
func argocdWait(ctx context.Context, sc *Context, cfg *argoWaitConfig) (Result, error) {
	if sc.Applications == nil {
		return Result{}, Terminal(errors.New("argocd-wait: no Kubernetes API is configured (set CARAVAN_KUBECONFIG)"))
	}
	var checked []resolved
	var waiting []string
	for i, a := range cfg.Apps {
		field := fmt.Sprintf("apps[%d]", i)
		waitFor := a.WaitFor
		if len(waitFor) == 0 {
			waitFor = []string{"health", "sync", "operation"}
		}
		for j, w := range waitFor {
			if _, ok := waitConditions[w]; !ok {
				return Result{}, Terminal(fmt.Errorf("%s.waitFor[%d]: %q is not health, sync, operation, suspended or degraded", field, j, w))
			}
		}
		apps, err := resolveApps(ctx, sc, field, a.argoApp)
		if err != nil {
			return Result{}, err
		}
		for _, r := range apps {
			checked = append(checked, r)
			if bad := errorConditions(r.app); bad != "" {
				return Result{Status: model.PromotionStepStatusFailed, Message: fmt.Sprintf("application %s: %s", r, bad)}, nil
			}
			if why := notReady(r.app, waitFor, a.Sources); why != "" {
				waiting = append(waiting, fmt.Sprintf("%s: %s", r, why))
			}
		}
	}
	check := healthCheck("argocd-wait", checked)
	if len(waiting) == 0 {
		return Result{HealthCheck: check}, nil
	}
	msg := strings.Join(waiting, "; ")
	if t := cfg.Timeout.Duration; t > 0 && !sc.StartedAt.IsZero() && time.Since(sc.StartedAt) >= t {
		return Result{Status: model.PromotionStepStatusFailed, Message: fmt.Sprintf("not ready after %s: %s", t, msg)}, nil
	}
	return Result{Status: StatusRunning, Message: msg, HealthCheck: check}, nil
}

// errorConditions describes the Application's conditions that say its
// spec cannot be rendered or compared, which waiting does not fix.
func errorConditions(app map[string]any) string {
	status, _ := app["status"].(map[string]any)
	conds, _ := status["conditions"].([]any)
	var bad []string
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if t, _ := m["type"].(string); t == "ComparisonError" || t == "InvalidSpecError" {
			msg, _ := m["message"].(string)
			bad = append(bad, t+": "+msg)
		}
	}
	return strings.Join(bad, "; ")
}

// notReady says why the Application does not show what waitFor asks, or
// is empty.
func notReady(app map[string]any, waitFor []string, want []argoSource) string {
	has := func(c string) bool { return slices.Contains(waitFor, c) }
	if has("operation") {
		if _, ok := app["operation"]; ok {
			return "a sync is pending"
		}
		if phase := nestedString(app, "status", "operationState", "phase"); phase == "Running" || phase == "Terminating" {
			return "its sync is " + strings.ToLower(phase)
		}
	}
	health := nestedString(app, "status", "health", "status")
	var healthy []string
	for _, c := range waitFor {
		if waitConditions[c] {
			healthy = append(healthy, map[string]string{"health": "Healthy", "suspended": "Suspended", "degraded": "Degraded"}[c])
		}
	}
	if len(healthy) > 0 && !slices.Contains(healthy, health) {
		if health == "" {
			health = "of unknown health"
		}
		return fmt.Sprintf("it is %s, not %s", health, strings.Join(healthy, " or "))
	}
	if has("sync") {
		if sync := nestedString(app, "status", "sync", "status"); sync != "Synced" {
			if sync == "" {
				sync = "of unknown sync status"
			}
			return "it is " + sync
		}
		if _, why := syncedAt(app, want); why != "" {
			return why
		}
	}
	return ""
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
