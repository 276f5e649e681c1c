package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/client"
)

func (a *app) newPromote() *cobra.Command {
	var stage, freight, alias, warehouse string
	var wait bool
	cmd := &cobra.Command{
		Use:   "promote --stage S (--freight F | --freight-alias A | --warehouse W) [--wait]",
		Short: "Promote a stage to a piece of freight",
		Long: `Promote a stage to a piece of freight, named by its ID (--freight), its
alias (--freight-alias), or the newest freight of a warehouse available to the
stage (--warehouse).

With --wait, follow the promotion's steps as they run and exit 1 if it fails.`,
		Example: `  caravan promote -p demo --stage prod --freight-alias wonky-wombat --wait`,
		Args:    args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			n := 0
			for _, v := range []string{freight, alias, warehouse} {
				if v != "" {
					n++
				}
			}
			if n != 1 {
				return usagef("give exactly one of --freight, --freight-alias and --warehouse")
			}
			c, project, err := a.projectClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var w *waiter
			if wait {
				// Listen before asking, so no event is missed.
				w = a.newWaiter(ctx, c, project)
				defer w.close()
			}
			p, err := c.Promote(ctx, project, stage, client.PromoteRequest{Freight: firstOf(freight, alias), Warehouse: warehouse})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "promotion/%s created\n", p.Name)
			if !wait {
				return nil
			}
			return w.wait(ctx, cmd.OutOrStdout(), p)
		},
	}
	f := cmd.Flags()
	f.StringVar(&stage, "stage", "", "stage to promote (required)")
	f.StringVar(&freight, "freight", "", "freight name (ID)")
	f.StringVar(&alias, "freight-alias", "", "freight alias")
	f.StringVar(&warehouse, "warehouse", "", "promote the newest freight from this warehouse available to the stage")
	f.BoolVar(&wait, "wait", false, "follow the promotion until it ends; exit 1 if it fails")
	_ = cmd.MarkFlagRequired("stage")
	a.completeFlag(cmd, "stage", "stages")
	a.completeFlag(cmd, "freight", "freight")
	a.completeFlag(cmd, "freight-alias", "freight")
	a.completeFlag(cmd, "warehouse", "warehouses")
	return cmd
}

func (a *app) newApprove() *cobra.Command {
	var freight, stage string
	cmd := &cobra.Command{
		Use:   "approve --freight F --stage S",
		Short: "Approve a piece of freight for a stage",
		Long: `Approve a piece of freight (by ID or alias) for a stage, making it
available there without passing through the upstream stages.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, project, err := a.projectClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			// Resolve an alias to the freight's name.
			f, err := c.Freight(ctx, project, freight)
			if err != nil {
				return err
			}
			if _, err := c.Approve(ctx, project, f.Name, stage); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "freight/%s (%s) approved for stage %s\n", f.Name, f.Alias, stage)
			return nil
		},
	}
	cmd.Flags().StringVar(&freight, "freight", "", "freight name or alias (required)")
	cmd.Flags().StringVar(&stage, "stage", "", "stage (required)")
	_ = cmd.MarkFlagRequired("freight")
	_ = cmd.MarkFlagRequired("stage")
	a.completeFlag(cmd, "freight", "freight")
	a.completeFlag(cmd, "stage", "stages")
	return cmd
}

func (a *app) newRefresh() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:               "refresh warehouse W",
		Short:             "Discover a warehouse's artifacts now",
		Args:              args(cobra.ExactArgs(2)),
		ValidArgsFunction: a.completeKindName("warehouses"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if r, ok := findResource(argv[0]); !ok || r.name != "warehouses" {
				return usagef("refresh: only warehouses can be refreshed, not %q", argv[0])
			}
			c, project, err := a.projectClient()
			if err != nil {
				return err
			}
			if err := c.Refresh(cmd.Context(), project, argv[1], reason); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "warehouse/%s refresh requested\n", argv[1])
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown in the event (one line)")
	return cmd
}

func (a *app) newVerify() *cobra.Command {
	var abort bool
	cmd := &cobra.Command{
		Use:               "verify stage S [--abort]",
		Short:             "Re-verify a stage's current freight (or abort its verification)",
		Args:              args(cobra.ExactArgs(2)),
		ValidArgsFunction: a.completeKindName("stages"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if r, ok := findResource(argv[0]); !ok || r.name != "stages" {
				return usagef("verify: only stages can be verified, not %q", argv[0])
			}
			c, project, err := a.projectClient()
			if err != nil {
				return err
			}
			if abort {
				if err := c.AbortVerification(cmd.Context(), project, argv[1]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "stage/%s verification abort requested\n", argv[1])
				return nil
			}
			if err := c.Verify(cmd.Context(), project, argv[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stage/%s verification requested\n", argv[1])
			return nil
		},
	}
	cmd.Flags().BoolVar(&abort, "abort", false, "abort the running verification instead")
	return cmd
}

func (a *app) newAbort() *cobra.Command {
	return &cobra.Command{
		Use:               "abort promotion P",
		Short:             "Abort a promotion",
		Args:              args(cobra.ExactArgs(2)),
		ValidArgsFunction: a.completeKindName("promotions"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if r, ok := findResource(argv[0]); !ok || r.name != "promotions" {
				return usagef("abort: only promotions can be aborted, not %q", argv[0])
			}
			c, project, err := a.projectClient()
			if err != nil {
				return err
			}
			if err := c.AbortPromotion(cmd.Context(), project, argv[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "promotion/%s abort requested\n", argv[1])
			return nil
		},
	}
}

func (a *app) newResume() *cobra.Command {
	return &cobra.Command{
		Use:   "resume stage S",
		Short: "Lift a stage's auto-promotion holds",
		Long: `Lift a stage's auto-promotion holds. Promoting older freight by hand into a
stage that is auto-promoted holds its auto-promotion (so that it does not
move back to the newest freight at once); 'caravan get stages' shows the hold,
'caravan watch' announces it, and this lifts it: the stage then takes the
newest available freight again.`,
		Example:           `  caravan resume stage dev -p demo`,
		Args:              args(cobra.ExactArgs(2)),
		ValidArgsFunction: a.completeKindName("stages"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if r, ok := findResource(argv[0]); !ok || r.name != "stages" {
				return usagef("resume: only stages can be resumed, not %q", argv[0])
			}
			c, project, err := a.projectClient()
			if err != nil {
				return err
			}
			if err := c.ResumeAutoPromotion(cmd.Context(), project, argv[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stage/%s auto-promotion resumed\n", argv[1])
			return nil
		},
	}
}
