// Command caravan-gateway runs Caravan's gateway service alone, against an
// external NATS server or cluster (CARAVAN_NATS_URL). Configuration comes
// from CARAVAN_* variables; see the README.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/services/gateway"
)

func main() {
	var cfg gateway.Config
	os.Exit(service.Main("gateway", &cfg, func(ctx context.Context, env *service.Env, logger *slog.Logger) error {
		return gateway.Run(ctx, gateway.Deps{Config: cfg, Logger: logger, Env: env})
	}))
}
