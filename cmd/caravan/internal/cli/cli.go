// Package cli holds the caravan command's verbs: `server`, which runs the
// whole system, and the client verbs talking to its REST API.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/pkg/buildinfo"
)

// usageError marks a mistake in how the command was called (exit code 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// usagef returns a usage error.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitError carries an exit code without a message of its own (the
// command already said what went wrong).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// streams are the command's standard streams and environment.
type streams struct {
	in     io.Reader
	out    io.Writer
	errOut io.Writer
	getenv func(string) string
}

// Execute runs the command line args and returns the process exit code: 0
// on success, 1 when the command failed, 2 for a usage error.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return execute(ctx, args, streams{in: os.Stdin, out: stdout, errOut: stderr, getenv: os.Getenv})
}

func execute(ctx context.Context, args []string, s streams) int {
	a := &app{streams: s}
	root := a.newRoot()
	root.SetArgs(args)
	root.SetIn(s.in)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(s.errOut, "Error:", err)
	var ue usageError
	if errors.As(err, &ue) || !a.started {
		// Cobra's own errors (unknown command, bad arguments, missing
		// required flags) come before any verb started.
		return 2
	}
	return 1
}

// app holds what the verbs share: streams, global flags and config.
type app struct {
	streams
	// started is set once a verb's arguments were accepted.
	started bool
	project string
	server  string
	token   string
	// configPath overrides the config file location (tests, --config).
	configPath string
}

func (a *app) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "caravan",
		Short: "Caravan carries freight through stages: Kargo-style promotion on NATS JetStream",
		Long: `Caravan carries freight through stages: Kargo-style promotion on NATS JetStream.

'caravan server' runs the whole system in one process; the other verbs talk to
its REST API. The server and token come from 'caravan login', or from
CARAVAN_SERVER and CARAVAN_TOKEN; against a local 'caravan server' the admin
token in ./.caravan/admin-token (or $CARAVAN_DATA_DIR/admin-token) is found
by itself.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			// Cobra checks these after this hook: check them first, as
			// usage errors.
			if err := cmd.ValidateRequiredFlags(); err != nil {
				return usageError{err}
			}
			if err := cmd.ValidateFlagGroups(); err != nil {
				return usageError{err}
			}
			a.started = true
			return nil
		},
	}
	root.SetOut(a.out)
	root.SetErr(a.errOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVarP(&a.project, "project", "p", "", "project (default $CARAVAN_PROJECT, or the project saved by login)")
	pf.StringVar(&a.server, "server", "", "API server URL (default $CARAVAN_SERVER, the login config, or http://127.0.0.1:8080)")
	pf.StringVar(&a.token, "token", "", "bearer token (default $CARAVAN_TOKEN, the login config, or a local server's admin token)")
	pf.StringVar(&a.configPath, "config", "", "config file (default $CARAVAN_CONFIG or <user config dir>/caravan/config.yaml)")
	a.completeFlag(root, "project", "projects")
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddGroup(
		&cobra.Group{ID: "basic", Title: "Resources:"},
		&cobra.Group{ID: "actions", Title: "Actions:"},
		&cobra.Group{ID: "other", Title: "Other:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add("basic", a.newApply(), a.newDelete(), a.newGet())
	add("actions", a.newPromote(), a.newApprove(), a.newRefresh(), a.newVerify(), a.newResume(), a.newAbort(), a.newWatch(), a.newAudit())
	add("other", a.newServer(), a.newSetup(), a.newDemo(), a.newLogin(), a.newVersion(), a.newCompletion())

	return root
}

// args wraps a cobra argument validator so its errors are usage errors.
func args(v cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := v(cmd, a); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func (a *app) newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client's and the server's versions",
		Long: `Print the client's version and build (from the Go build information of the
binary), then the server's, read from its public /version route. A server
that cannot be reached is reported, not an error.`,
		Args: args(cobra.NoArgs),
		Run: func(cmd *cobra.Command, _ []string) {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Client: caravan %s\n", buildinfo.Read())
			c, t, err := a.anonymousClient()
			if err != nil {
				fmt.Fprintf(out, "Server: unknown (%v)\n", err)
				return
			}
			v, err := c.Version(cmd.Context())
			if err != nil {
				fmt.Fprintf(out, "Server: %s unreachable or too old (%v)\n", t.server, err)
				return
			}
			fmt.Fprintf(out, "Server: caravan %s at %s\n", v, t.server)
		},
	}
}

func (a *app) newCompletion() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Print a shell completion script. For example:

  source <(caravan completion bash)
  caravan completion zsh > "${fpath[1]}/_caravan"
  caravan completion fish > ~/.config/fish/completions/caravan.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      args(cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			root := cmd.Root()
			switch argv[0] {
			case "bash":
				return root.GenBashCompletionV2(cmd.OutOrStdout(), true)
			case "zsh":
				return root.GenZshCompletion(cmd.OutOrStdout())
			default:
				return root.GenFishCompletion(cmd.OutOrStdout(), true)
			}
		},
	}
}
