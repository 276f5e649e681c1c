package promoter

import (
	"log/slog"

	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/services/promoter/internal/engine"
)

// Result is how a promotion's run ended (the step engine's result).
type Result = engine.Result

var _ Runner = (*engine.Engine)(nil)

// newEngine returns the step engine, keeping its work dirs and git mirrors
// in the service's folder below the data dir.
func newEngine(cfg Config, env *service.Env, log *slog.Logger) (*engine.Engine, error) {
	return engine.New(engine.Options{
		DataDir:           cfg.Dir("promoter"),
		Store:             env.Store,
		Logger:            log.With("component", "engine"),
		Egress:            env.Egress,
		GitMirrorMaxBytes: cfg.GitMirrorMaxBytes,
		GitCacheMaxBytes:  cfg.GitCacheMaxBytes,
		UIBaseURL:         cfg.ExternalURL,
	})
}
