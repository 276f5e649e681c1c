// Command caravan-promoter runs Caravan's promoter service alone, against an
// external NATS server or cluster (CARAVAN_NATS_URL). Configuration comes
// from CARAVAN_* variables; see the README.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/services/promoter"
)

func main() {
	var cfg promoter.Config
	os.Exit(service.Main("promoter", &cfg, func(ctx context.Context, env *service.Env, logger *slog.Logger) error {
		return promoter.Run(ctx, promoter.Deps{Config: cfg, Logger: logger, Env: env})
	}))
}
