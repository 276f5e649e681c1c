// Package engine runs a Promotion's steps the way Kargo's promotion engine
// does: tasks inflated, expressions evaluated just in time, `if`,
// `continueOnError` and `retry` honoured, progress saved before and after
// every step so another replica can resume at the current step.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/expressions"
	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/redact"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
	"github.com/caravan-cd/caravan/services/promoter/internal/steps"
	"k8s.io/client-go/dynamic"
)

// ErrAborted is the cause the orchestrator cancels ctx with
// (context.WithCancelCause) to abort a promotion.
var ErrAborted = errors.New("promotion aborted")

// Defaults of the step loop.
const (
	defaultPollInterval = 2 * time.Second
	// defaultRunningTimeout bounds a step that keeps reporting Running
	// (a polling http step) when it has no retry.timeout.
	defaultRunningTimeout = 10 * time.Minute
)

// Options configure an Engine.
type Options struct {
	DataDir string       // <data dir>/promoter: work dirs and git mirrors live below it
	Store   *state.Store // freight, stages, warehouses, secrets, configmaps, (cluster)promotiontasks
	Logger  *slog.Logger
	// PollInterval is how long a Running step (a polling http step) waits
	// before it runs again, and the base of the retry backoff; 2s when 0.
	// Steps that wait for a pull request run again sooner when woken
	// (Wake).
	PollInterval time.Duration
	// Egress is the policy of the steps' outbound requests (http,
	// http-download, the pull request APIs); nil: the default policy.
	Egress *egress.Policy
	// Credentials finds repository credentials and caches exchanged tokens
	// (nil: a Finder over Store without SSH known hosts).
	Credentials *creds.Finder
	// Kube reaches the Argo CD Applications of argocd-update and
	// argocd-wait; without it those steps error and their health checks
	// are Unknown.
	Kube dynamic.Interface
	// ArgoCDSettle is how long after an Application's sync argocd-wait and
	// the Argo CD health checks do not trust its health; none when 0.
	ArgoCDSettle time.Duration
	// UIBaseURL is where users reach Caravan's UI (the gateway's external
	// URL): ctx.uiBaseUrl in expressions.
	UIBaseURL string
	// GitMirrorMaxBytes is the disk budget of the git mirrors (least
	// recently used idle mirrors are deleted beyond it);
	// gitmirror.DefaultMaxBytes when 0.
	GitMirrorMaxBytes int64
	// GitCacheMaxBytes is the memory budget of decoded git objects, shared
	// by all mirrors; gitmirror.DefaultCacheMaxBytes when 0.
	GitCacheMaxBytes int64
	// Freight, when set, is the index the set-freight-alias check reads
	// (is the alias another freight's?) instead of listing the project's
	// freight; when it is not current within 3s, or not set, the freight
	// is listed from KV.
	Freight *freightindex.Index
}

// Result is how a promotion ended.
type Result struct {
	Phase   model.PromotionPhase // Succeeded, Failed, Errored, Aborted
	Message string
}

// Engine runs promotions. It is safe for concurrent use.
type Engine struct {
	dataDir  string
	workRoot string
	store    *state.Store
	log      *slog.Logger
	poll     time.Duration
	git      *gitmirror.Manager
	registry steps.Registry
	egress   *egress.Policy
	creds    *creds.Finder
	apps     steps.Applications
	settle   time.Duration
	wakers   wakers
	// uiBaseURL is ctx.uiBaseUrl.
	uiBaseURL string
	// freight answers the set-freight-alias check when current.
	freight *freightindex.Index
}

// New builds an Engine.
func New(o Options) (*Engine, error) {
	if o.DataDir == "" {
		return nil, errors.New("engine: DataDir must be set")
	}
	// Work dirs and mirrors are absolute paths whatever the working
	// directory (the default data dir is the relative ./.caravan).
	dataDir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, fmt.Errorf("engine: data dir: %w", err)
	}
	o.DataDir = dataDir
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = defaultPollInterval
	}
	git, err := gitmirror.NewManager(filepath.Join(o.DataDir, "git"), gitmirror.Options{MaxBytes: o.GitMirrorMaxBytes, CacheMaxBytes: o.GitCacheMaxBytes, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	var apps steps.Applications
	if o.Kube != nil {
		apps = steps.KubeApplications(o.Kube)
	}
	finder := o.Credentials
	if finder == nil {
		finder = creds.NewFinder(creds.Store{Store: o.Store}, creds.Options{HTTPClient: o.Egress.Client(false)})
	}
	work := filepath.Join(o.DataDir, "work")
	if err := os.MkdirAll(work, 0o750); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	return &Engine{
		dataDir:  o.DataDir,
		workRoot: work,
		store:    o.Store,
		log:      o.Logger,
		poll:     o.PollInterval,
		git:      git,
		registry: steps.Builtins(),
		egress:   o.Egress,
		apps:     apps,
		settle:   o.ArgoCDSettle,
		creds:    finder,
		freight:  o.Freight,

		uiBaseURL: strings.TrimSuffix(o.UIBaseURL, "/"),
	}, nil
}

// Register adds or replaces a step (tests, extensions).
func (e *Engine) Register(name string, s steps.Step) {
	e.registry.Add(steps.Definition{Name: name, Step: s})
}

// flatStep is one step of the inflated list.
type flatStep struct {
	model.PromotionStep
	alias string
	// task is the alias of the task step the step came from ("" for a step
	// of the template itself); taskVars are that task's variables.
	task     string
	taskVars []model.PromotionVariable
}

// run is the state of one Run.
type run struct {
	e       *Engine
	p       *model.Promotion
	save    func(context.Context, *model.Promotion) error
	steps   []flatStep
	freight []model.FreightReference
	target  *model.Freight
	// stageVars are the Stage's spec.vars, under the promotion's own.
	stageVars []model.PromotionVariable
	ws        *steps.Workspace
	// secrets knows every secret value the run resolved; what the run
	// saves, returns or logs passes through it.
	secrets *redact.Redactor
	// log is the engine's logger behind secrets.
	log *slog.Logger
	// dryRun stops the run before the first step with effects (see
	// DryRun), recording it in stop.
	dryRun bool
	stop   *model.DryRunStop
	// identity is the project's Git identity, read once per run.
	identity *model.GitIdentity
}

// gitIdentity reads the project's Git identity from its ProjectConfig and
// the ClusterConfig (model.GitIdentityFor) the first time a step needs it.
func (r *run) gitIdentity(ctx context.Context) (model.GitIdentity, error) {
	if r.identity != nil {
		return *r.identity, nil
	}
	pol, err := state.LoadPolicies(ctx, r.e.store, r.p.Namespace)
	if err != nil {
		return model.GitIdentity{}, fmt.Errorf("read the project's Git identity: %w", err)
	}
	id := model.GitIdentityFor(pol.Config, pol.Cluster)
	r.identity = &id
	return id, nil
}

// Run executes p.Spec.Steps (tasks inflated) starting at
// p.Status.CurrentStep, with p.Status.State holding the outputs saved so far
// (steps before CurrentStep are not run again; those that only shape the
// work dir are replayed to rebuild it). Before and after each step it
// updates p.Status and calls save; a save error stops the run and is
// returned. If ctx is cancelled with cause ErrAborted the result is
// Aborted; if ctx is cancelled otherwise Run returns ctx.Err() so another
// replica can resume. Each promotion gets its own work dir under DataDir,
// removed at the end.
func (e *Engine) Run(ctx context.Context, p *model.Promotion, save func(context.Context, *model.Promotion) error) (_ Result, err error) {
	rd := redact.New()
	r := &run{e: e, p: p, save: save, secrets: rd, log: rd.Logger(e.log)}
	defer func() { err = rd.Error(err) }()
	project := p.Namespace
	flat, err := e.inflate(ctx, project, p.Spec.Steps)
	if err != nil {
		if ctx.Err() != nil {
			return r.cancelled(ctx)
		}
		return Result{Phase: model.PromotionPhaseErrored, Message: r.secrets.String(err.Error())}, nil
	}
	r.steps = flat
	if err := r.loadFreight(ctx); err != nil {
		if ctx.Err() != nil {
			return r.cancelled(ctx)
		}
		return Result{Phase: model.PromotionPhaseErrored, Message: r.secrets.String(err.Error())}, nil
	}
	dir := filepath.Join(e.workRoot, safeName(project+"-"+p.Name))
	if err := os.RemoveAll(dir); err != nil {
		return Result{}, fmt.Errorf("clear work dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return Result{}, fmt.Errorf("create work dir: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if r.ws, err = steps.NewWorkspace(dir); err != nil {
		return Result{}, err
	}
	defer func() { _ = r.ws.Close() }()
	return r.loop(ctx)
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9._-]`)

func safeName(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

func (r *run) loop(ctx context.Context) (Result, error) {
	st := &r.p.Status
	if st.State == nil {
		st.State = map[string]any{}
	}
	if n := len(r.steps); len(st.StepExecutionMetadata) < n {
		md := make([]model.StepExecutionMetadata, n)
		copy(md, st.StepExecutionMetadata)
		st.StepExecutionMetadata = md
	}
	for i := range r.steps {
		st.StepExecutionMetadata[i].Alias = r.steps[i].alias
		st.StepExecutionMetadata[i].ContinueOnError = r.steps[i].ContinueOnError
		st.StepExecutionMetadata[i].Uses = r.steps[i].Uses
	}
	start := int(st.CurrentStep)
	if start > 0 && start < len(r.steps) {
		if err := r.replay(ctx, start); err != nil {
			if ctx.Err() != nil {
				return r.cancelled(ctx)
			}
			return r.finish(model.PromotionPhaseErrored, "rebuild the work dir on resume: "+r.secrets.String(err.Error())), nil
		}
	}
	for i := start; i < len(r.steps); i++ {
		if ctx.Err() != nil {
			return r.cancelled(ctx)
		}
		st.CurrentStep = int64(i)
		if err := r.step(ctx, i); err != nil {
			if errors.Is(err, errDryRunStop) {
				break
			}
			if ctx.Err() != nil {
				return r.cancelled(ctx)
			}
			return Result{}, err
		}
		st.CurrentStep = int64(i + 1)
		if err := r.save(ctx, r.p); err != nil {
			if ctx.Err() != nil {
				return r.cancelled(ctx)
			}
			return Result{}, fmt.Errorf("save promotion: %w", err)
		}
	}
	phase, msg := model.PromotionPhaseSucceeded, ""
	for i, md := range st.StepExecutionMetadata {
		if r.steps[i].ContinueOnError {
			continue
		}
		switch md.Status {
		case model.PromotionStepStatusFailed:
			if phase == model.PromotionPhaseSucceeded {
				phase, msg = model.PromotionPhaseFailed, fmt.Sprintf("step %q failed: %s", md.Alias, md.Message)
			}
		case model.PromotionStepStatusErrored:
			if phase == model.PromotionPhaseSucceeded {
				phase, msg = model.PromotionPhaseErrored, fmt.Sprintf("step %q errored: %s", md.Alias, md.Message)
			}
		}
	}
	return r.finish(phase, msg), nil
}

func (r *run) finish(phase model.PromotionPhase, msg string) Result {
	return Result{Phase: phase, Message: r.secrets.String(msg)}
}

// cancelled ends a run whose ctx was cancelled: Aborted when the cause is
// ErrAborted (the running step is marked Aborted and saved), otherwise
// ctx.Err() so that another replica resumes.
func (r *run) cancelled(ctx context.Context) (Result, error) {
	if !errors.Is(context.Cause(ctx), ErrAborted) {
		return Result{}, ctx.Err()
	}
	st := &r.p.Status
	if i := int(st.CurrentStep); i < len(st.StepExecutionMetadata) {
		md := &st.StepExecutionMetadata[i]
		if md.Status == model.PromotionStepStatusRunning || md.Status == "" {
			md.Status = model.PromotionStepStatusAborted
			md.FinishedAt = now()
			md.Message = "promotion aborted"
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.save(sctx, r.p); err != nil {
		return Result{}, fmt.Errorf("save aborted promotion: %w", err)
	}
	return Result{Phase: model.PromotionPhaseAborted, Message: "promotion aborted"}, nil
}

func now() *model.Time { return &model.Time{Time: time.Now().UTC().Truncate(time.Second)} }

// failed reports whether a step before i failed or errored (steps with
// continueOnError do not count).
func (r *run) failed(i int) bool {
	for j := 0; j < i; j++ {
		if r.steps[j].ContinueOnError {
			continue
		}
		switch r.p.Status.StepExecutionMetadata[j].Status {
		case model.PromotionStepStatusFailed, model.PromotionStepStatusErrored:
			return true
		}
	}
	return false
}

// step runs step i to an end (Succeeded, Failed, Errored or Skipped),
// recording it in p.Status. It returns only save errors and cancellation.
func (r *run) step(ctx context.Context, i int) error {
	fs := r.steps[i]
	md := &r.p.Status.StepExecutionMetadata[i]
	env, err := r.env(ctx, i)
	if err != nil {
		return r.end(ctx, i, model.PromotionStepStatusErrored, err.Error(), nil)
	}
	cond := fs.If
	run := !env.Failed
	if cond != "" {
		run, err = expressions.EvaluateBool(cond, env)
		if err != nil {
			return r.end(ctx, i, model.PromotionStepStatusErrored, fmt.Sprintf("if: %v", err), nil)
		}
	}
	if !run {
		md.Status = model.PromotionStepStatusSkipped
		md.StartedAt, md.FinishedAt = nil, now()
		return r.save(ctx, r.p)
	}
	def, ok := r.e.registry[fs.Uses]
	if !ok {
		return r.end(ctx, i, model.PromotionStepStatusErrored, fmt.Sprintf("unknown step %q", fs.Uses), nil)
	}
	if r.dryRun && def.Effects {
		r.stop = &model.DryRunStop{Index: i, Alias: fs.alias, Uses: fs.Uses,
			Reason: fmt.Sprintf("step %q (%s) has effects outside the work dir: a dry run stops before it", fs.alias, fs.Uses)}
		return errDryRunStop
	}
	if md.StartedAt == nil {
		md.StartedAt = now()
	}
	md.Status = model.PromotionStepStatusRunning
	md.FinishedAt = nil
	if err := r.save(ctx, r.p); err != nil {
		return err
	}
	var timeout time.Duration
	threshold := uint32(1)
	if fs.Retry != nil {
		if fs.Retry.Timeout != nil {
			timeout = fs.Retry.Timeout.Duration
		}
		if fs.Retry.ErrorThreshold > 0 {
			threshold = fs.Retry.ErrorThreshold
		}
	}
	runningTimeout := timeout
	if runningTimeout <= 0 {
		runningTimeout = defaultRunningTimeout
	}
	// A step waiting for a pull request is registered before it runs, so
	// that a wake arriving during the run ends the wait that follows.
	var wake *waker
	if def.WaitsForPullRequest {
		wake = r.e.wakers.add(r.p.Namespace)
		defer r.e.wakers.remove(wake)
	}
	for attempt := 1; ; attempt++ {
		// Expressions are evaluated just in time, on every attempt.
		env, err := r.env(ctx, i)
		if err != nil {
			return r.end(ctx, i, model.PromotionStepStatusErrored, err.Error(), nil)
		}
		cfg, err := expressions.EvaluateConfig(fs.Config, env)
		if err != nil {
			return r.end(ctx, i, model.PromotionStepStatusErrored, err.Error(), nil)
		}
		r.e.wakers.watch(wake, cfg["repoURL"])
		sc, err := r.stepContext(ctx, i, cfg, env)
		if err != nil {
			return r.end(ctx, i, model.PromotionStepStatusErrored, err.Error(), nil)
		}
		res, err := steps.Run(ctx, def, sc)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		elapsed := time.Since(md.StartedAt.Time)
		if err != nil {
			md.ErrorCount++
			msg := r.secrets.String(err.Error())
			if steps.IsTerminal(err) || md.ErrorCount >= threshold || (timeout > 0 && elapsed >= timeout) {
				return r.end(ctx, i, model.PromotionStepStatusErrored, msg, nil)
			}
			md.Message = msg
			r.log.Info("step errored, retrying", "promotion", r.p.Name, "step", fs.alias, "errors", md.ErrorCount, "error", msg)
			if err := r.save(ctx, r.p); err != nil {
				return err
			}
			if err := sleep(ctx, backoff(r.e.poll, md.ErrorCount), nil); err != nil {
				return err
			}
			continue
		}
		switch res.Status {
		case steps.StatusRunning:
			if elapsed >= runningTimeout {
				return r.end(ctx, i, model.PromotionStepStatusErrored, fmt.Sprintf("timed out after %s: %s", runningTimeout, r.secrets.String(res.Message)), nil)
			}
			md.Message = r.secrets.String(res.Message)
			if err := r.save(ctx, r.p); err != nil {
				return err
			}
			if err := sleep(ctx, max(r.e.poll, res.PollAfter), wake.signal()); err != nil {
				return err
			}
			continue
		case model.PromotionStepStatusFailed:
			return r.end(ctx, i, model.PromotionStepStatusFailed, res.Message, res.Output)
		}
		if res.HealthCheck != nil {
			r.p.Status.HealthChecks = append(r.p.Status.HealthChecks, *res.HealthCheck)
		}
		return r.end(ctx, i, model.PromotionStepStatusSucceeded, res.Message, res.Output)
	}
}

func backoff(base time.Duration, n uint32) time.Duration {
	d := base
	for k := uint32(1); k < n && d < time.Minute; k++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// sleep waits d, or less when wake is signalled.
func sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	case <-wake:
		return nil
	}
}

// end records step i's outcome and saves.
func (r *run) end(ctx context.Context, i int, status model.PromotionStepStatus, msg string, output map[string]any) error {
	md := &r.p.Status.StepExecutionMetadata[i]
	md.Status = status
	md.Message = r.secrets.String(msg)
	md.FinishedAt = now()
	if md.StartedAt == nil {
		md.StartedAt = md.FinishedAt
	}
	if output != nil {
		red, err := redact.JSON(r.secrets, output)
		if err != nil {
			red, _ = r.secrets.Value(output).(map[string]any)
		}
		r.p.Status.State[r.steps[i].alias] = red
	}
	lvl := slog.LevelInfo
	if status == model.PromotionStepStatusErrored || status == model.PromotionStepStatusFailed {
		lvl = slog.LevelWarn
	}
	r.log.Log(ctx, lvl, "step finished", "promotion", r.p.Name, "step", r.steps[i].alias, "uses", r.steps[i].Uses, "status", status, "message", md.Message)
	return r.save(ctx, r.p)
}

// replay re-runs the finished steps before start that only shape the work
// dir, so the steps from start on find it as they would have.
func (r *run) replay(ctx context.Context, start int) error {
	for i := 0; i < start && i < len(r.steps); i++ {
		fs := r.steps[i]
		md := r.p.Status.StepExecutionMetadata[i]
		if md.Status != model.PromotionStepStatusSucceeded || !r.e.registry[fs.Uses].Replay {
			continue
		}
		env, err := r.env(ctx, i)
		if err != nil {
			return err
		}
		cfg, err := expressions.EvaluateConfig(fs.Config, env)
		if err != nil {
			return fmt.Errorf("step %q: %w", fs.alias, err)
		}
		sc, err := r.stepContext(ctx, i, cfg, env)
		if err != nil {
			return err
		}
		sc.Replay = true
		sc.Saved, _ = r.p.Status.State[fs.alias].(map[string]any)
		if _, err := steps.Run(ctx, r.e.registry[fs.Uses], sc); err != nil {
			return fmt.Errorf("step %q: %w", fs.alias, err)
		}
	}
	return nil
}

func (r *run) stepContext(ctx context.Context, i int, cfg map[string]any, env *expressions.Env) (*steps.Context, error) {
	identity, err := r.gitIdentity(ctx)
	if err != nil {
		return nil, err
	}
	fs := r.steps[i]
	md := r.p.Status.StepExecutionMetadata[i]
	started := time.Now().UTC().Truncate(time.Second)
	if md.StartedAt != nil {
		started = md.StartedAt.Time
	}
	return &steps.Context{
		Services: &steps.Services{
			Git:             r.e.git,
			Credentials:     r.credentials,
			RepoCredentials: r.repoCredentials,
			Metadata:        r.e,
			Aliases:         r.e,
			Egress:          r.e.egress,
			Logger:          r.log,
			Applications:    r.e.apps,
			ArgoCDSettle:    r.e.settle,
		},
		Workspace:     r.ws,
		Project:       r.p.Namespace,
		Stage:         r.p.Spec.Stage,
		Promotion:     r.p.Name,
		Actor:         r.p.Annotations[model.AnnotationPromotionCreatedBy],
		Alias:         fs.alias,
		Freight:       r.freight,
		TargetFreight: r.p.Spec.Freight,
		GitIdentity:   identity,
		Config:        cfg,
		StartedAt:     started,
		Eval: func(code string, vars map[string]any) (any, error) {
			return expressions.EvalWith(code, env, vars)
		},
	}, nil
}

// Health evaluates health checks registered by steps (argocd-update,
// argocd-wait): the worst health of their Applications; with none, Healthy.
func (e *Engine) Health(ctx context.Context, _ string, checks []model.HealthCheckStep) model.Health {
	h := model.Health{Status: model.HealthStateHealthy}
	if len(checks) == 0 {
		return h
	}
	rank := map[model.HealthState]int{model.HealthStateHealthy: 0, model.HealthStateProgressing: 1, model.HealthStateUnknown: 2, model.HealthStateUnhealthy: 3}
	for _, c := range checks {
		var ch model.Health
		switch {
		case c.Uses != "argocd-update" && c.Uses != "argocd-wait":
			ch = model.Health{Status: model.HealthStateUnknown, Issues: []string{fmt.Sprintf("health check %q is not supported", c.Uses)}}
		case e.apps == nil:
			ch = model.Health{Status: model.HealthStateUnknown, Issues: []string{"no Kubernetes API is configured to check Argo CD Applications"}}
		default:
			ch = steps.CheckHealth(ctx, e.apps, c, e.settle)
		}
		h.Issues = append(h.Issues, ch.Issues...)
		if rank[ch.Status] > rank[h.Status] {
			h.Status = ch.Status
		}
	}
	return h
}
