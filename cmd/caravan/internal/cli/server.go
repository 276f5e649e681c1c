package cli

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/kelseyhightower/envconfig"
	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/demo"
	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
	"github.com/caravan-cd/caravan/pkg/telemetry"
)

func (a *app) newServer() *cobra.Command {
	return &cobra.Command{
		Use:   "server",
		Short: "Run the whole system in one process (embedded NATS unless CARAVAN_NATS_URL is set)",
		Long: `Run the discovery, promoter, verifier and gateway services in one process.

With CARAVAN_NATS_URL empty, an embedded NATS server with JetStream keeps its
data under CARAVAN_DATA_DIR/nats. Configuration comes from CARAVAN_*
environment variables; see the README's configuration table.

With CARAVAN_DEMO=true (make run sets it), the demo pipeline of
examples/demo runs beside it: an OCI registry, a git repository under
CARAVAN_DATA_DIR/demo, the project "demo", and a new image tag every
CARAVAN_DEMO_PUSH_INTERVAL.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg server.Config
			if err := envconfig.Process("CARAVAN", &cfg); err != nil {
				return usageError{err}
			}
			if err := cfg.LoadServices(); err != nil {
				return usageError{err}
			}
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			var dcfg demo.Config
			if err := envconfig.Process("CARAVAN", &dcfg); err != nil {
				return usageError{err}
			}
			logger := telemetry.NewLogger(cmd.ErrOrStderr(), cfg.LogConfig)
			if !dcfg.Enabled {
				return server.Run(cmd.Context(), cfg, server.Options{Logger: logger})
			}
			return a.runWithDemo(cmd, cfg, dcfg, logger)
		},
	}
}

// runWithDemo runs the server with the demo beside it: the registry and
// git server first, the manifests once the API is up.
func (a *app) runWithDemo(cmd *cobra.Command, cfg server.Config, dcfg demo.Config, logger *slog.Logger) error {
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	d, err := demo.Start(ctx, dcfg, cfg.DataDir, logger)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	return server.Run(ctx, cfg, server.Options{
		Logger: logger,
		Started: func(info server.Info) {
			wg.Go(func() {
				d.LoginURL = info.LoginURL
				if err := d.Load(ctx, info.APIURL, info.AdminToken, cmd.ErrOrStderr()); err != nil {
					if ctx.Err() == nil {
						logger.Error("demo: load the pipeline", "err", err)
					}
				}
				if err := d.Run(ctx, info.APIURL, info.AdminToken); err != nil {
					logger.Error("demo stopped", "err", err)
				}
			})
		},
	})
}

func (a *app) newDemo() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Drive the demo that 'make run' starts",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "push",
		Short: "Push the next tag of the demo image now (make demo-push)",
		Long: `Push the next semver tag of the demo image to the demo registry of a running
'make run' (found through $CARAVAN_DATA_DIR, default ./.caravan), then ask
for a refresh of the demo warehouse so that the new freight shows at once.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := demo.Dir(firstOf(a.getenv("CARAVAN_DATA_DIR"), ".caravan"))
			tag, digest, err := demo.PushNext(cmd.Context(), dir)
			if err != nil {
				return err
			}
			image, _ := demo.ImageOf(dir)
			fmt.Fprintf(cmd.OutOrStdout(), "pushed %s:%s (%s)\n", image, tag, digest)
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if err := c.Refresh(cmd.Context(), demo.Project, demo.Warehouse); err != nil {
				fmt.Fprintf(a.errOut, "Warning: refresh warehouse %s: %v (discovery finds it on its interval)\n", demo.Warehouse, err)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "warehouse/%s refresh requested\n", demo.Warehouse)
			return nil
		},
	})
	return cmd
}
