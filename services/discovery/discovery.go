// Package discovery is Caravan's discovery service: it watches the image
// registries, Git repositories and Helm chart repositories Warehouses
// subscribe to and turns new artifact combinations into Freight.
//
// Triggers: every Warehouse is discovered on its spec.interval (raised to
// CARAVAN_DISCOVERY_MIN_INTERVAL, with jitter), at once when it is applied
// (ResourceApplied) and on WarehouseRefreshRequested. A refresh carrying an
// artifact hint updates only the hinted subscription from the Warehouse's
// current discovered set, without listing the repository.
//
// Replicas: each Warehouse belongs to one live replica by rendezvous
// hashing and is worked by the replica holding its lease (bucket
// caravan-discovery-leases, see lease.Ring): one heartbeat per replica
// renews all its leases, so the cost does not grow with the Warehouses. A
// replica that receives an event for a Warehouse another replica works
// forwards it to that replica over core NATS. A replica that dies stops
// its heartbeat, and the others take its Warehouses over within about 4/3
// of CARAVAN_DISCOVERY_LEASE_TTL; a Warehouse changing hands is discovered
// at once only when its last discovery (kept in its status) is due.
//
// Freight: see discoverer.announce for how FreightDiscovered is published
// exactly once per new Freight.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/reconcile"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/discovery/internal/charts"
	"github.com/caravan-cd/caravan/services/discovery/internal/gitrepo"
	"github.com/caravan-cd/caravan/services/discovery/internal/images"
	"github.com/caravan-cd/caravan/services/discovery/internal/ratelimit"
)

// Config of the discovery service (prefix CARAVAN_). Zero values take the
// defaults below (the all-in-one server builds Config from Common only).
type Config struct {
	service.Common

	// MinInterval is the shortest time between two full discoveries of a
	// Warehouse; a shorter spec.interval is raised to it.
	MinInterval time.Duration `envconfig:"DISCOVERY_MIN_INTERVAL" default:"30s" desc:"floor of a Warehouse's spec.interval between full discoveries"`
	// RegistryRPS limits requests per second to each registry host (image
	// and chart registries, chart repositories), each host separately.
	RegistryRPS float64 `envconfig:"REGISTRY_RPS" default:"20" desc:"requests per second to each registry host; negative: unlimited"`
	// RegistryBurst is how many requests a registry host may get at once.
	RegistryBurst int `envconfig:"REGISTRY_BURST" default:"10" desc:"request burst allowed per registry host"`
	// RegistryParallelism bounds concurrent manifest requests of one image
	// discovery.
	RegistryParallelism int `envconfig:"DISCOVERY_REGISTRY_PARALLELISM" default:"8" desc:"concurrent manifest requests of one image discovery"`
	// MetadataCacheSize bounds the cache of image metadata (build date,
	// platforms) by manifest digest.
	MetadataCacheSize int `envconfig:"DISCOVERY_METADATA_CACHE_SIZE" default:"100000" desc:"image manifests whose build date and platforms are cached (by digest)"`
	// LeaseTTL is how long a replica's lease on a Warehouse lasts without
	// renewal; leases are renewed every third of it.
	LeaseTTL time.Duration `envconfig:"DISCOVERY_LEASE_TTL" default:"6s" desc:"lease of a replica on a Warehouse; a dead replica's Warehouses move within ~4/3 of it"`
	// RetryBase is the first delay after a failed discovery; it doubles
	// with each failure, up to the Warehouse's interval.
	RetryBase time.Duration `envconfig:"DISCOVERY_RETRY_BASE" default:"5s" desc:"first retry delay after a failed discovery (doubles up to the interval)"`
}

// ConfigFrom reads the discovery-specific CARAVAN_* variables into a
// Config around an already loaded common configuration, for binaries that
// load Common themselves (the all-in-one caravan server).
func ConfigFrom(common service.Common) (Config, error) {
	var c Config
	if err := envconfig.Process("CARAVAN", &c); err != nil {
		return Config{}, fmt.Errorf("discovery config: %w", err)
	}
	c.Common = common
	return c, c.Validate()
}

// withDefaults fills zero fields with their defaults.
func (c Config) withDefaults() Config {
	if c.MinInterval == 0 {
		c.MinInterval = 30 * time.Second
	}
	if c.RegistryRPS == 0 {
		c.RegistryRPS = 20
	}
	if c.RegistryBurst == 0 {
		c.RegistryBurst = 10
	}
	if c.RegistryParallelism == 0 {
		c.RegistryParallelism = 8
	}
	if c.MetadataCacheSize == 0 {
		c.MetadataCacheSize = 100000
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 6 * time.Second
	}
	if c.RetryBase == 0 {
		c.RetryBase = 5 * time.Second
	}
	c.ReplicaID = service.ReplicaID(c.ReplicaID)
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = reconcile.DefaultInterval
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.MinInterval < 0 {
		errs = append(errs, errors.New("CARAVAN_DISCOVERY_MIN_INTERVAL: must not be negative"))
	}
	if c.LeaseTTL < 0 || c.LeaseTTL > 0 && c.LeaseTTL < 300*time.Millisecond {
		errs = append(errs, errors.New("CARAVAN_DISCOVERY_LEASE_TTL: must be at least 300ms"))
	}
	if c.RegistryBurst < 0 || c.RegistryParallelism < 0 || c.MetadataCacheSize < 0 || c.RetryBase < 0 {
		errs = append(errs, errors.New("CARAVAN_REGISTRY_BURST, CARAVAN_DISCOVERY_REGISTRY_PARALLELISM, CARAVAN_DISCOVERY_METADATA_CACHE_SIZE and CARAVAN_DISCOVERY_RETRY_BASE must not be negative"))
	}
	return errors.Join(append(errs, c.Common.Validate())...)
}

// Deps are what Run needs.
type Deps struct {
	Config Config
	Logger *slog.Logger
	Env    *service.Env
}

// Run discovers Warehouses until ctx ends.
//
// Idempotency: both event handlers only ask for a discovery, which compares
// what it finds with what is stored; running one twice finds nothing new,
// and new Freight is announced once (see discoverer.announce).
func Run(ctx context.Context, d Deps) error {
	cfg := d.Config.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := d.Logger.With("service", "discovery", "replica", cfg.ReplicaID)
	bus := d.Env.Bus.With(events.WithLogger(log))
	hosts := ratelimit.New(cfg.RegistryRPS, cfg.RegistryBurst)
	imgs := images.New(images.Options{Hosts: hosts, CacheSize: cfg.MetadataCacheSize, Parallelism: cfg.RegistryParallelism})
	gitDir := filepath.Join(cfg.Dir("discovery"), "git")
	if err := os.MkdirAll(gitDir, 0o750); err != nil {
		return fmt.Errorf("discovery: create %s: %w", gitDir, err)
	}
	finder, err := cfg.Credentials(d.Env)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	dsc := &discoverer{
		creds:  finder,
		store:  d.Env.Store,
		bus:    bus,
		images: imgs,
		git:    gitrepo.New(gitDir),
		charts: charts.New(&ratelimit.Transport{Hosts: hosts, Base: http.DefaultTransport}, &ratelimit.Transport{Hosts: hosts, Base: charts.InsecureTransport()}, imgs),
		now:    time.Now,
	}
	dsc.aliasIdx = newAliasIndex(d.Env.Store.KV(state.Freight))
	go dsc.aliasIdx.Run(ctx)
	claim, err := lease.Claim(ctx, d.Env.Conn, "discovery", cfg.ReplicaID, 0)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("discovery: %w", err)
	}
	defer claim.Close()
	ring := lease.NewRing(d.Env.Store.KV(state.DiscoveryLeases), cfg.ReplicaID, cfg.LeaseTTL)
	d.Env.Health.Add("discovery leases", func(context.Context) error { return ring.Healthy() })
	sched := newScheduler(cfg, log, dsc, ring, d.Env.Conn)

	applied, err := events.Consume(ctx, bus, events.DiscoveryWarehouseApplied, func(ctx context.Context, ev events.ResourceApplied) error {
		env, _ := events.FromContext(ctx)
		return sched.request(ctx, env.Project, ev.Name, request{full: true, traceParent: events.TraceParent(ctx)})
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("discovery: %w", err)
	}
	refresh, err := events.Consume(ctx, bus, events.DiscoveryRefresh, func(ctx context.Context, ev events.WarehouseRefreshRequested) error {
		env, _ := events.FromContext(ctx)
		req := request{full: ev.Hint == nil, traceParent: events.TraceParent(ctx)}
		if ev.Hint != nil {
			req.hints = []events.ArtifactHint{*ev.Hint}
		}
		return sched.request(ctx, env.Project, ev.Warehouse, req)
	})
	if err != nil {
		applied.Stop()
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("discovery: %w", err)
	}
	d.Env.Health.Consumer(applied)
	d.Env.Health.Consumer(refresh)
	d.Env.Health.Started()
	log.Info("discovery running")
	err = sched.run(ctx)
	<-applied.Closed()
	<-refresh.Closed()
	return err
}
