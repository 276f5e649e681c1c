// Package discovery is Caravan's discovery service: it watches the image
// registries, Git repositories and Helm chart repositories Warehouses
// subscribe to and turns new artifact combinations into Freight.
//
// This is the service's frame: it binds its durable consumers and
// acknowledges the events that will trigger discovery. The discovery issue
// fills in the work.
package discovery

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
)

// Config of the discovery service (prefix CARAVAN_).
type Config struct {
	service.Common
}

// Validate checks the configuration.
func (c Config) Validate() error { return c.Common.Validate() }

// Deps are what Run needs.
type Deps struct {
	Config Config
	Logger *slog.Logger
	Env    *service.Env
}

// Run consumes discovery's events until ctx ends.
//
// Idempotency: both handlers only ask for a discovery, which compares what
// it finds with what is stored; running one twice finds nothing new.
func Run(ctx context.Context, d Deps) error {
	log := d.Logger.With("service", "discovery")
	applied, err := events.Consume(ctx, d.Env.Bus, events.DiscoveryWarehouseApplied, func(ctx context.Context, ev events.ResourceApplied) error {
		env, _ := events.FromContext(ctx)
		log.Debug("warehouse applied", "project", env.Project, "warehouse", ev.Name, "action", ev.Action)
		return nil
	})
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	refresh, err := events.Consume(ctx, d.Env.Bus, events.DiscoveryRefresh, func(ctx context.Context, ev events.WarehouseRefreshRequested) error {
		env, _ := events.FromContext(ctx)
		log.Debug("warehouse refresh requested", "project", env.Project, "warehouse", ev.Warehouse)
		return nil
	})
	if err != nil {
		applied.Stop()
		return fmt.Errorf("discovery: %w", err)
	}
	log.Info("discovery running")
	<-ctx.Done()
	<-applied.Closed()
	<-refresh.Closed()
	return nil
}
