package analysis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Template is one AnalysisTemplate (or ClusterAnalysisTemplate) taking
// part in a run.
type Template struct {
	// Name names the template in messages, e.g. "smoke" or
	// "ClusterAnalysisTemplate/smoke".
	Name string
	Spec model.AnalysisTemplateSpec
}

// SecretLookup returns the value of key in the project's Secret name; an
// error wrapping ErrNoSecret when the Secret or the key does not exist.
type SecretLookup func(ctx context.Context, name, key string) (string, error)

// ErrNoSecret: the Secret or its key does not exist.
var ErrNoSecret = errors.New("no such secret")

// Spec is a run ready to go: the templates' metrics merged, their
// arguments resolved and substituted.
type Spec struct {
	Metrics []Metric
}

// Metric is one metric of a run with its settings parsed.
type Metric struct {
	Template string
	model.Metric
	// Provider is the provider's name (web, prometheus, job, plugin …).
	Provider                string
	DryRun                  bool
	Retention               int
	Interval, InitialDelay  time.Duration
	Count                   int // 0: one measurement without interval, endless with one
	FailureLimit            int // < 0: failures never fail the metric
	InconclusiveLimit       int
	ConsecutiveErrorLimit   int
	ConsecutiveSuccessLimit int
}

// Argo Rollouts' defaults.
const (
	DefaultConsecutiveErrorLimit = 4
	DefaultMeasurementRetention  = 10
)

// Build merges templates into one run, as Argo Rollouts merges the
// templates of an AnalysisRun: metric names must be unique across them,
// arguments of the same name must not disagree. args (the Stage's
// verification args, already evaluated) override template defaults;
// arguments declared nowhere are ignored. Every declared argument must end
// with a value, from args, its template's value or a Secret.
func Build(ctx context.Context, templates []Template, args map[string]string, secrets SecretLookup) (*Spec, error) {
	return BuildFor(ctx, templates, args, secrets, nil)
}

// FieldLookup returns the value of a field of the object a run belongs to
// (valueFrom.fieldRef.fieldPath, e.g. "metadata.labels['app']"); false
// when the object has no such field.
type FieldLookup func(path string) (string, bool)

// BuildFor is Build for a run whose object answers fieldRef arguments
// through fields (nil: fieldRef arguments are an error).
func BuildFor(ctx context.Context, templates []Template, args map[string]string, secrets SecretLookup, fields FieldLookup) (*Spec, error) {
	type declared struct {
		arg      model.Argument
		template string
	}
	var order []string
	decl := map[string]*declared{}
	for _, t := range templates {
		for _, a := range t.Spec.Args {
			d, ok := decl[a.Name]
			if !ok {
				decl[a.Name] = &declared{arg: a, template: t.Name}
				order = append(order, a.Name)
				continue
			}
			switch {
			case d.arg.Value == nil && d.arg.ValueFrom == nil:
				d.arg, d.template = a, t.Name
			case a.Value != nil && d.arg.Value != nil && *a.Value != *d.arg.Value:
				return nil, fmt.Errorf("argument %q has different values in templates %q and %q", a.Name, d.template, t.Name)
			}
		}
	}
	values := make(map[string]string, len(decl))
	for _, name := range order {
		d := decl[name]
		if v, ok := args[name]; ok {
			values[name] = v
			continue
		}
		switch {
		case d.arg.Value != nil:
			values[name] = *d.arg.Value
		case d.arg.ValueFrom != nil && d.arg.ValueFrom.SecretKeyRef != nil:
			ref := d.arg.ValueFrom.SecretKeyRef
			if secrets == nil {
				return nil, fmt.Errorf("template %q: argument %q: no secrets available", d.template, name)
			}
			v, err := secrets(ctx, ref.Name, ref.Key)
			if err != nil {
				return nil, fmt.Errorf("template %q: argument %q from secret %q key %q: %w", d.template, name, ref.Name, ref.Key, err)
			}
			values[name] = v
		case d.arg.ValueFrom != nil && d.arg.ValueFrom.FieldRef != nil:
			path := d.arg.ValueFrom.FieldRef.FieldPath
			if fields == nil {
				return nil, fmt.Errorf("template %q: argument %q: valueFrom.fieldRef %q: the run has no object to read", d.template, name, path)
			}
			v, ok := fields(path)
			if !ok {
				return nil, fmt.Errorf("template %q: argument %q: valueFrom.fieldRef %q: no such field (metadata.name, metadata.namespace, metadata.labels['KEY'] and metadata.annotations['KEY'] are known)", d.template, name, path)
			}
			values[name] = v
		default:
			return nil, fmt.Errorf("template %q: argument %q has no value", d.template, name)
		}
	}

	spec := &Spec{}
	seen := map[string]string{}
	for _, t := range templates {
		dry, err := matchNames(t.Spec.DryRun, t.Spec.Metrics, func(d model.DryRun) string { return d.MetricName })
		if err != nil {
			return nil, fmt.Errorf("template %q: dryRun: %w", t.Name, err)
		}
		retention := map[string]int{}
		for i, r := range t.Spec.MeasurementRetention {
			re, err := regexp.Compile(r.MetricName)
			if err != nil {
				return nil, fmt.Errorf("template %q: measurementRetention[%d]: %w", t.Name, i, err)
			}
			for _, m := range t.Spec.Metrics {
				if re.MatchString(m.Name) {
					retention[m.Name] = int(r.Limit)
				}
			}
		}
		for _, m := range t.Spec.Metrics {
			if other, ok := seen[m.Name]; ok {
				return nil, fmt.Errorf("metric %q is in templates %q and %q", m.Name, other, t.Name)
			}
			seen[m.Name] = t.Name
			resolved, err := substitute(m, values)
			if err != nil {
				return nil, fmt.Errorf("template %q, metric %q: %w", t.Name, m.Name, err)
			}
			pm, err := parseMetric(t.Name, resolved)
			if err != nil {
				return nil, fmt.Errorf("template %q, metric %q: %w", t.Name, m.Name, err)
			}
			pm.DryRun = dry[m.Name]
			if r, ok := retention[m.Name]; ok && r > 0 {
				pm.Retention = r
			}
			spec.Metrics = append(spec.Metrics, pm)
		}
	}
	return spec, nil
}

// MetaFields answers fieldRef paths from an object's metadata, as
// Kubernetes' downward API spells them: metadata.name, metadata.namespace,
// metadata.labels['KEY'] and metadata.annotations['KEY'].
func MetaFields(name, namespace string, labels, annotations map[string]string) FieldLookup {
	return func(path string) (string, bool) {
		switch path {
		case "metadata.name":
			return name, true
		case "metadata.namespace":
			return namespace, true
		}
		for prefix, m := range map[string]map[string]string{"metadata.labels": labels, "metadata.annotations": annotations} {
			rest, ok := strings.CutPrefix(path, prefix+"[")
			if !ok || !strings.HasSuffix(rest, "]") || len(rest) < 3 {
				continue
			}
			key := rest[:len(rest)-1]
			if q := key[0]; (q == '\'' || q == '"') && key[len(key)-1] == q {
				key = key[1 : len(key)-1]
			} else {
				return "", false
			}
			v, ok := m[key]
			return v, ok
		}
		return "", false
	}
}

// matchNames returns the metrics matched by rules whose names are regular
// expressions (Argo's dryRun: "*"-style ".*" matches all). A rule matching
// no metric is an error, as in Argo.
func matchNames[T any](rules []T, metrics []model.Metric, name func(T) string) (map[string]bool, error) {
	out := map[string]bool{}
	for i, r := range rules {
		pattern := name(r)
		if pattern == "*" {
			pattern = ".*"
		}
		re, err := regexp.Compile(pattern)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		matched := 0
		for _, m := range metrics {
			if re.MatchString(m.Name) {
				out[m.Name] = true
				matched++
			}
		}
		if matched == 0 {
			return nil, fmt.Errorf("[%d]: %q matches no metric", i, name(r))
		}
	}
	return out, nil
}

var placeholder = regexp.MustCompile(`\{\{\s*args\.([A-Za-z0-9_.\-]+)\s*\}\}`)

// substitute replaces {{args.NAME}} in every string of the metric.
func substitute(m model.Metric, values map[string]string) (model.Metric, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return m, err
	}
	if !strings.Contains(string(raw), "{{") {
		return m, nil
	}
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return m, err
	}
	var missing []string
	tree = walkStrings(tree, func(s string) string {
		return placeholder.ReplaceAllStringFunc(s, func(p string) string {
			name := placeholder.FindStringSubmatch(p)[1]
			v, ok := values[name]
			if !ok {
				missing = append(missing, name)
				return p
			}
			return v
		})
	})
	if len(missing) > 0 {
		return m, fmt.Errorf("unresolved arguments: args.%s", strings.Join(missing, ", args."))
	}
	raw, err = json.Marshal(tree)
	if err != nil {
		return m, err
	}
	var out model.Metric
	if err := json.Unmarshal(raw, &out); err != nil {
		return m, fmt.Errorf("after substituting arguments: %w", err)
	}
	return out, nil
}

func walkStrings(v any, fn func(string) string) any {
	switch t := v.(type) {
	case string:
		return fn(t)
	case []any:
		for i := range t {
			t[i] = walkStrings(t[i], fn)
		}
	case map[string]any:
		for k := range t {
			t[k] = walkStrings(t[k], fn)
		}
	}
	return v
}

func parseMetric(template string, m model.Metric) (Metric, error) {
	pm := Metric{Template: template, Metric: m, Retention: DefaultMeasurementRetention}
	names := m.Provider.Names()
	if len(names) != 1 {
		return pm, fmt.Errorf("exactly one provider is required, got %d", len(names))
	}
	pm.Provider = names[0]
	var err error
	if pm.Interval, err = duration(m.Interval); err != nil {
		return pm, fmt.Errorf("interval: %w", err)
	}
	if pm.InitialDelay, err = duration(m.InitialDelay); err != nil {
		return pm, fmt.Errorf("initialDelay: %w", err)
	}
	if pm.Count, err = intOr(m.Count, 0); err != nil {
		return pm, fmt.Errorf("count: %w", err)
	}
	if pm.FailureLimit, err = intOr(m.FailureLimit, 0); err != nil {
		return pm, fmt.Errorf("failureLimit: %w", err)
	}
	if pm.InconclusiveLimit, err = intOr(m.InconclusiveLimit, 0); err != nil {
		return pm, fmt.Errorf("inconclusiveLimit: %w", err)
	}
	if pm.ConsecutiveErrorLimit, err = intOr(m.ConsecutiveErrorLimit, DefaultConsecutiveErrorLimit); err != nil {
		return pm, fmt.Errorf("consecutiveErrorLimit: %w", err)
	}
	if pm.ConsecutiveSuccessLimit, err = intOr(m.ConsecutiveSuccessLimit, 0); err != nil {
		return pm, fmt.Errorf("consecutiveSuccessLimit: %w", err)
	}
	switch {
	case pm.Count < 0:
		return pm, fmt.Errorf("count must not be negative")
	case pm.Count > 1 && pm.Interval == 0:
		return pm, fmt.Errorf("interval must be set when count > 1")
	case pm.ConsecutiveErrorLimit < 0:
		return pm, fmt.Errorf("consecutiveErrorLimit must not be negative")
	case pm.FailureLimit < 0 && pm.ConsecutiveSuccessLimit <= 0:
		return pm, fmt.Errorf("failureLimit < 0 needs consecutiveSuccessLimit > 0")
	case pm.Count > 0 && pm.ConsecutiveSuccessLimit > pm.Count:
		return pm, fmt.Errorf("consecutiveSuccessLimit (%d) must not exceed count (%d)", pm.ConsecutiveSuccessLimit, pm.Count)
	}
	return pm, nil
}

// count returns how many counted measurements end the metric (0: none).
func (m *Metric) count() int {
	if m.Count == 0 && m.Interval == 0 {
		return 1
	}
	return m.Count
}

func duration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

func intOr(v *model.IntOrString, def int) (int, error) {
	if v == nil {
		return def, nil
	}
	if !v.IsString {
		return int(v.IntVal), nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v.StrVal))
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", v.StrVal)
	}
	return n, nil
}
