// Package service is what every Caravan service binary needs to start: the
// configuration all services share and the connection to the backbone
// (NATS, the event stream, the KV buckets, the secret key), built once and
// handed to a service's Run as its dependencies.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/telemetry"
)

// Common is the configuration every service shares (prefix CARAVAN_).
type Common struct {
	// DataDir holds what a service keeps on local disk, one folder per
	// service; the all-in-one server also keeps NATS data there.
	DataDir string `envconfig:"DATA_DIR" default:"./.caravan" desc:"local data directory (nats/, admin-token, secret.key, one folder per service)"`
	// SecretKey encrypts Secrets at rest: base64 of 32 bytes. When unset,
	// a key is generated into <DataDir>/secret.key (mode 0600).
	SecretKey string `envconfig:"SECRET_KEY" desc:"base64 of 32 bytes encrypting Secrets at rest; default: generated into <data dir>/secret.key"`
	// ReplicaID names this process in leases (discovery, promoter,
	// verifier) and logs; see ReplicaID for the default. Two live
	// processes of a service with one ID are refused at start.
	ReplicaID string `envconfig:"REPLICA_ID" desc:"this replica's name in leases and logs, unique among the live replicas of a service; default: $POD_NAME, else <hostname>-<random>"`
	// ReconcileInterval is how often every service re-reads the full
	// state of what it owns and drives it where it should be (0–20%
	// sooner, at random), besides reacting to events: the longest a lost
	// event can delay anything.
	ReconcileInterval time.Duration `envconfig:"RECONCILE_INTERVAL" default:"30s" desc:"how often each service re-reads the full state it owns and repairs what events missed (the most a lost event delays anything)"`

	// Egress is the policy of outbound requests made for tenants
	// (CARAVAN_EGRESS_*).
	Egress egress.Config `envconfig:"EGRESS"`

	// SSHKnownHosts is the known_hosts file (OpenSSH format) that SSH git
	// servers' host keys are checked against; a host not in it is refused.
	// Empty: every SSH server is refused (no trust on first use).
	SSHKnownHosts string `envconfig:"SSH_KNOWN_HOSTS" default:"" desc:"known_hosts file checking the host keys of SSH git servers (sshPrivateKey credentials); empty: SSH git servers are refused"`

	// AmbientCredentials lists the clouds (ecr, gar, acr) whose registries
	// are reached with the process's own cloud identity when no Secret
	// matches a repository (see creds.Ambient). Empty: none.
	AmbientCredentials string `envconfig:"AMBIENT_CREDENTIALS" default:"" desc:"comma-separated clouds (ecr, gar, acr) whose registries are reached with the process's workload identity when no Secret matches; empty: none"`
	// AuditMaxAge is how long the audit log keeps its records; caravan
	// setup (and caravan server) declare the audit stream with it.
	AuditMaxAge time.Duration `envconfig:"AUDIT_MAX_AGE" default:"2160h" desc:"how long the audit log keeps its records (append-only: nothing is deleted sooner); applied by caravan setup"`

	events.NATSConfig
	events.StreamConfig
	telemetry.LogConfig
}

// Validate checks the shared configuration.
func (c Common) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("CARAVAN_DATA_DIR: must not be empty"))
	}
	if c.ReconcileInterval < 0 || c.ReconcileInterval > 0 && c.ReconcileInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("CARAVAN_RECONCILE_INTERVAL: %s is below 100ms", c.ReconcileInterval))
	}
	if c.AuditMaxAge < 0 {
		errs = append(errs, fmt.Errorf("CARAVAN_AUDIT_MAX_AGE: %s is negative", c.AuditMaxAge))
	}
	errs = append(errs, c.StreamConfig.Validate(), c.LogConfig.Validate(), c.Egress.Validate())
	if c.SSHKnownHosts != "" {
		if _, err := creds.KnownHosts(c.SSHKnownHosts); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := creds.ParseClouds(c.AmbientCredentials); err != nil {
		errs = append(errs, fmt.Errorf("CARAVAN_AMBIENT_CREDENTIALS: %w", err))
	}
	return errors.Join(errs...)
}

// Credentials returns the Finder of repository credentials for env: Secrets
// of the state store, token exchanges through the egress policy, SSH host
// keys checked against SSHKnownHosts, the ambient cloud identity of the
// clouds AmbientCredentials lists.
func (c Common) Credentials(env *Env) (*creds.Finder, error) {
	kh, err := creds.KnownHosts(c.SSHKnownHosts)
	if err != nil {
		return nil, err
	}
	clouds, err := creds.ParseClouds(c.AmbientCredentials)
	if err != nil {
		return nil, fmt.Errorf("CARAVAN_AMBIENT_CREDENTIALS: %w", err)
	}
	return creds.NewFinder(creds.Store{Store: env.Store}, creds.Options{
		HTTPClient: env.Egress.Client(false),
		KnownHosts: kh,
		Ambient:    creds.Ambient{Clouds: clouds},
	}), nil
}

// Dir returns the service's own folder below the data dir.
func (c Common) Dir(service string) string { return filepath.Join(c.DataDir, service) }

// Env is the backbone a service runs on.
type Env struct {
	Conn    *nats.Conn
	JS      jetstream.JetStream
	Bus     *events.Bus
	Store   *state.Store
	Metrics *events.Metrics
	// Registry holds the process's Prometheus metrics (nil: none).
	Registry *prometheus.Registry
	// Health is the readiness the admin listener reports (nil: none, as in
	// caravan server); services add their checks with Health.Add.
	Health *Health
	// Egress is the policy outbound requests made for tenants pass (nil:
	// the default policy). Connect protects the NATS servers of
	// CARAVAN_NATS_URL; caravan server adds its own listen addresses.
	Egress *egress.Policy
}

// Connect builds the Env for service over an established NATS connection:
// it checks the layout caravan setup declared (CheckLayout: the streams and
// buckets exist with c's replica count; it declares nothing, so a service's
// NATS user needs no right to create streams), loads the secret key and
// binds the store. reg receives the event metrics (nil: no metrics).
func Connect(ctx context.Context, nc *nats.Conn, service string, c Common, reg *prometheus.Registry) (*Env, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := CheckLayout(ctx, js, c); err != nil {
		return nil, err
	}
	key, _, err := state.LoadKey(c.SecretKey, filepath.Join(c.DataDir, "secret.key"))
	if err != nil {
		return nil, err
	}
	sealer, err := state.NewSealer(key)
	if err != nil {
		return nil, err
	}
	store, err := state.Open(ctx, js, sealer)
	if err != nil {
		return nil, err
	}
	policy, err := egress.New(c.Egress)
	if err != nil {
		return nil, err
	}
	// Last: registering twice panics, and a failed Connect is retried.
	var metrics *events.Metrics
	if reg != nil {
		metrics = events.NewMetrics(reg)
	}
	return &Env{
		Egress:   policy.Protect(natsAddrs(c.URL)...),
		Conn:     nc,
		JS:       js,
		Bus:      events.NewBus(js, service, events.WithMetrics(metrics)),
		Store:    store,
		Metrics:  metrics,
		Registry: reg,
	}, nil
}

// Provision declares the layout (Setup) and then Connects: what the
// all-in-one caravan server does, running setup itself, and what tests use.
func Provision(ctx context.Context, nc *nats.Conn, service string, c Common, reg *prometheus.Registry) (*Env, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := Setup(ctx, js, c); err != nil {
		return nil, err
	}
	return Connect(ctx, nc, service, c, reg)
}

// Setup declares the event stream, the audit stream and every KV bucket
// with c's replica count and limits; idempotent (an unchanged stream or
// bucket is left alone). caravan setup runs it once for a cluster (and
// again after a change of replicas or limits), caravan server at start;
// the services only CheckLayout.
func Setup(ctx context.Context, js jetstream.JetStream, c Common) error {
	if err := events.Setup(ctx, js, c.StreamConfig); err != nil {
		return err
	}
	if _, err := audit.Setup(ctx, js, c.AuditMaxAge, c.Replicas); err != nil {
		return err
	}
	return state.Setup(ctx, js, c.Replicas)
}

// ErrLayoutMismatch marks a stream or bucket that exists with another
// layout than the service's configuration: a service refuses to start on
// it rather than fight caravan setup (errors.Is).
var ErrLayoutMismatch = errors.New("JetStream layout differs from this service's configuration")

// Layout are the JetStream streams Setup declares, by name (a KV bucket is
// the stream KV_<bucket>), with what an error calls them.
func Layout() []struct{ Stream, What string } {
	out := []struct{ Stream, What string }{
		{events.StreamEvents, "stream " + events.StreamEvents},
		{audit.Stream, "stream " + audit.Stream},
		{"KV_" + events.BucketDeadLetters, "bucket " + events.BucketDeadLetters},
	}
	for _, b := range state.Buckets {
		out = append(out, struct{ Stream, What string }{"KV_" + string(b), "bucket " + string(b)})
	}
	return out
}

// CheckLayout verifies the layout caravan setup declares: every stream and bucket
// of Setup exists with c's replica count (CARAVAN_JS_REPLICAS). A missing
// one is an error naming it and caravan setup (a caller may wait: the
// setup Job may still be running, the cluster still forming); one with
// other replicas wraps ErrLayoutMismatch. Check needs only the right to
// read stream information.
func CheckLayout(ctx context.Context, js jetstream.JetStream, c Common) error {
	want := max(c.Replicas, 1)
	for _, l := range Layout() {
		s, err := js.Stream(ctx, l.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("%s not found: run caravan setup (CARAVAN_JS_REPLICAS=%d) before the services", l.What, want)
		}
		if err != nil {
			return fmt.Errorf("check %s: %w", l.What, err)
		}
		if have := s.CachedInfo().Config.Replicas; have != want {
			return fmt.Errorf("%w: %s has %d replica(s), CARAVAN_JS_REPLICAS is %d: give every service and caravan setup the same CARAVAN_JS_REPLICAS (run caravan setup again to change it)",
				ErrLayoutMismatch, l.What, have, want)
		}
	}
	return nil
}

// natsAddrs are the host:port pairs of comma-separated NATS URLs.
func natsAddrs(urls string) []string {
	var out []string
	for u := range strings.SplitSeq(urls, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		p, err := url.Parse(u)
		if err != nil || p.Hostname() == "" {
			continue
		}
		port := p.Port()
		if port == "" {
			port = "4222"
		}
		out = append(out, net.JoinHostPort(p.Hostname(), port))
	}
	return out
}

// Ready reports whether the backbone is usable: connected, with the event
// stream and every bucket in place.
func (e *Env) Ready(ctx context.Context) error {
	if !e.Conn.IsConnected() {
		return errors.New("not connected to NATS")
	}
	for _, st := range []string{events.StreamEvents, audit.Stream} {
		if _, err := e.JS.Stream(ctx, st); err != nil {
			return fmt.Errorf("stream %s: %w", st, err)
		}
	}
	for _, b := range state.Buckets {
		if _, err := e.JS.KeyValue(ctx, string(b)); err != nil {
			return fmt.Errorf("bucket %s: %w", b, err)
		}
	}
	return nil
}

// Config is what a service's configuration provides: validation and the
// shared part (promoted from an embedded Common).
type Config interface {
	Validate() error
	Shared() Common
}

// Shared returns c; services embed Common, so their Config has it too.
func (c Common) Shared() Common { return c }

// Main is the whole of a standalone service binary's main: it stops on
// SIGINT or SIGTERM, loads cfg and the admin listener's configuration from
// CARAVAN_* variables (full names only, see Load) and validates them,
// builds the logger and tracing, serves the admin listener, connects to the
// external NATS, builds the Env (waiting for a cluster that is still
// forming) and calls run until the context ends. It returns the process
// exit code: 2 for a configuration error, 1 when the service failed.
func Main(name string, cfg Config, run func(context.Context, *Env, *slog.Logger) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var admin AdminConfig
	for _, err := range []error{Load(cfg), Load(&admin)} {
		if err != nil {
			fmt.Fprintf(os.Stderr, "caravan-%s: %v\n", name, err)
			return 2
		}
	}
	if err := errors.Join(cfg.Validate(), admin.Validate(), RequireKey(cfg.Shared())); err != nil {
		fmt.Fprintf(os.Stderr, "caravan-%s: %v\n", name, err)
		return 2
	}
	c := cfg.Shared()
	logger := telemetry.NewLogger(os.Stderr, c.LogConfig).With("replica", ReplicaID(c.ReplicaID))
	if err := serve(ctx, name, c, admin, logger, run); err != nil {
		logger.Error("service stopped", "service", name, "err", err)
		return 1
	}
	logger.Info("service stopped", "service", name)
	return 0
}

// RequireKey refuses a standalone service without a shared secret key:
// a key generated per process would leave replicas unable to open each
// other's Secrets. CARAVAN_SECRET_KEY or an existing <data dir>/secret.key
// will do.
func RequireKey(c Common) error {
	path := filepath.Join(c.DataDir, "secret.key")
	if c.SecretKey == "" {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("CARAVAN_SECRET_KEY: required for a standalone service, the same for every replica "+
				"(base64 of 32 bytes, e.g. openssl rand -base64 32), or a key file at %s", path)
		}
	}
	_, _, err := state.LoadKey(c.SecretKey, path)
	return err
}

func serve(ctx context.Context, name string, c Common, admin AdminConfig, logger *slog.Logger, run func(context.Context, *Env, *slog.Logger) error) error {
	shutdown, err := telemetry.SetupTracing(ctx, "caravan-"+name)
	if err != nil {
		return err
	}
	defer func() { _ = shutdown(context.WithoutCancel(ctx)) }()
	if c.URL == "" {
		return errors.New("CARAVAN_NATS_URL: required for a standalone service (caravan server embeds NATS)")
	}
	if _, err := egress.New(c.Egress); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	health := NewHealth()
	if admin.Addr != "" {
		actx, cancel := context.WithCancel(ctx)
		addr, wait, err := ServeAdmin(actx, admin, health, reg)
		if err != nil {
			cancel()
			return err
		}
		defer wait()
		defer cancel()
		logger.Info("admin listener", "service", name, "addr", addr, "pprof", admin.Pprof)
	}
	// Not ready from the moment a stop is asked: load balancers and
	// Kubernetes stop sending work while the service drains.
	go func() {
		<-ctx.Done()
		health.Stopping()
	}()
	health.Starting("connecting to NATS")
	logger.Info("connecting to NATS", "service", name)
	nc, err := events.Connect(ctx, c.NATSConfig, "caravan-"+name)
	if ctx.Err() != nil {
		return nil // stopped before it started: a clean stop
	}
	if err != nil {
		return err
	}
	defer nc.Close()
	env, err := connectRetry(ctx, nc, name, c, reg, health, logger)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Dir(name), 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	health.Add("nats", env.Ready)
	// The service calls Started once its consumers are bound.
	health.Starting("binding consumers")
	return run(ctx, env, logger)
}

// connectRetry builds the Env, retrying with backoff while the streams and
// buckets do not answer or are missing (a cluster still forming, a leader
// election, the setup Job not yet done): a service waits for its backbone
// rather than exiting. A layout with other replicas is refused at once.
func connectRetry(ctx context.Context, nc *nats.Conn, name string, c Common, reg *prometheus.Registry, health *Health, logger *slog.Logger) (*Env, error) {
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		env, err := Connect(ctx, nc, name, c, reg)
		if err == nil {
			env.Health = health
			return env, nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrLayoutMismatch) {
			return nil, fmt.Errorf("connect %s: %w", name, err)
		}
		health.Starting("waiting for JetStream: " + err.Error())
		logger.Warn("JetStream not answering yet; retrying", "service", name, "attempt", attempt, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect %s: %w", name, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}
