package steps

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
// images, asks for a sync, and is Running until the sync finished, as
// Kargo's: a sync someone else (or another promotion) started is waited
// for, then this promotion's own is requested; its failure fails the step,
// a sync that ended at other revisions than the desired ones is requested
// again. It registers a health check so the stage's health follows the
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
			r.sources = desiredSources(r.app, a.Sources, sc.Freight)
			changed, err := UpdateApplication(r.app, r.sources)
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
	var waiting []string
	checked := make([]resolved, 0, len(targets))
	for _, t := range targets {
		checked = append(checked, t.resolved)
		action, why := syncState(t.app, sc.Promotion, t.sources)
		if action == syncDone && t.changed {
			action, why = syncNow, "its spec changed"
		}
		switch action {
		case syncNow:
			RequestSync(t.app, sc.Promotion, sc.Actor)
			err := sc.Applications.Update(ctx, t.namespace, t.app)
			switch {
			case apierrors.IsConflict(err):
				// Changed since it was read (Argo CD writes its status
				// often): decided again on the next run, from a fresh read.
				waiting = append(waiting, t.String()+": changed while being updated, trying again")
				continue
			case err != nil:
				return Result{}, fmt.Errorf("update Application %s: %w", t, err)
			}
			waiting = append(waiting, t.String()+": sync requested")
		case syncWait:
			waiting = append(waiting, t.String()+": "+why)
		case syncFailed:
			return Result{Status: model.PromotionStepStatusFailed, Message: fmt.Sprintf("application %s: %s", t, why)}, nil
		}
	}
	check := healthCheck("argocd-update", checked)
	if len(waiting) > 0 {
		return Result{Status: StatusRunning, Message: "waiting for the sync of " + strings.Join(waiting, "; "), HealthCheck: check}, nil
	}
	return Result{HealthCheck: check}, nil
}

// syncAction is what argocd-update does about one Application.
type syncAction int

const (
	syncNow syncAction = iota
	syncWait
	syncDone
	syncFailed
)

// syncState decides, from the Application's pending operation and last
// operation state, whether promotion must request a sync, wait for one,
// is done, or failed (why says which and why).
func syncState(app map[string]any, promotion string, want []argoSource) (syncAction, string) {
	if op, ok := app["operation"].(map[string]any); ok {
		if promotionOf(op) == promotion {
			return syncWait, "its sync is pending"
		}
		return syncWait, "a sync requested by " + initiator(op) + " is pending"
	}
	status, _ := app["status"].(map[string]any)
	state, _ := status["operationState"].(map[string]any)
	if state == nil {
		return syncNow, "it has no operation"
	}
	phase, _ := state["phase"].(string)
	completed := phase == "Succeeded" || phase == "Failed" || phase == "Error"
	op, _ := state["operation"].(map[string]any)
	if promotionOf(op) != promotion {
		if !completed {
			return syncWait, fmt.Sprintf("a sync started by %s is %s", initiator(op), strings.ToLower(firstOf(phase, "running")))
		}
		return syncNow, "its last sync is not this promotion's"
	}
	if !completed {
		return syncWait, "its sync is " + strings.ToLower(firstOf(phase, "running"))
	}
	if phase != "Succeeded" {
		msg, _ := state["message"].(string)
		return syncFailed, fmt.Sprintf("sync %s: %s", strings.ToLower(phase), msg)
	}
	result, ok := state["syncResult"].(map[string]any)
	if !ok {
		return syncNow, "its sync completed without a sync result"
	}
	if why := revisionsDiffer(app, want, syncResultRevisions(result)); why != "" {
		return syncNow, why
	}
	return syncDone, ""
}

func firstOf(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// promotionOf is the promotion an operation records in its info, as
// Kargo's (InfoPromotion), or empty.
func promotionOf(op map[string]any) string {
	info, _ := op["info"].([]any)
	for _, i := range info {
		if m, _ := i.(map[string]any); m["name"] == InfoPromotion {
			s, _ := m["value"].(string)
			return s
		}
	}
	return ""
}

func initiator(op map[string]any) string {
	if u := nestedString(op, "initiatedBy", "username"); u != "" {
		return u
	}
	if auto, _ := nestedAny(op, "initiatedBy", "automated").(bool); auto {
		return "Argo CD (automated)"
	}
	return "someone else"
}

func nestedAny(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// syncResultRevisions are the revisions a sync ended at, one per source
// (Argo CD fills revisions for a multi-source Application, revision for
// one with a single source).
func syncResultRevisions(result map[string]any) []string {
	var out []string
	if list, ok := result["revisions"].([]any); ok && len(list) > 0 {
		for _, r := range list {
			s, _ := r.(string)
			out = append(out, s)
		}
		return out
	}
	s, _ := result["revision"].(string)
	return []string{s}
}

// appSources are the Application's sources in Argo CD's order:
// spec.sources when it has any, else spec.source.
func appSources(app map[string]any) []map[string]any {
	spec, _ := app["spec"].(map[string]any)
	if sources := specSources(spec); len(sources) > 0 {
		return sources
	}
	if s, ok := spec["source"].(map[string]any); ok {
		return []map[string]any{s}
	}
	return nil
}

// revisionsDiffer says how observed (one revision per source, in the
// Application's order) differs from the desired revisions of want, or is
// empty.
func revisionsDiffer(app map[string]any, want []argoSource, observed []string) string {
	sources := appSources(app)
	for _, u := range want {
		if u.DesiredRevision == "" {
			continue
		}
		i := findSource(sources, u)
		if i < 0 {
			return "it has no source from " + u.RepoURL
		}
		var got string
		if i < len(observed) {
			got = observed[i]
		}
		if got != u.DesiredRevision {
			if got == "" {
				return fmt.Sprintf("its source %s is not synced at %s", u.RepoURL, u.DesiredRevision)
			}
			return fmt.Sprintf("its source %s is synced at %s, not %s", u.RepoURL, got, u.DesiredRevision)
		}
	}
	return ""
}

// desiredSources are the source updates of one Application with their
// desired revisions: the configured desiredRevision, else, as Kargo
// derives it, the freight's commit of a git source's repoURL or its
// version of a chart source's chart. Sources of the Application the config
// does not name are added (with no update) when the freight has a revision
// for them, so the health check watches them too.
func desiredSources(app map[string]any, updates []argoSource, freight []model.FreightReference) []argoSource {
	out := slices.Clone(updates)
	used := map[int]bool{}
	sources := appSources(app)
	for i := range out {
		j := findSource(sources, out[i])
		if j < 0 {
			continue // UpdateApplication says so
		}
		used[j] = true
		if out[i].DesiredRevision == "" {
			out[i].DesiredRevision = freightRevision(sources[j], freight)
		}
	}
	for j, s := range sources {
		if used[j] {
			continue
		}
		if rev := freightRevision(s, freight); rev != "" {
			repo, _ := s["repoURL"].(string)
			chart, _ := s["chart"].(string)
			out = append(out, argoSource{RepoURL: repo, Chart: chart, DesiredRevision: rev})
		}
	}
	return out
}

// freightRevision is the revision the freight holds for an Application
// source: its chart's version (an OCI chart source's repoURL has no
// scheme: its chart is oci://<repoURL>/<chart> in freight), else its git
// repository's commit; empty when the freight has none. The target
// freight comes first.
func freightRevision(src map[string]any, freight []model.FreightReference) string {
	repo, _ := src["repoURL"].(string)
	chart, _ := src["chart"].(string)
	if repo == "" {
		return ""
	}
	if chart != "" {
		name := chart
		if !strings.Contains(repo, "://") {
			repo, name = "oci://"+strings.TrimSuffix(repo, "/")+"/"+chart, ""
		}
		v, _ := chartFromFreight(freight, repo, name)
		return v
	}
	c, _ := commitFromFreight(freight, repo, checkout{})
	return c.ID
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

// Kargo's names for what argocd-update writes on an Application.
const (
	// InfoPromotion is the operation info entry naming the promotion that
	// asked for the sync.
	InfoPromotion = "kargo.akuity.io/promotion"
	// AnnotationRefresh asks Argo CD to refresh the Application; "hard"
	// also drops its manifest cache.
	AnnotationRefresh = "argocd.argoproj.io/refresh"
	// OperationInitiator is who an automatic promotion's sync is initiated
	// by (Kargo's is "kargo-controller").
	OperationInitiator = "caravan"
)

// RequestSync sets an Application's operation to a sync, as Kargo does:
// initiated by the person who asked for the promotion (automated: false,
// so that Argo CD's sync windows for manual syncs apply), or by
// OperationInitiator (automated: true) for an automatic one; info records
// the promotion; a hard refresh is annotated; the Application's syncPolicy
// retry and syncOptions are copied into the operation, which Argo CD
// otherwise applies only to automated syncs. The previous operation state
// is dropped (Argo CD's API server does so when it starts an operation;
// writing the Application directly bypasses it).
func RequestSync(app map[string]any, promotion, actor string) {
	sync := map[string]any{}
	initiatedBy := map[string]any{"username": OperationInitiator, "automated": true}
	if model.CreatedByPerson(actor) {
		initiatedBy = map[string]any{"username": actor, "automated": false}
	}
	op := map[string]any{
		"initiatedBy": initiatedBy,
		"info": []any{
			map[string]any{"name": "Reason", "value": "Promotion triggered a sync of this Application resource."},
			map[string]any{"name": InfoPromotion, "value": promotion},
		},
		"sync": sync,
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
	md, _ := app["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		app["metadata"] = md
	}
	ann, _ := md["annotations"].(map[string]any)
	if ann == nil {
		ann = map[string]any{}
		md["annotations"] = ann
	}
	ann[AnnotationRefresh] = "hard"
	if status, ok := app["status"].(map[string]any); ok {
		delete(status, "operationState")
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

// operationTimes are when the Application's last operation finished and
// when Argo CD last reconciled it (zero when it does not say).
func operationTimes(app map[string]any) (finished, reconciled time.Time) {
	finished, _ = time.Parse(time.RFC3339, nestedString(app, "status", "operationState", "finishedAt"))
	reconciled, _ = time.Parse(time.RFC3339, nestedString(app, "status", "reconciledAt"))
	return finished, reconciled
}

// syncRunning says whether a sync is pending or running on the
// Application, and which.
func syncRunning(app map[string]any) string {
	if _, ok := app["operation"]; ok {
		return "a sync is pending"
	}
	status, _ := app["status"].(map[string]any)
	state, ok := status["operationState"].(map[string]any)
	if !ok {
		return ""
	}
	phase, _ := state["phase"].(string)
	if phase == "Succeeded" || phase == "Failed" || phase == "Error" {
		return ""
	}
	if finished, _ := operationTimes(app); !finished.IsZero() {
		return ""
	}
	return "its sync is " + strings.ToLower(firstOf(phase, "running"))
}

// settling says why the Application's health cannot be trusted yet after
// its last sync, or is empty: Argo CD assesses health in another loop than
// it syncs in, so right after a sync (within settle, Kargo's 10 s
// cool-down) or before Argo CD reconciled the Application again, its
// health may describe what ran before.
func settling(app map[string]any, settle time.Duration, now time.Time) (state model.HealthState, why string) {
	finished, reconciled := operationTimes(app)
	if finished.IsZero() {
		return "", ""
	}
	if reconciled.IsZero() || reconciled.Before(finished) {
		return model.HealthStateUnknown, "it was not reconciled since its last sync finished: its health is not trusted yet"
	}
	if since := now.Sub(finished); since < settle {
		return model.HealthStateProgressing, fmt.Sprintf("its sync finished %s ago: its health is trusted %s after a sync", since.Round(time.Second), settle)
	}
	return "", ""
}

// ApplicationHealth maps an Application's status.health.status to a
// stage health state, as Kargo does: Suspended counts as Progressing until
// the suspension is lifted; Degraded, Missing and Unknown are Unhealthy.
func ApplicationHealth(app map[string]any) (model.HealthState, string) {
	status := nestedString(app, "status", "health", "status")
	switch status {
	case "Healthy":
		return model.HealthStateHealthy, ""
	case "Progressing", "":
		return model.HealthStateProgressing, "the Application is progressing"
	case "Suspended":
		return model.HealthStateProgressing, "the Application is suspended"
	}
	msg := "the Application is " + status
	if m := nestedString(app, "status", "health", "message"); m != "" {
		msg += ": " + m
	}
	return model.HealthStateUnhealthy, msg
}

// appHealth is the health of an Application a step registered a check
// for, as Kargo's Argo CD health check assesses it, in order: a condition
// saying its spec cannot be rendered or compared is Unhealthy; a pending
// or running sync is Progressing (Kargo: Unknown); health right after a
// sync is not trusted (see settling); a source whose last sync ended at
// another revision than its desired one is Unhealthy; then its health
// (ApplicationHealth).
func appHealth(app map[string]any, want []argoSource, settle time.Duration, now time.Time) (model.HealthState, string) {
	if bad := errorConditions(app); bad != "" {
		return model.HealthStateUnhealthy, bad
	}
	if why := syncRunning(app); why != "" {
		return model.HealthStateProgressing, why
	}
	if state, why := settling(app, settle, now); why != "" {
		return state, why
	}
	if state, why := syncedAt(app, want); state != model.HealthStateHealthy {
		return state, why
	}
	return ApplicationHealth(app)
}

// syncedAt checks that every source of want with a desiredRevision was
// synced at it: by the last sync's result (what Argo CD applied), or, for
// an Application never synced by an operation, by status.sync.
func syncedAt(app map[string]any, want []argoSource) (model.HealthState, string) {
	if !slices.ContainsFunc(want, func(u argoSource) bool { return u.DesiredRevision != "" }) {
		return model.HealthStateHealthy, ""
	}
	sources := appSources(app)
	for _, u := range want {
		if u.DesiredRevision != "" && findSource(sources, u) < 0 {
			return model.HealthStateUnknown, "it has no source from " + u.RepoURL
		}
	}
	status, _ := app["status"].(map[string]any)
	state, _ := status["operationState"].(map[string]any)
	if result, ok := state["syncResult"].(map[string]any); ok {
		if why := revisionsDiffer(app, want, syncResultRevisions(result)); why != "" {
			return model.HealthStateUnhealthy, why
		}
		return model.HealthStateHealthy, ""
	}
	sync, _ := status["sync"].(map[string]any)
	var observed []string
	if list, ok := sync["revisions"].([]any); ok && len(list) > 0 {
		for _, r := range list {
			s, _ := r.(string)
			observed = append(observed, s)
		}
	} else {
		s, _ := sync["revision"].(string)
		observed = []string{s}
	}
	if why := revisionsDiffer(app, want, observed); why != "" {
		return model.HealthStateProgressing, why
	}
	return model.HealthStateHealthy, ""
}

// waitConditions are the values of argocd-wait's waitFor, and whether
// each is a health condition.
var waitConditions = map[string]bool{"health": true, "suspended": true, "degraded": true, "sync": false, "operation": false}

// argocdWait is Running until the Applications show what waitFor asks
// (healthy, synced, no operation running, by default), as Kargo's; it
// registers the same health check as argocd-update. An Application with a
// ComparisonError or InvalidSpecError condition fails it, and so does one
// that is Degraded once its last sync finished and settled, when health
// is waited for (not degraded).
func argocdWait(ctx context.Context, sc *Context, cfg *argoWaitConfig) (Result, error) {
	if sc.Applications == nil {
		return Result{}, Terminal(errors.New("argocd-wait: no Kubernetes API is configured (set CARAVAN_KUBECONFIG)"))
	}
	var checked []resolved
	var waiting []string
	now := time.Now()
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
			why, failed := notReady(r.app, waitFor, a.Sources, sc.ArgoCDSettle, now)
			if failed {
				return Result{Status: model.PromotionStepStatusFailed, Message: fmt.Sprintf("application %s: %s", r, why)}, nil
			}
			if why != "" {
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

// notReady says why the Application does not show what waitFor asks (empty
// when it does), and whether that fails the wait.
func notReady(app map[string]any, waitFor []string, want []argoSource, settle time.Duration, now time.Time) (string, bool) {
	has := func(c string) bool { return slices.Contains(waitFor, c) }
	if has("operation") {
		if why := syncRunning(app); why != "" {
			return why, false
		}
	}
	health := nestedString(app, "status", "health", "status")
	var healthy []string
	for _, c := range waitFor {
		if waitConditions[c] {
			healthy = append(healthy, map[string]string{"health": "Healthy", "suspended": "Suspended", "degraded": "Degraded"}[c])
		}
	}
	if len(healthy) > 0 {
		if _, why := settling(app, settle, now); why != "" {
			return why, false
		}
		finished, _ := operationTimes(app)
		// Degraded once a sync finished and settled is the sync's outcome,
		// not a step on the way: waiting does not fix it.
		if health == "Degraded" && has("health") && !has("degraded") && !finished.IsZero() && syncRunning(app) == "" {
			msg := "it is Degraded after its sync"
			if m := nestedString(app, "status", "health", "message"); m != "" {
				msg += ": " + m
			}
			return msg, true
		}
		if !slices.Contains(healthy, health) {
			if health == "" {
				health = "of unknown health"
			}
			return fmt.Sprintf("it is %s, not %s", health, strings.Join(healthy, " or ")), false
		}
	}
	if has("sync") {
		if sync := nestedString(app, "status", "sync", "status"); sync != "Synced" {
			if sync == "" {
				sync = "of unknown sync status"
			}
			return "it is " + sync, false
		}
		if state, why := syncedAt(app, want); state != model.HealthStateHealthy {
			return why, false
		}
	}
	return "", false
}

// CheckHealth evaluates a health check argocd-update or argocd-wait
// registered: the worst health of its Applications (appHealth), their
// health not trusted within settle of their last sync.
func CheckHealth(ctx context.Context, apps Applications, check model.HealthCheckStep, settle time.Duration) model.Health {
	var cfg argoConfig
	sc := &Context{Config: check.Config}
	if err := sc.Decode(&cfg); err != nil {
		return model.Health{Status: model.HealthStateUnknown, Issues: []string{err.Error()}}
	}
	rank := map[model.HealthState]int{model.HealthStateHealthy: 0, model.HealthStateProgressing: 1, model.HealthStateUnknown: 2, model.HealthStateUnhealthy: 3}
	h := model.Health{Status: model.HealthStateHealthy}
	now := time.Now()
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
			state, why = appHealth(app, a.Sources, settle, now)
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
