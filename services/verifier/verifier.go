// Package verifier is Caravan's verifier service: it verifies a stage after
// a promotion by running the Stage's AnalysisTemplates and publishes
// StageVerified, which qualifies freight for downstream stages.
//
// This is the service's frame: it binds its durable consumer and
// acknowledges PromotionSucceeded. The verifier issue fills in the work.
package verifier

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
)

// Config of the verifier service (prefix CARAVAN_).
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

// Run consumes the verifier's events until ctx ends.
//
// Idempotency: a verification is keyed by stage and promotion; a
// redelivered PromotionSucceeded finds it already recorded.
func Run(ctx context.Context, d Deps) error {
	log := d.Logger.With("service", "verifier")
	succeeded, err := events.Consume(ctx, d.Env.Bus, events.VerifierPromotionSucceeded, func(ctx context.Context, ev events.PromotionSucceeded) error {
		env, _ := events.FromContext(ctx)
		log.Debug("promotion succeeded", "project", env.Project, "stage", ev.Stage, "promotion", ev.Promotion)
		return nil
	})
	if err != nil {
		return fmt.Errorf("verifier: %w", err)
	}
	log.Info("verifier running")
	<-ctx.Done()
	<-succeeded.Closed()
	return nil
}
