package model

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
)

var (
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	varName      = regexp.MustCompile(`^[a-zA-Z_]\w*$`)
	stepAlias    = regexp.MustCompile(`^[a-zA-Z_][\w-]*$`)
)

// Validate checks decoded documents as Kargo's admission does: each object
// on its own, then against the set made of existing objects (the stored
// objects of the affected projects) overridden by the documents (same kind,
// project and name): referenced projects, upstream Stages and Warehouses
// must exist, and the Stage graph must have no cycle.
func Validate(docs []Document, existing []Object) Issues {
	v := &validator{issues: Duplicates(docs)}
	for _, d := range docs {
		v.doc = d
		v.object(d.Object)
	}
	v.set(docs, existing)
	return v.issues
}

type validator struct {
	doc    Document
	issues Issues
}

func (v *validator) add(field, format string, args ...any) {
	meta := v.doc.Object.GetObjectMeta()
	v.issues = append(v.issues, Issue{
		Document: v.doc.Index,
		Kind:     v.doc.Object.GetTypeMeta().Kind,
		Name:     meta.Name,
		Field:    field,
		Message:  fmt.Sprintf(format, args...),
	})
}

func (v *validator) object(obj Object) {
	kind := obj.GetTypeMeta().Kind
	meta := obj.GetObjectMeta()
	v.metadata(kind, meta)
	switch o := obj.(type) {
	case *ProjectConfig:
		if meta.Namespace != "" && meta.Name != meta.Namespace {
			v.add("metadata.name", "must equal the namespace (the project) %q", meta.Namespace)
		}
		v.projectConfig(o)
	case *Warehouse:
		v.warehouse(o)
	case *Stage:
		v.stage(o)
	case *PromotionTask:
		v.taskSpec(&o.Spec)
	case *ClusterPromotionTask:
		v.taskSpec(&o.Spec)
	case *Promotion:
		if o.Spec.Stage == "" {
			v.add("spec.stage", "must not be empty")
		}
		if o.Spec.Freight == "" {
			v.add("spec.freight", "must not be empty")
		}
		v.vars("spec.vars", o.Spec.Vars)
		v.steps("spec.steps", o.Spec.Steps)
	case *Freight:
		if o.Origin.Kind != FreightOriginKindWarehouse || o.Origin.Name == "" {
			v.add("origin", "must name a Warehouse")
		}
	case *ClusterConfig:
		if meta.Name != ClusterConfigName {
			v.add("metadata.name", "must be %q: a cluster has one ClusterConfig", ClusterConfigName)
		}
		if g := o.Spec.GitClient; g != nil {
			v.gitClient("spec.gitClient", g.Name, g.Email, "")
		}
		for _, is := range ValidateWindows(o.Spec.PromotionWindows, true) {
			v.add("spec.promotionWindows"+is.Field, "%s", is.Message)
		}
	case *PromotionRequest:
		if o.Spec.Stage == "" {
			v.add("spec.stage", "must not be empty")
		}
		if o.Spec.Freight == "" {
			v.add("spec.freight", "must not be empty")
		}
	case *AnalysisTemplate:
		v.analysis(&o.Spec)
	case *ClusterAnalysisTemplate:
		v.analysis(&o.Spec)
	case *Secret:
		if t, ok := meta.Labels[LabelCredType]; ok {
			switch t {
			case CredTypeGit, CredTypeImage, CredTypeHelm, CredTypeGeneric:
			default:
				v.add(fmt.Sprintf("metadata.labels[%q]", LabelCredType), "must be one of git, image, helm, generic; got %q", t)
			}
		}
	case *RoleBinding:
		if o.RoleRef.Name == "" || o.RoleRef.Kind == "" {
			v.add("roleRef", "kind and name are required")
		}
	}
}

func (v *validator) metadata(kind string, meta *ObjectMeta) {
	switch {
	case meta.Name == "":
		v.add("metadata.name", "must not be empty")
	case kind == KindProject && (len(meta.Name) > 63 || !dnsLabel.MatchString(meta.Name)):
		v.add("metadata.name", "%q is not a valid project name: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters", meta.Name)
	case len(meta.Name) > 253 || !dnsSubdomain.MatchString(meta.Name):
		v.add("metadata.name", "%q is not a valid name: an RFC 1123 subdomain (lower-case letters, digits, '-' and '.')", meta.Name)
	}
	switch {
	case ClusterScoped(kind) && meta.Namespace != "":
		v.add("metadata.namespace", "must be empty: %s is cluster-scoped", kind)
	case !ClusterScoped(kind) && meta.Namespace == "":
		v.add("metadata.namespace", "must be set to the project")
	case !ClusterScoped(kind) && (len(meta.Namespace) > 63 || !dnsLabel.MatchString(meta.Namespace)):
		v.add("metadata.namespace", "%q is not a valid project name", meta.Namespace)
	}
}

func (v *validator) projectConfig(pc *ProjectConfig) {
	if g := pc.Spec.GitClient; g != nil {
		v.gitClient("spec.gitClient", g.Name, g.Email, g.BranchPrefix)
	}
	for i, p := range pc.Spec.PromotionPolicies {
		f := fmt.Sprintf("spec.promotionPolicies[%d]", i)
		if (p.Stage == "") == (p.StageSelector == nil) {
			v.add(f, "exactly one of stage or stageSelector must be set")
		}
		if p.StageSelector != nil {
			v.pattern(f+".stageSelector.name", p.StageSelector.Name, true)
		}
		v.autoRollback(f+".autoRollback", p.AutoRollback)
	}
	v.approvalPolicies(pc.Spec.ApprovalPolicies)
	v.notifications(pc.Spec.Notifications)
	for _, is := range ValidateWindows(pc.Spec.PromotionWindows, false) {
		v.add("spec.promotionWindows"+is.Field, "%s", is.Message)
	}
	names := map[string]bool{}
	for i, r := range pc.Spec.WebhookReceivers {
		f := fmt.Sprintf("spec.webhookReceivers[%d]", i)
		if r.Name == "" {
			v.add(f+".name", "must not be empty")
		} else if names[r.Name] {
			v.add(f+".name", "duplicate receiver name %q", r.Name)
		}
		names[r.Name] = true
		if n := len(r.Providers()); n != 1 {
			v.add(f, "exactly one receiver type must be set, got %d", n)
		}
	}
}

func (v *validator) warehouse(w *Warehouse) {
	if w.Spec.Interval.Duration < 0 {
		v.add("spec.interval", "must not be negative")
	}
	switch w.Spec.FreightCreationPolicy {
	case "", FreightCreationPolicyAutomatic, FreightCreationPolicyManual:
	default:
		v.add("spec.freightCreationPolicy", "must be Automatic or Manual, got %q", w.Spec.FreightCreationPolicy)
	}
	if len(w.Spec.Subscriptions) == 0 {
		v.add("spec.subscriptions", "must not be empty")
	}
	subNames := map[string]bool{}
	for i, sub := range w.Spec.Subscriptions {
		f := fmt.Sprintf("spec.subscriptions[%d]", i)
		if sub.Name != "" {
			if subNames[sub.Name] {
				v.add(f+".name", "duplicate subscription name %q", sub.Name)
			}
			subNames[sub.Name] = true
		}
		types := sub.Types()
		if len(types) != 1 {
			v.add(f, "exactly one of git, image or chart must be set, got %d (%s)", len(types), strings.Join(types, ", "))
			continue
		}
		if len(sub.Others) > 0 {
			v.add(f+"."+types[0], "subscriptions of type %q are not supported: Caravan discovers git, image and chart subscriptions only (Kargo serves other types through subscriber plugins)", types[0])
			continue
		}
		switch {
		case sub.Image != nil:
			v.image(f+".image", sub.Image)
		case sub.Git != nil:
			v.git(f+".git", sub.Git)
		case sub.Chart != nil:
			s := sub.Chart
			f += ".chart"
			v.repoURL(f+".repoURL", RepoChart, s.RepoURL)
			v.constraint(f+".semverConstraint", s.SemverConstraint)
			v.limit(f+".discoveryLimit", s.DiscoveryLimit)
		}
	}
}

// repoURL applies the repository URL policy (CheckRepoURL) to field f.
func (v *validator) repoURL(f string, kind RepoKind, u string) {
	if u == "" {
		v.add(f, "must not be empty")
		return
	}
	if err := CheckRepoURL(kind, u); err != nil {
		v.add(f, "%v", err)
	}
}

func (v *validator) image(f string, s *ImageSubscription) {
	v.repoURL(f+".repoURL", RepoImage, s.RepoURL)
	switch s.ImageSelectionStrategy {
	case "", ImageSelectionStrategySemVer:
		v.constraint(f+".semverConstraint", s.SemverConstraint)
		v.constraint(f+".constraint", s.Constraint)
	case ImageSelectionStrategyDigest:
		if s.EffectiveConstraint() == "" {
			v.add(f+".constraint", "must name the tag to follow when imageSelectionStrategy is Digest")
		}
	case ImageSelectionStrategyLexical, ImageSelectionStrategyNewestBuild:
	default:
		v.add(f+".imageSelectionStrategy", "must be one of Digest, Lexical, NewestBuild, SemVer; got %q", s.ImageSelectionStrategy)
	}
	if s.SemverConstraint != "" && s.Constraint != "" {
		v.add(f, "semverConstraint and constraint are mutually exclusive")
	}
	v.regex(f+".allowTags", s.AllowTags)
	v.regexes(f+".allowTagsRegexes", s.AllowTagsRegexes)
	v.regexes(f+".ignoreTagsRegexes", s.IgnoreTagsRegexes)
	v.limit(f+".discoveryLimit", s.DiscoveryLimit)
}

func (v *validator) git(f string, s *GitSubscription) {
	v.repoURL(f+".repoURL", RepoGit, s.RepoURL)
	switch s.CommitSelectionStrategy {
	case "", CommitSelectionStrategyNewestFromBranch, CommitSelectionStrategyLexical,
		CommitSelectionStrategyNewestTag, CommitSelectionStrategySemVer:
	default:
		v.add(f+".commitSelectionStrategy", "must be one of Lexical, NewestFromBranch, NewestTag, SemVer; got %q", s.CommitSelectionStrategy)
	}
	v.constraint(f+".semverConstraint", s.SemverConstraint)
	v.regex(f+".allowTags", s.AllowTags)
	v.regexes(f+".allowTagsRegexes", s.AllowTagsRegexes)
	v.regexes(f+".ignoreTagsRegexes", s.IgnoreTagsRegexes)
	for i, p := range s.IncludePaths {
		v.pattern(fmt.Sprintf("%s.includePaths[%d]", f, i), p, false)
	}
	for i, p := range s.ExcludePaths {
		v.pattern(fmt.Sprintf("%s.excludePaths[%d]", f, i), p, false)
	}
	v.limit(f+".discoveryLimit", s.DiscoveryLimit)
	if s.Since != "" {
		if _, err := time.Parse(time.RFC3339, s.Since); err != nil {
			v.add(f+".since", "must be an RFC 3339 time such as 2025-01-31T00:00:00Z, got %q", s.Since)
		}
	}
}

func (v *validator) regex(f, expr string) {
	if expr == "" {
		return
	}
	if _, err := regexp.Compile(expr); err != nil {
		v.add(f, "invalid regular expression %q: %v", expr, err)
	}
}

func (v *validator) regexes(f string, exprs []string) {
	for i, e := range exprs {
		if e == "" {
			v.add(fmt.Sprintf("%s[%d]", f, i), "must not be empty")
			continue
		}
		v.regex(fmt.Sprintf("%s[%d]", f, i), e)
	}
}

// pattern checks a selector that is exact, "regex:"/"regexp:" or "glob:".
func (v *validator) pattern(f, p string, allowEmpty bool) {
	switch {
	case p == "":
		if !allowEmpty {
			v.add(f, "must not be empty")
		}
	case strings.HasPrefix(p, "regex:"):
		v.regex(f, strings.TrimPrefix(p, "regex:"))
	case strings.HasPrefix(p, "regexp:"):
		v.regex(f, strings.TrimPrefix(p, "regexp:"))
	case strings.HasPrefix(p, "glob:"):
		if _, err := path.Match(strings.TrimPrefix(p, "glob:"), ""); err != nil {
			v.add(f, "invalid glob pattern %q", strings.TrimPrefix(p, "glob:"))
		}
	}
}

func (v *validator) constraint(f, c string) {
	if c == "" {
		return
	}
	if _, err := semver.NewConstraint(c); err != nil {
		v.add(f, "invalid semver constraint %q: %v", c, err)
	}
}

func (v *validator) limit(f string, n int32) {
	if n != 0 && (n < 1 || n > MaxDiscoveryLimit) {
		v.add(f, "must be between 1 and %d, got %d", MaxDiscoveryLimit, n)
	}
}

func (v *validator) stage(s *Stage) {
	if len(s.Spec.RequestedFreight) == 0 {
		v.add("spec.requestedFreight", "must not be empty")
	}
	origins := map[FreightOrigin]bool{}
	for i, req := range s.Spec.RequestedFreight {
		f := fmt.Sprintf("spec.requestedFreight[%d]", i)
		if req.Origin.Kind != FreightOriginKindWarehouse {
			v.add(f+".origin.kind", "must be Warehouse, got %q", req.Origin.Kind)
		}
		if req.Origin.Name == "" {
			v.add(f+".origin.name", "must not be empty")
		}
		if origins[req.Origin] {
			v.add(f+".origin", "freight from %s is requested twice", req.Origin)
		}
		origins[req.Origin] = true
		src := req.Sources
		if !src.Direct && len(src.Stages) == 0 {
			v.add(f+".sources.stages", "must not be empty")
		}
		for j, up := range src.Stages {
			switch up {
			case "":
				v.add(fmt.Sprintf("%s.sources.stages[%d]", f, j), "must not be empty")
			case s.Name:
				v.add(fmt.Sprintf("%s.sources.stages[%d]", f, j), "a stage cannot be its own upstream")
			}
		}
		switch src.AvailabilityStrategy {
		case "", AvailabilityStrategyOneOf, AvailabilityStrategyAll:
		default:
			v.add(f+".sources.availabilityStrategy", "must be OneOf or All, got %q", src.AvailabilityStrategy)
		}
		if src.RequiredSoakTime != nil && src.RequiredSoakTime.Duration < 0 {
			v.add(f+".sources.requiredSoakTime", "must not be negative")
		}
		if o := src.AutoPromotionOptions; o != nil {
			switch o.SelectionPolicy {
			case "", AutoPromotionSelectionPolicyNewestFreight, AutoPromotionSelectionPolicyMatchUpstream:
			default:
				v.add(f+".sources.autoPromotionOptions.selectionPolicy", "must be NewestFreight or MatchUpstream, got %q", o.SelectionPolicy)
			}
		}
	}
	v.vars("spec.vars", s.Spec.Vars)
	if t := s.Spec.PromotionTemplate; t != nil {
		v.vars("spec.promotionTemplate.spec.vars", t.Spec.Vars)
		v.steps("spec.promotionTemplate.spec.steps", t.Spec.Steps)
	}
	if ver := s.Spec.Verification; ver != nil {
		for i, ref := range ver.AnalysisTemplates {
			f := fmt.Sprintf("spec.verification.analysisTemplates[%d]", i)
			if ref.Name == "" {
				v.add(f+".name", "must not be empty")
			}
			switch ref.Kind {
			case "", KindAnalysisTemplate, KindClusterAnalysisTemplate:
			default:
				v.add(f+".kind", "must be AnalysisTemplate or ClusterAnalysisTemplate, got %q", ref.Kind)
			}
		}
		for i, a := range ver.Args {
			if a.Name == "" {
				v.add(fmt.Sprintf("spec.verification.args[%d].name", i), "must not be empty")
			}
		}
	}
}

func (v *validator) taskSpec(spec *PromotionTaskSpec) {
	v.vars("spec.vars", spec.Vars)
	if len(spec.Steps) == 0 {
		v.add("spec.steps", "must not be empty")
	}
	v.steps("spec.steps", spec.Steps)
}

func (v *validator) vars(f string, vars []PromotionVariable) {
	seen := map[string]bool{}
	for i, pv := range vars {
		switch {
		case !varName.MatchString(pv.Name):
			v.add(fmt.Sprintf("%s[%d].name", f, i), "%q is not a valid variable name", pv.Name)
		case seen[pv.Name]:
			v.add(fmt.Sprintf("%s[%d].name", f, i), "duplicate variable %q", pv.Name)
		}
		seen[pv.Name] = true
	}
}

func (v *validator) steps(f string, steps []PromotionStep) {
	aliases := map[string]bool{}
	for i, st := range steps {
		sf := fmt.Sprintf("%s[%d]", f, i)
		if (st.Uses == "") == (st.Task == nil) {
			v.add(sf, "exactly one of uses or task must be set")
		}
		if st.Uses != "" {
			for _, is := range CheckStep(st.Uses, st.Config) {
				v.add(sf+"."+is.Field, "%s", is.Message)
			}
		}
		if st.Task != nil {
			if st.Task.Name == "" {
				v.add(sf+".task.name", "must not be empty")
			}
			switch st.Task.Kind {
			case "", KindPromotionTask, KindClusterPromotionTask:
			default:
				v.add(sf+".task.kind", "must be PromotionTask or ClusterPromotionTask, got %q", st.Task.Kind)
			}
		}
		if st.As != "" {
			if !stepAlias.MatchString(st.As) {
				v.add(sf+".as", "%q is not a valid alias: letters, digits, '_' and '-', not starting with a digit or '-'", st.As)
			}
			if aliases[st.As] {
				v.add(sf+".as", "duplicate step alias %q", st.As)
			}
			aliases[st.As] = true
		}
		v.vars(sf+".vars", st.Vars)
	}
}

func (v *validator) analysis(spec *AnalysisTemplateSpec) {
	if len(spec.Metrics) == 0 && len(spec.Templates) == 0 {
		v.add("spec.metrics", "must not be empty (unless spec.templates names templates to include)")
	}
	for i, ref := range spec.Templates {
		if ref.TemplateName == "" {
			v.add(fmt.Sprintf("spec.templates[%d].templateName", i), "must not be empty")
		}
	}
	names := map[string]bool{}
	for i, m := range spec.Metrics {
		f := fmt.Sprintf("spec.metrics[%d]", i)
		if m.Name == "" {
			v.add(f+".name", "must not be empty")
		} else if names[m.Name] {
			v.add(f+".name", "duplicate metric %q", m.Name)
		}
		names[m.Name] = true
		switch p := m.Provider.Names(); len(p) {
		case 0:
			v.add(f+".provider", "exactly one provider must be set, got none")
		case 1:
		default:
			v.add(f+".provider", "exactly one provider must be set, got %s", strings.Join(p, ", "))
		}
		if m.Provider.Web != nil && m.Provider.Web.URL == "" {
			v.add(f+".provider.web.url", "must not be empty")
		}
		if m.Provider.Prometheus != nil && m.Provider.Prometheus.Query == "" {
			v.add(f+".provider.prometheus.query", "must not be empty")
		}
		if m.Provider.Job != nil && len(m.Provider.Job.Spec) == 0 {
			v.add(f+".provider.job.spec", "must not be empty")
		}
	}
	for i, a := range spec.Args {
		if a.Name == "" {
			v.add(fmt.Sprintf("spec.args[%d].name", i), "must not be empty")
		}
	}
}

// key identifies an object in the set.
type key struct {
	kind, project, name string
}

func keyOf(obj Object) key {
	return key{obj.GetTypeMeta().Kind, ProjectName(obj), obj.GetObjectMeta().Name}
}

// set checks the rules that span objects.
func (v *validator) set(docs []Document, existing []Object) {
	all := map[key]Object{}
	for _, obj := range existing {
		all[keyOf(obj)] = obj
	}
	for _, d := range docs {
		all[keyOf(d.Object)] = d.Object
	}
	has := func(kind, project, name string) bool {
		_, ok := all[key{kind, project, name}]
		return ok
	}
	for _, d := range docs {
		v.doc = d
		obj := d.Object
		kind := obj.GetTypeMeta().Kind
		project := obj.GetObjectMeta().Namespace
		if !ClusterScoped(kind) && project != "" && !has(KindProject, project, project) {
			v.add("metadata.namespace", "project %q does not exist", project)
		}
		if p, ok := obj.(*Promotion); ok && p.Spec.Stage != "" {
			switch st, found := all[key{KindStage, project, p.Spec.Stage}].(*Stage); {
			case !found:
				v.add("spec.stage", "stage %q does not exist in project %q", p.Spec.Stage, project)
			case st.IsControlFlow():
				v.add("spec.stage", "stage %q is a control-flow stage (it has no promotion steps): nothing is promoted into it, the freight available to it passes downstream on its own", p.Spec.Stage)
			}
		}
		s, ok := obj.(*Stage)
		if !ok {
			continue
		}
		for i, req := range s.Spec.RequestedFreight {
			f := fmt.Sprintf("spec.requestedFreight[%d]", i)
			if req.Origin.Kind == FreightOriginKindWarehouse && req.Origin.Name != "" &&
				!has(KindWarehouse, project, req.Origin.Name) {
				v.add(f+".origin.name", "warehouse %q does not exist in project %q", req.Origin.Name, project)
			}
			for j, up := range req.Sources.Stages {
				if up != "" && up != s.Name && !has(KindStage, project, up) {
					v.add(fmt.Sprintf("%s.sources.stages[%d]", f, j), "stage %q does not exist in project %q", up, project)
				}
			}
		}
	}
	v.cycles(docs, all)
}

// cycles reports each cycle of the Stage graph that has a Stage from docs,
// on the first such Stage.
func (v *validator) cycles(docs []Document, all map[key]Object) {
	inDocs := map[key]Document{}
	for _, d := range docs {
		if _, ok := d.Object.(*Stage); ok {
			inDocs[keyOf(d.Object)] = d
		}
	}
	if len(inDocs) == 0 {
		return
	}
	const (
		unseen = iota
		active
		done
	)
	state := map[key]int{}
	reported := map[string]bool{}
	var stack []key
	var visit func(k key)
	visit = func(k key) {
		state[k] = active
		stack = append(stack, k)
		s := all[k].(*Stage)
		for _, up := range s.UpstreamStages() {
			uk := key{KindStage, k.project, up}
			if _, ok := all[uk]; !ok || up == s.Name {
				continue
			}
			switch state[uk] {
			case unseen:
				visit(uk)
			case active:
				start := slices.Index(stack, uk)
				cycle := slices.Clone(stack[start:])
				v.reportCycle(cycle, inDocs, reported)
			}
		}
		stack = stack[:len(stack)-1]
		state[k] = done
	}
	keys := make([]key, 0, len(all))
	for k := range all {
		if k.kind == KindStage {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].project != keys[j].project {
			return keys[i].project < keys[j].project
		}
		return keys[i].name < keys[j].name
	})
	for _, k := range keys {
		if state[k] == unseen {
			visit(k)
		}
	}
}

func (v *validator) reportCycle(cycle []key, inDocs map[key]Document, reported map[string]bool) {
	// Rotate so the cycle starts at its smallest name: one report per cycle.
	least := 0
	for i, k := range cycle {
		if k.name < cycle[least].name {
			least = i
		}
	}
	cycle = append(cycle[least:], cycle[:least]...)
	names := make([]string, 0, len(cycle)+1)
	for _, k := range cycle {
		names = append(names, k.name)
	}
	names = append(names, cycle[0].name)
	// Edges point downstream → upstream; show the promotion direction.
	slices.Reverse(names)
	text := strings.Join(names, " -> ")
	id := cycle[0].project + "/" + text
	if reported[id] {
		return
	}
	for _, k := range cycle {
		if d, ok := inDocs[k]; ok {
			reported[id] = true
			v.doc = d
			v.add("spec.requestedFreight", "stages form a cycle: %s", text)
			return
		}
	}
}
