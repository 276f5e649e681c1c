// Package promoter is Caravan's promoter service: it runs Promotions step by
// step, one at a time per stage, auto-promotes per stage policy and owns
// stage health.
//
// This is the service's frame: it binds its durable consumer and
// acknowledges PromotionRequested. The promoter issue fills in the work.
package promoter

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
)

// Config of the promoter service (prefix CARAVAN_).
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

// Run consumes the promoter's events until ctx ends.
//
// Idempotency: a promotion's progress lives in its KV entry; a redelivered
// PromotionRequested finds it already running or done.
func Run(ctx context.Context, d Deps) error {
	log := d.Logger.With("service", "promoter")
	requested, err := events.Consume(ctx, d.Env.Bus, events.PromoterPromotionRequested, func(ctx context.Context, ev events.PromotionRequested) error {
		env, _ := events.FromContext(ctx)
		log.Debug("promotion requested", "project", env.Project, "stage", ev.Stage, "promotion", ev.Promotion)
		return nil
	})
	if err != nil {
		return fmt.Errorf("promoter: %w", err)
	}
	log.Info("promoter running")
	<-ctx.Done()
	<-requested.Closed()
	return nil
}
