// Command caravan-verifier runs Caravan's verifier service alone, against an
// external NATS server or cluster (CARAVAN_NATS_URL). Configuration comes
// from CARAVAN_* variables; see the README.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/services/verifier"
)

func main() {
	var cfg verifier.Config
	os.Exit(service.Main("verifier", &cfg, func(ctx context.Context, env *service.Env, logger *slog.Logger) error {
		return verifier.Run(ctx, verifier.Deps{Config: cfg, Logger: logger, Env: env})
	}))
}
