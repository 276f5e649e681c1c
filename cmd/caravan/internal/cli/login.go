package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func (a *app) newLogin() *cobra.Command {
	return &cobra.Command{
		Use:   "login --server URL [--token T] [-p PROJECT]",
		Short: "Save the API server, token and default project",
		Long: `Save the API server, token and default project in the config file
(<user config dir>/caravan/config.yaml, mode 0600), after checking them
against the server. CARAVAN_SERVER and CARAVAN_TOKEN override what is saved.
Without --token, a local server's admin token is used (and not saved).`,
		Example: `  caravan login --server http://127.0.0.1:8080 --token "$(cat .caravan/admin-token)" -p demo`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			server, token := firstOf(a.server, DefaultServer), a.token
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			// Check what is about to be saved, resolving as later verbs will.
			a.server = server
			c, t, err := a.anonymousClient()
			if err != nil {
				return err
			}
			if t.token == "" {
				return usagef("no token: pass --token (a local server's admin token is in %s)", a.localTokenFile())
			}
			if _, err := c.List(cmd.Context(), "/v1/projects", nil); err != nil {
				return fmt.Errorf("log in to %s: %w", server, err)
			}
			cfg.Server = server
			switch {
			case token != "":
				cfg.Token = token
			case t.tokenFrom != "the login config":
				cfg.Token = "" // a local admin token is found again each time
			}
			if a.project != "" {
				cfg.Project = a.project
			}
			path, err := a.saveConfig(cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Logged in to %s (saved in %s)\n", server, path)
			return nil
		},
	}
}
