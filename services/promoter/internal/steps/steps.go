// Package steps holds Caravan's built-in promotion steps, under Kargo's
// names, with Kargo's config fields, defaults and outputs. Each step is
// declared once, in builtins.go, by a Definition; Registry maps names to
// definitions.
package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
	"github.com/caravan-cd/caravan/services/promoter/internal/workdir"
)

// StatusRunning is a step that has not finished yet (a wait or a polling
// http step): the engine runs it again later.
const StatusRunning model.PromotionStepStatus = "Running"

// Result is what a step run produced.
type Result struct {
	// Status is Succeeded (the default when empty), Failed, or
	// StatusRunning.
	Status      model.PromotionStepStatus
	Message     string
	Output      map[string]any
	HealthCheck *model.HealthCheckStep
	// PollAfter is how long a Running step suggests the engine waits
	// before running it again (a step's pollInterval); the engine never
	// polls more often than its own interval.
	PollAfter time.Duration
}

// Step is one built-in step. Run returns an error for a step that errored:
// a *TerminalError is not retried, any other error is retried up to the
// step's errorThreshold.
type Step interface {
	Run(ctx context.Context, sc *Context) (Result, error)
}

// Func adapts a function to Step.
type Func func(ctx context.Context, sc *Context) (Result, error)

// Run calls f.
func (f Func) Run(ctx context.Context, sc *Context) (Result, error) { return f(ctx, sc) }

// TerminalError marks an error that retrying cannot fix (bad config, a
// path outside the work dir, a merge conflict).
type TerminalError struct{ Err error }

func (e *TerminalError) Error() string { return e.Err.Error() }
func (e *TerminalError) Unwrap() error { return e.Err }

// Terminal wraps err as a *TerminalError.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &TerminalError{Err: err}
}

// IsTerminal reports whether err is (or wraps) a *TerminalError.
func IsTerminal(err error) bool {
	var t *TerminalError
	return errors.As(err, &t)
}

// Workspace is what a promotion's steps share: its work dir, the only
// place steps read and write files (every access goes through Dir, an
// os.Root at the work dir), and the Git work trees checked out in it.
type Workspace struct {
	Dir   *workdir.Dir
	Repos map[string]*WorkTree // by path in the work dir, links resolved
}

// WorkTree is a Git work tree git-clone checked out.
type WorkTree struct {
	*gitmirror.Repo
	// Author is git-clone's author: who commits and tags made in the work
	// tree are by, unless git-commit or git-tag say otherwise.
	Author *Author
}

// NewWorkspace opens the work dir at dir (made absolute); Close releases it.
func NewWorkspace(dir string) (*Workspace, error) {
	d, err := workdir.Open(dir)
	if err != nil {
		return nil, err
	}
	return &Workspace{Dir: d, Repos: map[string]*WorkTree{}}, nil
}

// Close releases the work trees (their mirrors may then be evicted) and
// the work dir.
func (w *Workspace) Close() error {
	for dir, r := range w.Repos {
		r.Close()
		delete(w.Repos, dir)
	}
	return w.Dir.Close()
}

// Services are the engine's shared parts steps use.
type Services struct {
	Git *gitmirror.Manager
	// Credentials returns the credentials for a repository of the project
	// (nil when there are none).
	Credentials func(ctx context.Context, project, repoURL string) (*gitmirror.Auth, error)
	// RepoCredentials returns the credentials of a type (model.CredTypeImage,
	// model.CredTypeHelm) for a repository of the project (nil when there
	// are none, or RepoCredentials is nil).
	RepoCredentials func(ctx context.Context, project, credType, repoURL string) (*creds.Credentials, error)
	// Metadata writes stage and freight metadata.
	Metadata MetadataWriter
	// Aliases sets a freight's alias.
	Aliases AliasWriter
	// Egress is the policy outbound requests pass (nil: the default
	// policy).
	Egress *egress.Policy
	Logger *slog.Logger
	// Applications reaches Argo CD Applications (nil: no Kubernetes API).
	Applications Applications
	// ArgoCDSettle is how long after an Application's sync argocd-wait and
	// the Argo CD health check do not trust its health (Kargo's 10 s).
	ArgoCDSettle time.Duration
}

// MetadataWriter merges metadata into a Stage's or a Freight's status.
type MetadataWriter interface {
	SetStageMetadata(ctx context.Context, project, stage string, values map[string]any) error
	SetFreightMetadata(ctx context.Context, project, freight string, values map[string]any) error
}

// AliasWriter sets a freight's alias.
type AliasWriter interface {
	SetFreightAlias(ctx context.Context, project, freight, alias string) error
}

// Context is one run of one step.
type Context struct {
	*Services
	Workspace *Workspace
	Project   string
	Stage     string
	Promotion string
	// Actor is who asked for the promotion (its created-by annotation):
	// a person, or Caravan's auto-promotion ("auto", "auto-rollback").
	Actor string
	// Alias is the step's alias.
	Alias string
	// Freight is the collection being promoted: the target freight first.
	Freight []model.FreightReference
	// TargetFreight is the name of the freight being promoted.
	TargetFreight string
	// GitIdentity is the project's default commit author and the prefix
	// of generated branches (zero: Caravan's defaults).
	GitIdentity model.GitIdentity
	// Config is the step's configuration, expressions evaluated.
	Config map[string]any
	// StartedAt is when the step first started (stable across retries and
	// a resume), used for commit times so a replayed commit is identical.
	StartedAt time.Time
	// Replay is set when the engine re-runs a finished step to rebuild a
	// work dir lost with a crashed process; Saved holds the outputs it
	// produced then.
	Replay bool
	Saved  map[string]any
	// Eval evaluates an expression against vars (plus the promotion's
	// variables and functions), for steps such as yaml-parse and http.
	Eval func(code string, vars map[string]any) (any, error)
}

// Decode decodes the step's config into v (a pointer to a struct with json
// tags); a config that does not fit is a terminal error. An expression's
// value of the wrong JSON type is taken as it reads: a number or boolean
// where text belongs as its text (${{ vars.tag }} reading 1.27), text
// holding a number where a number belongs as that number.
func (sc *Context) Decode(v any) error {
	cfg := any(sc.Config)
	for range 64 {
		b, err := json.Marshal(cfg)
		if err != nil {
			return Terminal(fmt.Errorf("config: %w", err))
		}
		err = json.Unmarshal(b, v)
		if err == nil {
			return nil
		}
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) || te.Field == "" {
			return Terminal(fmt.Errorf("config: %w", err))
		}
		var convert func(any) (any, bool)
		switch k := te.Type.Kind(); {
		case k == reflect.String && (te.Value == "number" || te.Value == "bool"):
			convert = func(x any) (any, bool) {
				switch x.(type) {
				case float64, bool:
					return fmt.Sprint(x), true
				}
				return x, false
			}
		case te.Value == "string" && (k >= reflect.Int && k <= reflect.Float64):
			convert = func(x any) (any, bool) {
				s, ok := x.(string)
				if !ok {
					return x, false
				}
				f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
				return f, err == nil
			}
		default:
			return Terminal(fmt.Errorf("config: %w", err))
		}
		var changed bool
		cfg, changed = convertAt(cfg, strings.Split(te.Field, "."), convert)
		if !changed {
			return Terminal(fmt.Errorf("config: %w", err))
		}
	}
	return Terminal(errors.New("config: too many type corrections"))
}

// convertAt returns v with the values at path (map keys; arrays stand for
// each of their elements) converted.
func convertAt(v any, path []string, convert func(any) (any, bool)) (any, bool) {
	switch t := v.(type) {
	case map[string]any:
		if len(path) == 0 {
			return v, false
		}
		child, ok := t[path[0]]
		if !ok {
			// An embedded struct's field shows its type's name in the
			// path: skip it.
			return convertAt(v, path[1:], convert)
		}
		nv, changed := convertAt(child, path[1:], convert)
		if !changed {
			return v, false
		}
		out := make(map[string]any, len(t))
		for k, val := range t {
			out[k] = val
		}
		out[path[0]] = nv
		return out, true
	case []any:
		out := make([]any, len(t))
		some := false
		for i, e := range t {
			nv, changed := convertAt(e, path, convert)
			out[i] = nv
			some = some || changed
		}
		return out, some
	}
	if len(path) == 0 {
		return convert(v)
	}
	return v, false
}

// checkPath checks a path the step was given: relative, inside the work
// dir, symbolic links included; anything else is a terminal error.
func (sc *Context) checkPath(p string) error {
	_, err := sc.Workspace.Dir.Resolve(p)
	return fsError(err)
}

// newPath checks path, an output the step is about to write; a file
// already there is a terminal error unless allowOverwrite.
func (sc *Context) newPath(path string, allowOverwrite bool) error {
	if err := sc.checkPath(path); err != nil {
		return err
	}
	if sc.Workspace.Dir.Exists(path) && !allowOverwrite {
		return Terminal(fmt.Errorf("%s exists (set allowOverwrite)", path))
	}
	return nil
}

// fsError marks an error of the work dir terminal when retrying cannot fix
// it: a path leaving the work dir or an invalid one.
func fsError(err error) error {
	if err == nil || IsTerminal(err) {
		return err
	}
	if errors.Is(err, workdir.ErrOutside) || errors.Is(err, fs.ErrInvalid) {
		return Terminal(err)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op == "resolve" {
		return Terminal(err)
	}
	return err
}

// composeOutput's config is free-form: its keys are its outputs.
func composeOutput(_ context.Context, sc *Context) (Result, error) {
	out := make(map[string]any, len(sc.Config))
	for k, v := range sc.Config {
		out[k] = v
	}
	return Result{Output: out}, nil
}

type failConfig struct {
	Message string `json:"message"`
}

func fail(_ context.Context, _ *Context, cfg *failConfig) (Result, error) {
	msg := cfg.Message
	if msg == "" {
		msg = "failed by a fail step"
	}
	return Result{Status: model.PromotionStepStatusFailed, Message: msg}, nil
}

type setMetadataConfig struct {
	Updates []struct {
		Kind string `json:"kind" step:"required"`
		// Name defaults to the promotion's stage or target freight.
		Name   string         `json:"name"`
		Values map[string]any `json:"values" step:"required"`
	} `json:"updates" step:"required"`
}

func setMetadata(ctx context.Context, sc *Context, cfg *setMetadataConfig) (Result, error) {
	if sc.Metadata == nil {
		return Result{}, Terminal(errors.New("set-metadata: no metadata store"))
	}
	for _, u := range cfg.Updates {
		var err error
		switch u.Kind {
		case model.KindStage:
			name := u.Name
			if name == "" {
				name = sc.Stage
			}
			err = sc.Metadata.SetStageMetadata(ctx, sc.Project, name, u.Values)
		case model.KindFreight:
			name := u.Name
			if name == "" {
				name = sc.TargetFreight
			}
			err = sc.Metadata.SetFreightMetadata(ctx, sc.Project, name, u.Values)
		default:
			return Result{}, Terminal(fmt.Errorf("set-metadata: kind must be Stage or Freight, got %q", u.Kind))
		}
		if err != nil {
			return Result{}, fmt.Errorf("set-metadata on %s %s: %w", u.Kind, u.Name, err)
		}
	}
	return Result{}, nil
}

type setFreightAliasConfig struct {
	// Name is the freight's name; the target freight's when empty.
	Name  string `json:"name"`
	Alias string `json:"alias" step:"required"`
}

func setFreightAlias(ctx context.Context, sc *Context, cfg *setFreightAliasConfig) (Result, error) {
	name := cfg.Name
	if name == "" {
		name = sc.TargetFreight
	}
	if sc.Aliases == nil {
		return Result{}, Terminal(errors.New("set-freight-alias: no freight store"))
	}
	if err := sc.Aliases.SetFreightAlias(ctx, sc.Project, name, cfg.Alias); err != nil {
		return Result{}, err
	}
	return Result{}, nil
}
