// Package cli holds the caravan command's verbs.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/kelseyhightower/envconfig"
	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
	"github.com/caravan-cd/caravan/pkg/telemetry"
)

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = "dev"

// usageError marks a mistake in how the command was called (exit code 2).
type usageError struct{ error }

// Execute runs the command line args and returns the process exit code: 0
// on success, 1 when the command failed, 2 for a usage error.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "Error:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "caravan",
		Short:         "Caravan carries freight through stages: Kargo-style promotion on NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServer(), newVersion())
	return root
}

func newServer() *cobra.Command {
	return &cobra.Command{
		Use:   "server",
		Short: "Run the whole system in one process (embedded NATS unless CARAVAN_NATS_URL is set)",
		Long: `Run the discovery, promoter, verifier and gateway services in one process.

With CARAVAN_NATS_URL empty, an embedded NATS server with JetStream keeps its
data under CARAVAN_DATA_DIR/nats. Configuration comes from CARAVAN_*
environment variables; see the README's configuration table.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfg server.Config
			if err := envconfig.Process("CARAVAN", &cfg); err != nil {
				return usageError{err}
			}
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			logger := telemetry.NewLogger(cmd.ErrOrStderr(), cfg.LogConfig)
			return server.Run(cmd.Context(), cfg, server.Options{Logger: logger})
		},
	}
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			v := Version
			if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
				v = bi.Main.Version
			}
			fmt.Fprintf(cmd.OutOrStdout(), "caravan %s\n", v)
		},
	}
}
