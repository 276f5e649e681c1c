package expressions

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/expr-lang/expr"
	"go.yaml.in/yaml/v3"
)

// Lookup reads the objects the lookup functions need. Every method returns
// (nil, nil) when the object does not exist.
type Lookup interface {
	Freight(ctx context.Context, project, name string) (*model.Freight, error)
	StageMetadata(ctx context.Context, project, stage string) (map[string]any, error)
	ConfigMap(ctx context.Context, project, name string) (*model.ConfigMap, error)
	Secret(ctx context.Context, project, name string) (*model.Secret, error)
}

// SharedResourcesProject is the project holding the Secrets and ConfigMaps
// every project may read with sharedSecret() and sharedConfigMap(), as
// Kargo's shared resources namespace.
const SharedResourcesProject = "kargo-shared-resources"

// Context is the `ctx` variable.
type Context struct {
	Project       string
	Stage         string
	Promotion     string
	TargetFreight model.FreightReference
	TargetAlias   string
	Meta          map[string]any
	UIBaseURL     string
}

// Env is what an expression sees: variables, the freight being promoted
// (with the stage's current freight of other origins) and the statuses of
// the steps run so far.
type Env struct {
	Ctx         Context
	Vars        map[string]any
	Outputs     map[string]any
	TaskOutputs map[string]any
	// Freight is the collection the artifact functions search: the target
	// freight first, then the stage's current freight of other origins.
	Freight []model.FreightReference
	// Failed is true once a previous step failed or errored.
	Failed bool
	// Statuses holds the status of each step run so far, by alias.
	Statuses map[string]string
	Lookup   Lookup
	// Context is used by the lookup functions.
	Context context.Context
	// OnSecret, when set, receives every secret value an expression reads,
	// so the caller can redact it.
	OnSecret func(value string)
}

func (e *Env) variables() map[string]any {
	ctx := map[string]any{
		"project":   e.Ctx.Project,
		"stage":     e.Ctx.Stage,
		"promotion": e.Ctx.Promotion,
		"targetFreight": map[string]any{
			"name":  e.Ctx.TargetFreight.Name,
			"alias": e.Ctx.TargetAlias,
			"origin": map[string]any{
				"kind": string(e.Ctx.TargetFreight.Origin.Kind),
				"name": e.Ctx.TargetFreight.Origin.Name,
			},
		},
		"meta":      orEmpty(e.Ctx.Meta),
		"uiBaseUrl": e.Ctx.UIBaseURL,
	}
	return map[string]any{
		"ctx":     ctx,
		"vars":    orEmpty(e.Vars),
		"outputs": orEmpty(e.Outputs),
		"task":    map[string]any{"outputs": orEmpty(e.TaskOutputs)},
	}
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func (e *Env) context() context.Context {
	if e.Context != nil {
		return e.Context
	}
	return context.Background()
}

func (e *Env) functions() []expr.Option {
	fns := map[string]func(args ...any) (any, error){
		"quote":           fnQuote,
		"unsafeQuote":     fnUnsafeQuote,
		"asJSON":          fnAsJSON,
		"asYAML":          fnAsYAML,
		"warehouse":       fnWarehouse,
		"commitFrom":      e.commitFrom,
		"imageFrom":       e.imageFrom,
		"chartFrom":       e.chartFrom,
		"artifactFrom":    e.artifactFrom,
		"freightMetadata": e.freightMetadata,
		"freightStatus":   e.freightStatus,
		"stageMetadata":   e.stageMetadata,
		"configMap":       e.configMap(false),
		"sharedConfigMap": e.configMap(true),
		"secret":          e.secret(false),
		"sharedSecret":    e.secret(true),
		"semverParse":     fnSemverParse,
		"semverDiff":      fnSemverDiff,
		"success":         func(...any) (any, error) { return !e.Failed, nil },
		"failure":         func(...any) (any, error) { return e.Failed, nil },
		"always":          func(...any) (any, error) { return true, nil },
		"status":          e.status,
	}
	opts := make([]expr.Option, 0, len(fns))
	for name, fn := range fns {
		opts = append(opts, expr.Function(name, fn))
	}
	return opts
}

func argString(fn string, args []any, i int) (string, error) {
	if i >= len(args) {
		return "", fmt.Errorf("%s: missing argument %d", fn, i+1)
	}
	switch v := args[i].(type) {
	case string:
		return v, nil
	case quoted:
		return string(v), nil
	case nil:
		return "", nil
	default:
		return fmt.Sprint(v), nil
	}
}

func fnQuote(args ...any) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("quote: want 1 argument, got %d", len(args))
	}
	return quoted(render(args[0])), nil
}

// fnUnsafeQuote also makes its argument a string, but embedded in a longer
// string it keeps the surrounding double quotes, as Kargo's does.
func fnUnsafeQuote(args ...any) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("unsafeQuote: want 1 argument, got %d", len(args))
	}
	return quoted(`"` + render(args[0]) + `"`), nil
}

func fnAsJSON(args ...any) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("asJSON: want 1 argument, got %d", len(args))
	}
	b, err := json.Marshal(args[0])
	if err != nil {
		return nil, fmt.Errorf("asJSON: %w", err)
	}
	return quoted(b), nil
}

func fnAsYAML(args ...any) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("asYAML: want 1 argument, got %d", len(args))
	}
	b, err := yaml.Marshal(args[0])
	if err != nil {
		return nil, fmt.Errorf("asYAML: %w", err)
	}
	return quoted(b), nil
}

// fnWarehouse returns the origin of a Warehouse's freight, as Kargo's
// warehouse() does: an object with the fields Kind and Name.
func fnWarehouse(args ...any) (any, error) {
	name, err := argString("warehouse", args, 0)
	if err != nil {
		return nil, err
	}
	return model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: name}, nil
}

// origin reads an optional origin argument: what warehouse() returns, or
// an object {kind, name}.
func origin(args []any, i int) (*model.FreightOrigin, error) {
	if i >= len(args) || args[i] == nil {
		return nil, nil
	}
	switch o := args[i].(type) {
	case model.FreightOrigin:
		return &o, nil
	case *model.FreightOrigin:
		return o, nil
	case map[string]any:
		kind, _ := o["kind"].(string)
		name, _ := o["name"].(string)
		return &model.FreightOrigin{Kind: model.FreightOriginKind(kind), Name: name}, nil
	}
	return nil, fmt.Errorf("origin must be an object such as warehouse(\"name\"), got %T", args[i])
}

// find returns the first freight item of the collection (of origin o, when
// set) for which match returns a value.
func (e *Env) find(o *model.FreightOrigin, match func(f model.FreightReference) any) any {
	for _, f := range e.Freight {
		if o != nil && f.Origin != *o {
			continue
		}
		if v := match(f); v != nil {
			return v
		}
	}
	return nil
}

func (e *Env) commitFrom(args ...any) (any, error) {
	repo, err := argString("commitFrom", args, 0)
	if err != nil {
		return nil, err
	}
	return e.findFrom("commitFrom", "commit", repo, args, 1, func(f model.FreightReference) any {
		for _, c := range f.Commits {
			if model.NormalizeGitURL(c.RepoURL) == model.NormalizeGitURL(repo) {
				return artifact(c)
			}
		}
		return nil
	})
}

func (e *Env) imageFrom(args ...any) (any, error) {
	repo, err := argString("imageFrom", args, 0)
	if err != nil {
		return nil, err
	}
	return e.findFrom("imageFrom", "image", repo, args, 1, func(f model.FreightReference) any {
		for _, img := range f.Images {
			if img.RepoURL == repo {
				return artifact(img)
			}
		}
		return nil
	})
}

func (e *Env) chartFrom(args ...any) (any, error) {
	repo, err := argString("chartFrom", args, 0)
	if err != nil {
		return nil, err
	}
	var name string
	next := 1
	if len(args) > 1 {
		switch s := args[1].(type) {
		case string:
			name, next = s, 2
		case nil:
			next = 2
		}
	}
	return e.findFrom("chartFrom", "chart", repo, args, next, func(f model.FreightReference) any {
		for _, c := range f.Charts {
			if model.NormalizeChartURL(c.RepoURL) == model.NormalizeChartURL(repo) && (name == "" || c.Name == name) {
				return artifact(c)
			}
		}
		return nil
	})
}

// findFrom returns what match finds in the freight of the origin in
// args[i]; nil when the freight holds none, as Kargo's functions return
// (so that ?. and ?? work). fn names the function in errors.
func (e *Env) findFrom(fn, _, _ string, args []any, i int, match func(model.FreightReference) any) (any, error) {
	o, err := origin(args, i)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	return e.find(o, match), nil
}

// artifactFrom is the commit, image or chart from repo, nil when none.
func (e *Env) artifactFrom(args ...any) (any, error) {
	for _, fn := range []func(...any) (any, error){e.commitFrom, e.imageFrom, e.chartFrom} {
		v, err := fn(args...)
		if err != nil || v != nil {
			return v, err
		}
	}
	return nil, nil
}

func (e *Env) freight(fn string, args []any) (*model.Freight, error) {
	name, err := argString(fn, args, 0)
	if err != nil {
		return nil, err
	}
	if e.Lookup == nil {
		return nil, fmt.Errorf("%s: no freight lookup", fn)
	}
	f, err := e.Lookup.Freight(e.context(), e.Ctx.Project, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	return f, nil
}

func (e *Env) freightMetadata(args ...any) (any, error) {
	f, err := e.freight("freightMetadata", args)
	if err != nil || f == nil {
		return nil, err
	}
	return pick(f.Status.Metadata, args, 1)
}

func (e *Env) freightStatus(args ...any) (any, error) {
	f, err := e.freight("freightStatus", args)
	if err != nil || f == nil {
		return nil, err
	}
	return normalize(f.Status), nil
}

func (e *Env) stageMetadata(args ...any) (any, error) {
	stage, err := argString("stageMetadata", args, 0)
	if err != nil {
		return nil, err
	}
	if e.Lookup == nil {
		return nil, fmt.Errorf("stageMetadata: no stage lookup")
	}
	md, err := e.Lookup.StageMetadata(e.context(), e.Ctx.Project, stage)
	if err != nil {
		return nil, fmt.Errorf("stageMetadata: %w", err)
	}
	return pick(md, args, 1)
}

// pick returns md, or md[key] when args[i] names a key.
func pick(md map[string]any, args []any, i int) (any, error) {
	if i >= len(args) {
		return normalize(orEmpty(md)), nil
	}
	key, _ := args[i].(string)
	return normalize(md[key]), nil
}

// resourceArgs returns the name fn (configMap or secret) was called with
// and the project to look it up in: the shared resources project when
// shared, else the promotion's.
func (e *Env) resourceArgs(fn string, shared bool, args []any) (name, project string, err error) {
	name, err = argString(fn, args, 0)
	if err != nil {
		return "", "", err
	}
	if shared {
		return name, SharedResourcesProject, nil
	}
	return name, e.Ctx.Project, nil
}

func (e *Env) configMap(shared bool) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		name, project, err := e.resourceArgs("configMap", shared, args)
		if err != nil {
			return nil, err
		}
		out := map[string]any{}
		if e.Lookup == nil {
			return out, nil
		}
		cm, err := e.Lookup.ConfigMap(e.context(), project, name)
		if err != nil {
			return nil, fmt.Errorf("configMap %q: %w", name, err)
		}
		if cm != nil {
			for k, v := range cm.Data {
				out[k] = v
			}
		}
		return out, nil
	}
}

func (e *Env) secret(shared bool) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		name, project, err := e.resourceArgs("secret", shared, args)
		if err != nil {
			return nil, err
		}
		out := map[string]any{}
		if e.Lookup == nil {
			return out, nil
		}
		s, err := e.Lookup.Secret(e.context(), project, name)
		if err != nil {
			return nil, fmt.Errorf("secret %q: %w", name, err)
		}
		if s == nil {
			return out, nil
		}
		for k, v := range s.Data {
			out[k] = string(v)
		}
		for k, v := range s.StringData {
			out[k] = v
		}
		if e.OnSecret != nil {
			for _, v := range out {
				e.OnSecret(v.(string))
			}
		}
		return out, nil
	}
}

// fnSemverParse parses a version, "v" prefix allowed, into a value with
// Kargo's methods: Major(), Minor(), Patch(), Prerelease(), Metadata(),
// IncMajor(), IncMinor(), IncPatch() and String().
func fnSemverParse(args ...any) (any, error) {
	s, err := argString("semverParse", args, 0)
	if err != nil {
		return nil, err
	}
	v, err := semver.NewVersion(s)
	if err != nil {
		return nil, fmt.Errorf("semverParse %q: %w", s, err)
	}
	return v, nil
}

// fnSemverDiff names the most significant part two versions differ in:
// Major, Minor, Patch, Prerelease, Metadata or None; Incomparable when
// either is not a version.
func fnSemverDiff(args ...any) (any, error) {
	a, err := argString("semverDiff", args, 0)
	if err != nil {
		return nil, err
	}
	b, err := argString("semverDiff", args, 1)
	if err != nil {
		return nil, err
	}
	va, vb, ok := parseBoth(a, b)
	if !ok {
		return "Incomparable", nil
	}
	switch {
	case va.Major() != vb.Major():
		return "Major", nil
	case va.Minor() != vb.Minor():
		return "Minor", nil
	case va.Patch() != vb.Patch():
		return "Patch", nil
	case va.Prerelease() != vb.Prerelease():
		return "Prerelease", nil
	case va.Metadata() != vb.Metadata():
		return "Metadata", nil
	}
	return "None", nil
}

func (e *Env) status(args ...any) (any, error) {
	alias, err := argString("status", args, 0)
	if err != nil {
		return nil, err
	}
	if s, ok := e.Statuses[alias]; ok {
		return s, nil
	}
	return "", nil
}

// String renders a value as text, as an embedded expression would.
func String(v any) string { return render(v) }

// ParseBool reads a boolean config value that may be a string.
func ParseBool(v any) (bool, error) {
	switch t := v.(type) {
	case bool:
		return t, nil
	case string:
		return strconv.ParseBool(strings.TrimSpace(t))
	case nil:
		return false, nil
	}
	return false, fmt.Errorf("%v is not a boolean", v)
}

// artifact renders a commit, image or chart as a map with both its JSON
// field names (id, tag) and its Go field names (ID, Tag): Kargo's
// functions return Go structs, so Kargo users write imageFrom(r).Tag.
func artifact(v any) any {
	m, ok := normalize(v).(map[string]any)
	if !ok {
		return v
	}
	out := make(map[string]any, 2*len(m))
	for k, val := range m {
		out[k] = val
		out[goName(k)] = val
	}
	return out
}

func goName(k string) string {
	switch k {
	case "id":
		return "ID"
	case "repoURL":
		return "RepoURL"
	}
	if k == "" {
		return k
	}
	return strings.ToUpper(k[:1]) + k[1:]
}

func parseBoth(a, b string) (*semver.Version, *semver.Version, bool) {
	va, errA := semver.NewVersion(a)
	vb, errB := semver.NewVersion(b)
	return va, vb, errA == nil && errB == nil
}
