// Command caravan-discovery runs Caravan's discovery service alone, against an
// external NATS server or cluster (CARAVAN_NATS_URL). Configuration comes
// from CARAVAN_* variables; see the README.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/services/discovery"
)

func main() {
	var cfg discovery.Config
	os.Exit(service.Main("discovery", &cfg, func(ctx context.Context, env *service.Env, logger *slog.Logger) error {
		return discovery.Run(ctx, discovery.Deps{Config: cfg, Logger: logger, Env: env})
	}))
}
