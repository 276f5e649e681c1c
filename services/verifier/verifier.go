// Package verifier is Caravan's verifier service: after a promotion it
// waits for the stage to be healthy, runs the Stage's AnalysisTemplates
// (Argo Rollouts' semantics, run natively: web, prometheus, job,
// datadog, newRelic, wavefront, graphite, influxdb, skywalking and kayenta
// providers), records the outcome in the stage's verification history,
// qualifies the freight for downstream stages (status.verifiedIn) and
// publishes StageVerified.
//
// The work is split by capability: internal/analysis is the run loop and
// Argo's semantics; internal/providers/* take measurements;
// internal/verification owns verification records (one claim per
// verification across replicas, leases, takeover) and their effects;
// internal/workload judges Kubernetes workload rollouts.
package verifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/reconcile"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/hosted"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/job"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/prometheus"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/web"
	"github.com/caravan-cd/caravan/services/verifier/internal/verification"
	"github.com/caravan-cd/caravan/services/verifier/internal/workload"
)

// Config of the verifier service (prefix CARAVAN_).
type Config struct {
	service.Common
	// LeaseTTL is how long a replica's claim on a verification lasts
	// without renewal: how soon another replica takes over the
	// verifications of one that died.
	LeaseTTL time.Duration `envconfig:"VERIFICATION_LEASE_TTL" default:"15s" desc:"how long a verification claim lasts without renewal (takeover delay after a crash)"`
	// ScanInterval is how often a replica looks for verifications whose
	// owner stopped renewing its lease.
	ScanInterval time.Duration `envconfig:"VERIFICATION_SCAN_INTERVAL" default:"10s" desc:"how often verifications with lapsed leases are looked for"`
	// MaxConcurrent bounds the analyses one replica runs at once.
	MaxConcurrent int `envconfig:"VERIFICATION_CONCURRENCY" default:"1000" desc:"analyses one verifier replica runs at once"`
	// HealthPoll is how often a verification waiting for its stage to be
	// healthy re-reads the stage's health (it is also woken by
	// StageHealthChanged).
	HealthPoll time.Duration `envconfig:"VERIFICATION_HEALTH_POLL" default:"2s" desc:"how often a verification waiting for stage health re-reads it"`
	// HealthTimeout ends a verification in Error when its stage is not
	// healthy by then; 0 waits for ever.
	HealthTimeout time.Duration `envconfig:"VERIFICATION_HEALTH_TIMEOUT" default:"30m" desc:"how long a verification waits for its stage to be healthy before it errors (0: for ever)"`
	// ErrorRetryInterval is the wait after a measurement errored (Argo
	// Rollouts: 10s), or the metric's interval when that is shorter.
	ErrorRetryInterval time.Duration `envconfig:"VERIFICATION_ERROR_RETRY" default:"10s" desc:"wait before measuring again after a measurement errored (shorter metric intervals win)"`
	// Retention is how long finished verification records are kept.
	Retention time.Duration `envconfig:"VERIFICATION_RETENTION" default:"24h" desc:"how long finished verification records are kept"`
	// PrometheusAddress serves prometheus metrics that name no address.
	PrometheusAddress string `envconfig:"PROMETHEUS_ADDRESS" desc:"Prometheus URL for prometheus metrics without an address"`
	// KubeConfig is the kubeconfig of the cluster job metrics and workload
	// checks use; default: $KUBECONFIG, then the in-cluster configuration.
	KubeConfig string `envconfig:"KUBECONFIG" desc:"kubeconfig for job metrics and workload checks; default: $KUBECONFIG, then in-cluster"`
	// JobPollInterval is how often a job metric's Job is looked at.
	JobPollInterval time.Duration `envconfig:"JOB_POLL_INTERVAL" default:"2s" desc:"how often the Job of a job metric is checked"`
}

// Validate checks the configuration.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.LeaseTTL < 0 || c.ScanInterval < 0 || c.HealthPoll < 0 || c.HealthTimeout < 0 || c.ErrorRetryInterval < 0 || c.Retention < 0 || c.JobPollInterval < 0 {
		errs = append(errs, errors.New("CARAVAN_VERIFICATION_* durations and CARAVAN_JOB_POLL_INTERVAL: must not be negative"))
	}
	if c.MaxConcurrent < 0 {
		errs = append(errs, errors.New("CARAVAN_VERIFICATION_CONCURRENCY: must not be negative"))
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
	def(&c.LeaseTTL, 15*time.Second)
	def(&c.ReconcileInterval, reconcile.DefaultInterval)
	def(&c.ScanInterval, 10*time.Second)
	def(&c.HealthPoll, 2*time.Second)
	def(&c.ErrorRetryInterval, analysis.DefaultErrorRetryInterval)
	def(&c.Retention, 24*time.Hour)
	def(&c.JobPollInterval, 2*time.Second)
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = 1000
	}
	return c
}

// Deps are what Run needs.
type Deps struct {
	Config Config
	Logger *slog.Logger
	Env    *service.Env
	// Providers replace or add metric providers by name (tests, plugins).
	Providers map[string]analysis.Provider
	// Kube is the cluster client of job metrics and workload checks; nil:
	// built from Config.KubeConfig, $KUBECONFIG or the in-cluster
	// configuration on first use.
	Kube kubernetes.Interface
}

// Run consumes the verifier's events until ctx ends.
//
// Idempotency: a verification is keyed by stage and promotion (or by the
// request's event ID for a re-verification); a redelivered event finds it
// already recorded.
func Run(ctx context.Context, d Deps) error {
	cfg := d.Config.withDefaults()
	log := d.Logger.With("service", "verifier", "replica", cfg.ReplicaID)
	claim, err := lease.Claim(ctx, d.Env.Conn, "verifier", cfg.ReplicaID, 0)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("verifier: %w", err)
	}
	defer claim.Close()
	bus := d.Env.Bus.With(events.WithLogger(log))
	providers := map[string]analysis.Provider{
		"web":        web.New(d.Env.Egress),
		"prometheus": prometheus.New(cfg.PrometheusAddress, d.Env.Egress),
	}
	hosted.Register(providers, d.Env.Egress)
	kube := kubeClient(d.Kube, cfg.KubeConfig)
	providers["job"] = job.New(job.Client(kube), cfg.JobPollInterval)
	providers["plugin"] = workload.Provider{Client: workload.Client(kube)}
	for name, p := range d.Providers {
		providers[name] = p
	}
	engine := &analysis.Engine{Providers: providers, ErrorRetryInterval: cfg.ErrorRetryInterval}
	// Readiness: the verification leases are written in time.
	renewals := lease.NewRenewals(cfg.LeaseTTL)
	d.Env.Health.Add("verification leases", func(context.Context) error { return renewals.Healthy() })
	m := verification.New(d.Env.Store, bus, engine, log, verification.Options{
		ReplicaID: cfg.ReplicaID, LeaseTTL: cfg.LeaseTTL, Renewals: renewals, ScanInterval: cfg.ScanInterval,
		HealthPoll: cfg.HealthPoll, HealthTimeout: cfg.HealthTimeout, MaxConcurrent: cfg.MaxConcurrent,
		Retain: cfg.Retention, ReconcileInterval: cfg.ReconcileInterval,
	})

	var consumers []*events.Consumer
	stop := func() {
		for _, c := range consumers {
			c.Stop()
			<-c.Closed()
		}
	}
	bind := func(c *events.Consumer, err error) error {
		if err != nil {
			return err
		}
		consumers = append(consumers, c)
		d.Env.Health.Consumer(c)
		return nil
	}
	err = errors.Join(
		bind(events.Consume(ctx, bus, events.VerifierPromotionSucceeded, func(ctx context.Context, ev events.PromotionSucceeded) error {
			env, _ := events.FromContext(ctx)
			return m.Begin(ctx, env.Project, ev.Stage, ev.Promotion, ev.Promotion, ev.Freight, verification.ActorAuto)
		})),
		bind(events.Consume(ctx, bus, events.VerifierVerificationRequested, func(ctx context.Context, ev events.VerificationRequested) error {
			env, _ := events.FromContext(ctx)
			promotion := ""
			if st, _, err := state.Get[model.StageStatus](ctx, d.Env.Store.KV(state.Stages), state.Key(env.Project, ev.Stage)); err == nil && st.LastPromotion != nil {
				promotion = st.LastPromotion.Name
			}
			actor := env.Source
			if actor == "" {
				actor = verification.ActorAuto
			}
			return m.Begin(ctx, env.Project, ev.Stage, "reverify-"+strings.ToLower(env.ID), promotion, ev.Freight, actor)
		})),
		bind(events.Consume(ctx, bus, events.VerifierVerificationAbort, func(ctx context.Context, ev events.VerificationAbortRequested) error {
			env, _ := events.FromContext(ctx)
			return m.Abort(ctx, env.Project, ev.Stage, "aborted on request")
		})),
		bind(events.Consume(ctx, bus, events.VerifierStageHealthChanged, func(ctx context.Context, ev events.StageHealthChanged) error {
			env, _ := events.FromContext(ctx)
			m.HealthChanged(env.Project, ev.Stage)
			return nil
		})),
	)
	if err != nil {
		stop()
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("verifier: %w", err)
	}
	d.Env.Health.Started()
	log.Info("verifier running")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = m.Run(ctx)
	}()
	<-ctx.Done()
	for _, c := range consumers {
		<-c.Closed()
	}
	wg.Wait()
	return nil
}
