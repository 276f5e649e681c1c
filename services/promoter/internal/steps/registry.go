package steps

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
)

//go:generate go run ./gencatalog ../../../../pkg/model/stepcatalog.go

// Definition declares one step once: its name, its config, how it runs and
// what the engine needs to know of it. The step's config is the struct
// Typed decodes: its json tags are the properties of Kargo's schema the
// step acts on (and Caravan's few additions), a `step:"required"` tag
// marks a property that must be set. Everything else Caravan knows of
// the step (the config check at apply time, model.StepCatalog, the
// documentation's tables) is derived from the definitions.
type Definition struct {
	Name string
	// Step runs the step; made with Typed it carries its config type.
	Step Step
	// Replay marks a step that only changes the work dir: the engine runs
	// it again, with the outputs it saved, to rebuild a work dir lost with
	// a crashed process.
	Replay bool
	// WaitsForPullRequest marks a step whose Running result waits for a
	// pull request to be merged or closed: the engine runs it again at
	// once, instead of at the next poll, when woken for its repoURL.
	WaitsForPullRequest bool
	// Effects marks a step that acts outside the promotion's work dir
	// and the engine's git mirrors: it pushes, opens or waits for a pull
	// request, calls an HTTP endpoint, updates Argo CD, pushes an artifact
	// or writes Caravan's own state. A dry run stops before the first one.
	Effects bool
	// Outputs names the outputs the step sets, under Kargo's names.
	Outputs []string
	// Differences maps each property of Kargo's schema for the step that
	// Caravan does not act on as Kargo does (a path in model.StepSchema's
	// syntax) to why.
	Differences map[string]model.StepDifference
}

// configured is a Step that knows its config type (see Typed).
type configured interface {
	configType() reflect.Type
}

// Typed is a Step that runs fn with the step's config decoded into a C.
type Typed[C any] func(ctx context.Context, sc *Context, cfg *C) (Result, error)

// Run decodes the config and calls fn.
func (fn Typed[C]) Run(ctx context.Context, sc *Context) (Result, error) {
	var cfg C
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	return fn(ctx, sc, &cfg)
}

func (Typed[C]) configType() reflect.Type { return reflect.TypeFor[C]() }

// refused is a difference a config may not set: Caravan cannot do what
// Kargo would.
func refused(reason string) model.StepDifference {
	return model.StepDifference{Reason: reason}
}

// accepted is a difference a config may set: Caravan goes on without it
// and ends with the same result (Reason says how it differs).
func accepted(reason string) model.StepDifference {
	return model.StepDifference{Reason: reason, Accepted: true}
}

// Registry holds step definitions by name.
type Registry map[string]Definition

// Add registers d (tests, extensions), replacing a step of the same name.
func (r Registry) Add(d Definition) { r[d.Name] = d }

// Names lists the registry's steps, sorted.
func (r Registry) Names() []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Builtins returns every built-in step.
func Builtins() Registry {
	r := Registry{}
	for _, d := range builtins() {
		r.Add(d)
	}
	return r
}

// Schema is what apply-time validation and the documentation know of the
// step, derived from its config type.
func (d Definition) Schema() model.StepSchema {
	s := model.StepSchema{Name: d.Name, Outputs: d.Outputs, Differences: d.Differences}
	c, ok := d.Step.(configured)
	if !ok {
		s.Open = true
		return s
	}
	s.Fields = map[string]model.FieldType{}
	addFields(&s, "", c.configType())
	sort.Strings(s.Required)
	return s
}

var durationType = reflect.TypeFor[model.Duration]()

func addFields(s *model.StepSchema, path string, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			addFields(s, path, deref(f.Type))
			continue
		}
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		p := name
		if path != "" {
			p = path + "." + name
		}
		if f.Tag.Get("step") == "required" {
			s.Required = append(s.Required, p)
		}
		addType(s, p, f.Type)
	}
}

func addType(s *model.StepSchema, p string, t reflect.Type) {
	t = deref(t)
	s.Fields[p] = fieldType(t)
	if t == durationType {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		addFields(s, p, t)
	case reflect.Slice:
		addType(s, p+"[]", t.Elem())
	case reflect.Map:
		addType(s, p+"{}", t.Elem())
	}
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func fieldType(t reflect.Type) model.FieldType {
	if t == durationType {
		return model.FieldString
	}
	switch t.Kind() {
	case reflect.String:
		return model.FieldString
	case reflect.Bool:
		return model.FieldBool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return model.FieldNumber
	case reflect.Slice, reflect.Array:
		return model.FieldArray
	case reflect.Map, reflect.Struct:
		return model.FieldObject
	}
	return model.FieldAny
}

// Run runs the step d with sc: its config (expressions evaluated) is
// checked against the step's schema first, so a field the step does not
// take, a missing required one, or a Kargo property Caravan does not act
// on is a terminal error naming it. The work dir shows in the error and
// message only as paths relative to it, never as a path on the server,
// whatever a library put there.
func Run(ctx context.Context, d Definition, sc *Context) (Result, error) {
	if d.Step == nil {
		return Result{}, Terminal(fmt.Errorf("unknown step %q", d.Name))
	}
	var problems []string
	for _, is := range d.Schema().Check(sc.Config) {
		// Types are the decoder's: an expression's number is taken as
		// text where text belongs.
		if is.Kind != model.IssueType {
			problems = append(problems, is.Field+": "+is.Message)
		}
	}
	if len(problems) > 0 {
		return Result{}, Terminal(errors.New(strings.Join(problems, "; ")))
	}
	res, err := d.Step.Run(ctx, sc)
	if sc.Workspace == nil || sc.Workspace.Dir == nil {
		return res, err
	}
	res.Message = sc.Workspace.Dir.Scrub(res.Message)
	if err != nil {
		if msg := sc.Workspace.Dir.Scrub(err.Error()); msg != err.Error() {
			err = scrubbed{err: err, msg: msg}
		}
	}
	return res, err
}

// scrubbed is an error with another message: errors.Is and errors.As
// (IsTerminal included) see the original.
type scrubbed struct {
	err error
	msg string
}

func (e scrubbed) Error() string { return e.msg }
func (e scrubbed) Unwrap() error { return e.err }
