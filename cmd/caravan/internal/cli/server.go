package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
data under CARAVAN_DATA_DIR/nats. The services reach it in-process: it has no
TCP listener unless CARAVAN_EMBEDDED_NATS_ADDR is set, and then every client
must authenticate with the NKey seed in CARAVAN_DATA_DIR/nats-client.nk.
Configuration comes from CARAVAN_* environment variables; see the README's
configuration table.

With CARAVAN_DEMO=true (make run sets it), the demo pipeline of
examples/demo runs beside it: an OCI registry, a git repository under
CARAVAN_DATA_DIR/demo, the project "demo", and a new image tag every
CARAVAN_DEMO_PUSH_INTERVAL. The demo's two servers are added to the egress
allow list (CARAVAN_EGRESS_ALLOW).`,
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
	// The demo's registry and git server listen on loopback, which the
	// egress policy refuses: open those two addresses, and only those.
	cfg.Egress.Allow = strings.Join(append(slices.DeleteFunc([]string{cfg.Egress.Allow}, func(s string) bool { return s == "" }), d.EgressAllow()...), ",")
	logger.Info("demo: its servers are added to the egress allow list", "allow", d.EgressAllow())
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
			if err := c.Refresh(cmd.Context(), demo.Project, demo.Warehouse, "caravan demo push pushed "+image+":"+tag); err != nil {
				fmt.Fprintf(a.errOut, "Warning: refresh warehouse %s: %v (discovery finds it on its interval)\n", demo.Warehouse, err)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "warehouse/%s refresh requested\n", demo.Warehouse)
			return nil
		},
	})
	cmd.AddCommand(a.newDemoExample())
	return cmd
}

func (a *app) newDemoExample() *cobra.Command {
	var examplesDir string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "example [NAME]",
		Short: "Run an example of examples/ offline against the demo",
		Long: `Run an example of examples/ (kustomize, helm, fan-out) offline against the
demo of a running 'make run': push its images and charts to the demo
registry, seed its deployment repository from the example's repo/ folder
into the demo git server, rewrite every URL of its manifests (images,
charts, git repositories, the health URLs its verification reads) to
point there, apply them and ask its warehouses to discover. Without NAME,
list the examples.

The demo is found through $CARAVAN_DATA_DIR (default ./.caravan); run it
from the repository root, or pass --examples. --dry-run prints the
rewritten manifests instead.`,
		Example: `  bin/caravan demo example fan-out
  bin/caravan get stages -p fan-out-example`,
		Args: args(cobra.MaximumNArgs(1)),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
			names, _ := demo.Examples(examplesDir)
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, argv []string) error {
			out := cmd.OutOrStdout()
			if len(argv) == 0 {
				names, err := demo.Examples(examplesDir)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "Examples (caravan demo example NAME): %s\n", strings.Join(names, ", "))
				return nil
			}
			return a.runExample(cmd, filepath.Join(examplesDir, argv[0]), dryRun)
		},
	}
	cmd.Flags().StringVar(&examplesDir, "examples", "examples", "the examples folder")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the rewritten manifests; push, seed and apply nothing")
	return cmd
}

// runExample sets up and applies the example of dir against the demo.
func (a *app) runExample(cmd *cobra.Command, dir string, dryRun bool) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	if _, err := os.Stat(dir); err != nil {
		names, _ := demo.Examples(filepath.Dir(dir))
		return usagef("no example %s (examples: %s)", dir, strings.Join(names, ", "))
	}
	demoDir := demo.Dir(firstOf(a.getenv("CARAVAN_DATA_DIR"), ".caravan"))
	e, err := demo.ReadEndpoints(demoDir)
	if err != nil {
		return err
	}
	c, t, err := a.client()
	if err != nil {
		return err
	}
	if e.API == "" {
		e.API = t.server
	}
	o, err := demo.PlanExample(dir, e)
	if err != nil {
		return err
	}
	if dryRun {
		_, err := out.Write(o.Manifests)
		return err
	}
	fmt.Fprintf(out, "Example %s (project %s), offline against the demo:\n", o.Name, o.Project)
	for _, r := range o.Rewrites {
		fmt.Fprintf(out, "  %-6s %s\n         → %s\n", r.What, r.From, r.To)
	}
	if err := o.Setup(ctx, demoDir, e.Registry); err != nil {
		return err
	}
	var pushed []string
	for _, art := range o.Artifacts {
		pushed = append(pushed, art.Path+":"+strings.Join(art.Tags, ","))
	}
	fmt.Fprintf(out, "pushed %s\n", strings.Join(pushed, " "))
	for _, s := range o.Seeds {
		fmt.Fprintf(out, "seeded %s from %s\n", filepath.Join(demoDir, "git", s.Repo), firstOf(s.From, "nothing (an empty repository)"))
	}
	res, err := c.Apply(ctx, o.Manifests)
	if err != nil {
		return fmt.Errorf("apply example %s: %w", o.Name, err)
	}
	for _, r := range res.Results {
		fmt.Fprintf(out, "%s/%s %s\n", strings.ToLower(r.Kind), r.Name, r.Action)
	}
	for _, w := range o.Warehouses {
		if err := c.Refresh(ctx, o.Project, w, "caravan demo example "+o.Name+" pushed "+strings.Join(pushed, " ")); err != nil {
			fmt.Fprintf(a.errOut, "Warning: refresh warehouse %s: %v (discovery finds it on its interval)\n", w, err)
		}
	}
	fmt.Fprintf(out, `
Next (see %s):
  bin/caravan get freight -p %[2]s
  bin/caravan get stages -p %[2]s
  bin/caravan watch -p %[2]s
`, filepath.Join(dir, "README.md"), o.Project)
	return nil
}
