// Package promoter is Caravan's promoter service: it runs Promotions step by
// step, one at a time per stage across any number of replicas,
// auto-promotes per the project's promotion policies, owns stage health and
// collects old promotions and freight.
//
// The work is split by capability: internal/queue and internal/dispatch
// queue and run promotions per stage under a lease, internal/autopromote
// creates promotions on its own, internal/health keeps stage health,
// internal/gc deletes what is no longer needed; periodic jobs run on one
// replica at a time under pkg/lease. The step engine (internal/engine)
// runs a promotion's steps. Beside the event handlers, a reconciler
// (pkg/reconcile) re-reads every promotion, queue and stage at start, on
// every CARAVAN_RECONCILE_INTERVAL and when a KV watch sees a new
// promotion, so a lost event costs at most one interval.
package promoter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"k8s.io/client-go/dynamic"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/reconcile"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/stageindex"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/autopromote"
	"github.com/caravan-cd/caravan/services/promoter/internal/dispatch"
	"github.com/caravan-cd/caravan/services/promoter/internal/engine"
	"github.com/caravan-cd/caravan/services/promoter/internal/gc"
	"github.com/caravan-cd/caravan/services/promoter/internal/health"
	"github.com/caravan-cd/caravan/services/promoter/internal/policy"
)

// Config of the promoter service (prefix CARAVAN_).
type Config struct {
	service.Common
	// LeaseTTL is how long a replica's hold on a stage lasts without
	// renewal: how soon another replica resumes the promotions of one that
	// died.
	LeaseTTL time.Duration `envconfig:"PROMOTION_LEASE_TTL" default:"15s" desc:"how long a stage lease lasts without renewal (takeover delay after a crash)"`
	// MaxConcurrent bounds the promotions one replica runs at once (one
	// per stage at most).
	MaxConcurrent int `envconfig:"PROMOTION_CONCURRENCY" default:"16" desc:"promotions one replica runs at once"`
	// HealthInterval is how often stage health checks are evaluated.
	HealthInterval time.Duration `envconfig:"HEALTH_INTERVAL" default:"30s" desc:"how often stage health checks are evaluated"`
	// GCKeepPromotions is how many promotions per stage are always kept.
	GCKeepPromotions int `envconfig:"GC_KEEP_PROMOTIONS" default:"20" desc:"promotions per stage garbage collection always keeps"`
	// GCKeepFreight is how many freight per warehouse are always kept.
	GCKeepFreight int `envconfig:"GC_KEEP_FREIGHT" default:"20" desc:"freight per warehouse garbage collection always keeps"`
	// GCMinAge is the age below which nothing is collected.
	GCMinAge time.Duration `envconfig:"GC_MIN_AGE" default:"336h" desc:"minimum age of a promotion or freight before garbage collection deletes it"`
	// GCInterval is how often garbage collection runs (on one replica).
	GCInterval time.Duration `envconfig:"GC_INTERVAL" default:"1h" desc:"how often garbage collection runs"`
	// GitMirrorMaxBytes is the disk budget of the git mirrors (one per
	// project, repository and credentials): beyond it the least recently
	// used mirrors no promotion is using are deleted, and fetched again
	// in full when next needed.
	GitMirrorMaxBytes int64 `envconfig:"GIT_MIRROR_MAX_BYTES" default:"10737418240" desc:"disk budget of the git mirrors; least recently used idle mirrors are deleted beyond it"`
	// GitCacheMaxBytes is the memory budget of decoded git objects, shared
	// by all mirrors, least recently used first out.
	GitCacheMaxBytes int64 `envconfig:"GIT_CACHE_MAX_BYTES" default:"33554432" desc:"memory budget of decoded git objects shared by all mirrors"`
	// ControlFlowInterval is how often every control-flow stage (one
	// without promotion steps) is evaluated again, on one replica, besides
	// the events that move freight through it at once.
	ControlFlowInterval time.Duration `envconfig:"CONTROL_FLOW_INTERVAL" default:"1m" desc:"how often control-flow stages are evaluated again besides events"`
	// ExternalURL is where users reach the gateway and its UI (the
	// gateway's own setting): ctx.uiBaseUrl in promotion expressions.
	ExternalURL string `envconfig:"EXTERNAL_URL" default:"http://127.0.0.1:8080" desc:"URL users reach the gateway and its UI at; ctx.uiBaseUrl in promotion step expressions"`
	// KubeConfig is the kubeconfig of the cluster whose Argo CD
	// Applications argocd-update and argocd-wait (and their health checks)
	// reach; default: $KUBECONFIG, then the in-cluster configuration, else
	// none (those steps then fail saying so).
	KubeConfig string `envconfig:"KUBECONFIG" desc:"kubeconfig of the cluster with the Argo CD Applications of argocd-update and argocd-wait; default: $KUBECONFIG, then in-cluster, else none"`
	// ArgoCDHealthSettle is how long after an Argo CD Application's sync
	// finished its health is not trusted (argocd-wait waits, the stage
	// health check says Progressing): Argo CD assesses health in another
	// loop than it syncs in. Kargo's cool-down is 10 s.
	ArgoCDHealthSettle time.Duration `envconfig:"ARGOCD_HEALTH_SETTLE" default:"10s" desc:"how long after an Argo CD Application's sync its health is not trusted by argocd-wait and stage health"`
}

// orphanGrace is how old the keys of a project that does not exist must
// be before garbage collection removes them: an apply may write a
// project's objects a moment before the Project itself.
const orphanGrace = 10 * time.Minute

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	errs = append(errs, c.Common.Validate())
	if c.LeaseTTL < 0 || c.HealthInterval < 0 || c.GCInterval < 0 || c.GCMinAge < 0 || c.ControlFlowInterval < 0 {
		errs = append(errs, errors.New("CARAVAN_PROMOTION_LEASE_TTL, CARAVAN_HEALTH_INTERVAL, CARAVAN_GC_INTERVAL, CARAVAN_GC_MIN_AGE, CARAVAN_CONTROL_FLOW_INTERVAL: must not be negative"))
	}
	if c.ArgoCDHealthSettle < 0 {
		errs = append(errs, errors.New("CARAVAN_ARGOCD_HEALTH_SETTLE: must not be negative"))
	}
	if c.MaxConcurrent < 0 || c.GCKeepPromotions < 0 || c.GCKeepFreight < 0 {
		errs = append(errs, errors.New("CARAVAN_PROMOTION_CONCURRENCY, CARAVAN_GC_KEEP_PROMOTIONS, CARAVAN_GC_KEEP_FREIGHT: must not be negative"))
	}
	if c.GitMirrorMaxBytes < 0 || c.GitCacheMaxBytes < 0 {
		errs = append(errs, errors.New("CARAVAN_GIT_MIRROR_MAX_BYTES, CARAVAN_GIT_CACHE_MAX_BYTES: must not be negative (0: the default)"))
	}
	return errors.Join(errs...)
}

// withDefaults fills zero values (a Config built in code rather than by
// envconfig) with the defaults.
func (c Config) withDefaults() Config {
	c.ReplicaID = service.ReplicaID(c.ReplicaID)
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	def(&c.LeaseTTL, 15*time.Second)
	def(&c.ReconcileInterval, reconcile.DefaultInterval)
	def(&c.HealthInterval, 30*time.Second)
	def(&c.GCMinAge, 14*24*time.Hour)
	def(&c.GCInterval, time.Hour)
	def(&c.ControlFlowInterval, time.Minute)
	defInt(&c.MaxConcurrent, 16)
	defInt(&c.GCKeepPromotions, 20)
	defInt(&c.GCKeepFreight, 20)
	return c
}

// Runner runs promotion steps and evaluates health checks: the step
// engine. Run resumes a promotion at its saved current step, saves its
// progress through save and ends it as Aborted when ctx is canceled with
// Deps.AbortCause. A Runner that also has Wake(project, repoURL string), as
// the step engine does, is woken on every PullRequestClosed (see
// wakePrefix).
type Runner interface {
	Run(ctx context.Context, p *model.Promotion, save func(context.Context, *model.Promotion) error) (Result, error)
	Health(ctx context.Context, project string, checks []model.HealthCheckStep) model.Health
}

// Deps are what Run needs.
type Deps struct {
	Config Config
	Logger *slog.Logger
	Env    *service.Env
	// Runner runs promotion steps (default: the step engine).
	Runner Runner
	// AbortCause cancels a running promotion's ctx to abort it (default:
	// the step engine's ErrAborted).
	AbortCause error
	// Kube reaches Argo CD Applications (default: built from
	// Config.KubeConfig, $KUBECONFIG or the in-cluster configuration).
	Kube dynamic.Interface
	// SharedFreight, when set, holds the freight the auto-promotion index
	// shares with other indexes of the freight bucket in the process
	// (caravan server's gateway), so that each freight is held once; nil:
	// the index holds its own.
	SharedFreight *freightindex.Shared
}

// runnerAdapter turns a Runner into the dispatcher's runner.
type runnerAdapter struct{ r Runner }

func (a runnerAdapter) Run(ctx context.Context, p *model.Promotion, save func(context.Context, *model.Promotion) error) (model.PromotionPhase, string, error) {
	res, err := a.r.Run(ctx, p, save)
	return res.Phase, res.Message, err
}

// Run consumes the promoter's events and runs its jobs until ctx ends.
//
// Idempotency: a promotion's progress lives in its KV entry and its stage's
// queue record; a redelivered PromotionRequested finds it queued, running
// or done. Auto-promotions have deterministic names.
func Run(ctx context.Context, d Deps) error {
	cfg := d.Config.withDefaults()
	log := d.Logger.With("service", "promoter", "replica", cfg.ReplicaID)
	// The freight index: auto-promotion's, the hold check of hand-made
	// promotions', the set-freight-alias step's.
	freight := freightindex.New(d.Env.Store.KV(state.Freight), d.SharedFreight)
	if d.Runner == nil {
		kube := d.Kube
		if kube == nil {
			var err error
			if kube, err = kubeClient(cfg.KubeConfig, os.Getenv("KUBECONFIG")); err != nil {
				return fmt.Errorf("promoter: %w", err)
			}
			if kube == nil {
				log.Info("no Kubernetes API configured: argocd-update and argocd-wait will fail (set CARAVAN_KUBECONFIG)")
			}
		}
		e, err := newEngine(cfg, d.Env, log, kube, freight)
		if err != nil {
			return fmt.Errorf("promoter: %w", err)
		}
		d.Runner = e
	}
	if d.AbortCause == nil {
		d.AbortCause = engine.ErrAborted
	}
	claim, err := lease.Claim(ctx, d.Env.Conn, "promoter", cfg.ReplicaID, 0)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("promoter: %w", err)
	}
	defer claim.Close()
	store, bus := d.Env.Store, d.Env.Bus.With(events.WithLogger(log))
	keeper := health.New(store, bus, d.Runner, log)
	// caravan setup declared the audit stream; Connect checked it.
	auditLog := audit.New(d.Env.JS)
	stages := stageindex.New(store.KV(state.Resources))
	auto := autopromote.New(autopromote.Options{Store: store, Bus: bus, Logger: log, Audit: auditLog, Freight: freight, Stages: stages})
	// Readiness: the stage leases and the job leases are written in time.
	stageLeases := lease.NewRenewals(cfg.LeaseTTL)
	d.Env.Health.Add("promoter stage leases", func(context.Context) error { return stageLeases.Healthy() })
	jobLeases := func(interval time.Duration) *lease.Leases {
		jobs := lease.New(store.KV(state.Promoter), cfg.ReplicaID, 2*interval)
		d.Env.Health.Add("promoter job leases", func(context.Context) error { return jobs.Healthy() })
		return jobs
	}
	healthJobs, controlFlowJobs, gcJobs := jobLeases(cfg.HealthInterval), jobLeases(cfg.ControlFlowInterval), jobLeases(cfg.GCInterval)
	disp := dispatch.New(dispatch.Options{
		Store: store, Bus: bus, Runner: runnerAdapter{d.Runner}, Logger: log, Renewals: stageLeases,
		ID: cfg.ReplicaID, LeaseTTL: cfg.LeaseTTL, MaxConcurrent: cfg.MaxConcurrent, AbortCause: d.AbortCause, Freight: freight,
		Succeeded: func(ctx context.Context, project string, stage *model.Stage, p *model.Promotion) {
			keeper.Promoted(ctx, project, stage.Name, p)
		},
		// A failed promotion may roll its stage back (the reconcile
		// pass is the backstop).
		Finished: func(ctx context.Context, project string, stage *model.Stage, p *model.Promotion) {
			if p.Status.Phase == model.PromotionPhaseSucceeded {
				return
			}
			if err := auto.Evaluate(ctx, project, stage.Name); err != nil {
				log.Warn("evaluate stage after a failed promotion", "project", project, "stage", stage.Name, "err", err)
			}
		},
		Queued: auto.Record,
		Gate:   policy.New(store, nil),
	})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	// A part that stops while ctx lives (its KV watch failed) stops the
	// service with an error, so that it is restarted rather than half-alive.
	var failed error
	var failOnce sync.Once
	fail := func(what string, err error) {
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("its KV watch ended")
		}
		failOnce.Do(func() {
			failed = fmt.Errorf("promoter: %s stopped: %w", what, err)
			cancel()
		})
	}
	// partStopped hears of the dispatcher or the timers stopping before
	// they were ready; fail has recorded why.
	partStopped := make(chan struct{}, 2)
	dispReady, autoReady := make(chan struct{}), make(chan struct{})
	wg.Add(8)
	go func() {
		defer wg.Done()
		freight.Run(ctx, nil, time.Second)
	}()
	go func() {
		defer wg.Done()
		stages.Run(ctx, nil, time.Second)
	}()
	go func() {
		defer wg.Done()
		fail("dispatcher", disp.Run(ctx, dispReady))
		partStopped <- struct{}{}
	}()
	go func() {
		defer wg.Done()
		fail("auto-promotion timers", auto.Run(ctx, autoReady))
		partStopped <- struct{}{}
	}()
	go func() {
		defer wg.Done()
		lease.Every(ctx, healthJobs, "job.health", cfg.HealthInterval, log, keeper.CheckAll)
	}()
	go func() {
		defer wg.Done()
		fail("stage status sync", auto.WatchStatus(ctx))
	}()
	go func() {
		defer wg.Done()
		lease.Every(ctx, controlFlowJobs, "job.control-flow", cfg.ControlFlowInterval, log, auto.ControlFlow)
	}()
	go func() {
		defer wg.Done()
		policy := gc.Policy{KeepPromotions: cfg.GCKeepPromotions, KeepFreight: cfg.GCKeepFreight, MinAge: cfg.GCMinAge}
		lease.Every(ctx, gcJobs, "job.gc", cfg.GCInterval, log, func(ctx context.Context) error {
			res, err := gc.Collect(ctx, store, policy, time.Now())
			if res.Promotions+res.Freight > 0 {
				log.Info("garbage collected", "promotions", res.Promotions, "freight", res.Freight)
			}
			// What a project deletion left (cut short, or raced by work
			// that wrote after it) goes too.
			swept, serr := store.SweepOrphans(ctx, time.Now().Add(-orphanGrace))
			if len(swept) > 0 {
				log.Info("swept the keys of deleted projects", "projects", swept)
			}
			return errors.Join(err, serr)
		})
	}()
	for _, ready := range []chan struct{}{dispReady, autoReady} {
		select {
		case <-ready:
		case <-partStopped:
			// A part that stopped because ctx ended is a clean stop.
			cancel()
			wg.Wait()
			return failed
		case <-ctx.Done():
		}
	}

	// The backstop: every promotion, queue and auto-promoted stage, at
	// start and every interval.
	loop := reconcile.New(cfg.ReconcileInterval)
	wg.Add(1)
	go func() {
		defer wg.Done()
		loop.Run(ctx, func(ctx context.Context) error {
			return errors.Join(disp.Reconcile(ctx), auto.Pass(ctx))
		}, func(err error) { log.Warn("reconcile", "err", err) })
	}()
	if w, ok := d.Runner.(waker); ok {
		sub, err := subscribeWakes(d.Env.Conn, w, log)
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("promoter: %w", err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	if dr, ok := d.Runner.(dryRunner); ok {
		stop, err := serveDryRuns(ctx, d.Env.Conn, dr, log)
		if err != nil {
			cancel()
			wg.Wait()
			return fmt.Errorf("promoter: %w", err)
		}
		defer stop()
	}
	work := autopromote.NewWork(autoWorkers, log)
	defer work.Wait()
	h := handlers{disp: disp, auto: auto, work: work, store: store, nc: d.Env.Conn, log: log}
	var consumers []*events.Consumer
	for _, c := range []struct {
		spec events.ConsumerSpec
		bind func(events.ConsumerSpec) (*events.Consumer, error)
	}{
		{events.PromoterPromotionRequested, func(s events.ConsumerSpec) (*events.Consumer, error) {
			return events.Consume(ctx, bus, s, h.promotionRequested)
		}},
		{events.PromoterPromotionAbort, func(s events.ConsumerSpec) (*events.Consumer, error) {
			return events.Consume(ctx, bus, s, h.abortRequested)
		}},
		{events.PromoterAutoPromotion, func(s events.ConsumerSpec) (*events.Consumer, error) {
			return events.ConsumeEnvelopes(ctx, bus, s, h.autoPromotion)
		}},
		{events.PromoterPullRequestClosed, func(s events.ConsumerSpec) (*events.Consumer, error) {
			return events.Consume(ctx, bus, s, h.pullRequestClosed)
		}},
	} {
		cons, err := c.bind(c.spec)
		if err != nil {
			stopping := ctx.Err() != nil
			cancel()
			wg.Wait()
			if stopping {
				return failed // stopped while starting
			}
			return fmt.Errorf("promoter: %w", err)
		}
		consumers = append(consumers, cons)
		d.Env.Health.Consumer(cons)
	}
	d.Env.Health.Started()
	log.Info("promoter running")
	<-ctx.Done()
	for _, c := range consumers {
		<-c.Closed()
	}
	wg.Wait()
	return failed
}

// autoWorkers is how many projects' auto-promotion evaluations run at
// once (one per project at a time).
const autoWorkers = 8

type handlers struct {
	disp *dispatch.Dispatcher
	auto *autopromote.AutoPromoter
	// work runs evaluations per project, so that a busy project does
	// not hold up the others' events: the handler only queues them.
	work  *autopromote.Work
	store *state.Store
	nc    *nats.Conn // wakes (see wakePrefix)
	log   *slog.Logger
}

func (h handlers) promotionRequested(ctx context.Context, ev events.PromotionRequested) error {
	env, _ := events.FromContext(ctx)
	p, _, err := state.GetAs[*model.Promotion](ctx, h.store, env.Project, model.KindPromotion, ev.Promotion)
	if errors.Is(err, state.ErrNotFound) {
		h.log.Warn("requested promotion not found", "project", env.Project, "promotion", ev.Promotion)
		return nil
	}
	if err != nil {
		return err
	}
	if p.Status.Phase.IsTerminal() {
		return nil
	}
	if p.Namespace == "" {
		p.Namespace = env.Project
	}
	return h.disp.Enqueue(ctx, env.Project, p)
}

func (h handlers) abortRequested(ctx context.Context, ev events.PromotionAbortRequested) error {
	env, _ := events.FromContext(ctx)
	return h.disp.Abort(ctx, env.Project, ev.Stage, ev.Promotion)
}

func (h handlers) autoPromotion(ctx context.Context, env events.Envelope) error {
	project := env.Project
	// later queues an evaluation on the project's queue; the event is
	// acknowledged once it is queued (a lost one costs at most one
	// reconcile pass, as any lost event).
	later := func(key string, run func(context.Context) error) error {
		h.work.Add(ctx, project, key, run)
		return nil
	}
	evaluate := func(stage string) error {
		return later("evaluate/"+stage, func(ctx context.Context) error { return h.auto.Evaluate(ctx, project, stage) })
	}
	switch env.Type {
	case events.TypeFreightDiscovered:
		var ev events.FreightDiscovered
		if err := env.Decode(&ev); err != nil {
			return events.Permanent(err)
		}
		origin := model.FreightOrigin{Kind: model.FreightOriginKind(ev.Origin.Kind), Name: ev.Origin.Name}
		return later("origin/"+origin.String(), func(ctx context.Context) error { return h.auto.Requesting(ctx, project, origin) })
	case events.TypeFreightApproved:
		var ev events.FreightApproved
		if err := env.Decode(&ev); err != nil {
			return events.Permanent(err)
		}
		return evaluate(ev.Stage)
	case events.TypeStageVerified:
		var ev events.StageVerified
		if err := env.Decode(&ev); err != nil {
			return events.Permanent(err)
		}
		if err := h.disp.Unblock(ctx, project, ev.Stage); err != nil {
			return err
		}
		if ph := model.VerificationPhase(ev.Phase); ph == model.VerificationPhaseFailed || ph == model.VerificationPhaseError {
			// Auto-rollback may act on the failure.
			_ = evaluate(ev.Stage)
		}
		return later("downstream/"+ev.Stage, func(ctx context.Context) error { return h.auto.Downstream(ctx, project, ev.Stage) })
	case events.TypePromotionApproved:
		var ev events.PromotionApproved
		if err := env.Decode(&ev); err != nil {
			return events.Permanent(err)
		}
		return h.disp.Unblock(ctx, project, ev.Stage)
	case events.TypeAutoPromotionResumeRequested:
		var ev events.AutoPromotionResumeRequested
		if err := env.Decode(&ev); err != nil {
			return events.Permanent(err)
		}
		return later("resume/"+ev.Stage, func(ctx context.Context) error { return h.auto.Resume(ctx, project, ev.Stage) })
	case events.TypeResourceApplied:
		var ev events.ResourceApplied
		if err := env.Decode(&ev); err != nil {
			return events.Permanent(err)
		}
		switch ev.Kind {
		case model.KindStage:
			return evaluate(ev.Name)
		case model.KindProjectConfig:
			return later("all", func(ctx context.Context) error { return h.auto.Stages(ctx, project, nil) })
		}
	}
	return nil
}
