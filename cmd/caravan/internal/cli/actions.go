package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/client"
)

func (a *app) newPromote() *cobra.Command {
	var stage, freight, alias, warehouse, override, output string
	var wait, dryRun bool
	cmd := &cobra.Command{
		Use:   "promote --stage S (--freight F | --freight-alias A | --warehouse W) [--wait | --dry-run]",
		Short: "Promote a stage to a piece of freight",
		Long: `Promote a stage to a piece of freight, named by its ID (--freight), its
alias (--freight-alias), or the newest freight of a warehouse available to the
stage (--warehouse).

With --wait, follow the promotion's steps as they run and exit 1 if it fails.

While promotion windows keep the stage closed the server refuses the
promotion and names the next opening; a project admin may override them with
--override-window "<reason>" (recorded on the promotion and in the audit log).
A stage an approval policy gates keeps the promotion Pending until enough
people approved it ('caravan approve promotion P').

With --dry-run nothing is promoted: a promoter runs the stage's steps in a
scratch work tree up to, not including, the first step with effects outside
it (git-push, github-push, git-open-pr, git-wait-for-pr, git-merge-pr, http,
argocd-update, argocd-wait, oci-push, set-metadata, set-freight-alias), and
prints each step's status, their outputs and the unified diff each git
repository would receive. No commit is pushed, no promotion stored, no event
sent; promotion windows do not apply. Secret values show as ***.`,
		Example: `  caravan promote -p demo --stage prod --freight-alias wonky-wombat --wait
  caravan promote -p demo --stage prod --freight-alias wonky-wombat --override-window "hotfix INC-42"
  caravan promote -p demo --stage prod --freight-alias wonky-wombat --dry-run
  caravan promote -p demo --stage prod --warehouse app --dry-run -o json`,
		Args: args(cobra.NoArgs),
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
			if dryRun && (wait || cmd.Flags().Changed("override-window")) {
				return usagef("--dry-run goes with neither --wait nor --override-window")
			}
			if output != "" && (!dryRun || (output != formatJSON && output != formatYAML)) {
				return usagef("--output takes json or yaml, with --dry-run")
			}
			c, project, err := a.projectClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if dryRun {
				d, err := c.PromoteDryRun(ctx, project, stage, client.PromoteRequest{Freight: firstOf(freight, alias), Warehouse: warehouse})
				if err != nil {
					return err
				}
				if output != "" {
					return printValue(cmd.OutOrStdout(), output, d)
				}
				return printDryRun(cmd.OutOrStdout(), d)
			}
			var w *waiter
			if wait {
				// Listen before asking, so no event is missed.
				w = a.newWaiter(ctx, c, project)
				defer w.close()
			}
			pr := client.PromoteRequest{Freight: firstOf(freight, alias), Warehouse: warehouse}
			if cmd.Flags().Changed("override-window") {
				pr.WindowOverride = &client.WindowOverride{Reason: override}
			}
			p, err := c.Promote(ctx, project, stage, pr)
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
	f.StringVar(&override, "override-window", "", "promote even while promotion windows are closed, saying why (project admins)")
	f.BoolVar(&dryRun, "dry-run", false, "promote nothing: show each git repository's diff and the step outputs, up to the first step with effects")
	f.StringVarP(&output, "output", "o", "", "with --dry-run: json or yaml instead of text")
	_ = cmd.MarkFlagRequired("stage")
	a.completeFlag(cmd, "stage", "stages")
	a.completeFlag(cmd, "freight", "freight")
	a.completeFlag(cmd, "freight-alias", "freight")
	a.completeFlag(cmd, "warehouse", "warehouses")
	return cmd
}

func (a *app) newApprove() *cobra.Command {
	var freight, stage, reason string
	var show bool
	cmd := &cobra.Command{
		Use:   "approve (--freight F --stage S | promotion P --reason R | promotion P --show)",
		Short: "Approve a piece of freight for a stage, or a promotion",
		Long: `Approve a piece of freight (by ID or alias) for a stage, making it
available there without passing through the upstream stages.

Or approve a pending promotion that an approval policy (ProjectConfig
approvalPolicies) holds, saying why: the person who asked for it may not, and
each person counts once. It prints who approved and who still has to;
--show prints that without approving.`,
		Example: `  caravan approve -p demo --freight wonky-wombat --stage prod
  caravan approve -p demo promotion prod.01j…6897ce3 --reason "CHG-7 approved"
  caravan approve -p demo promotion prod.01j…6897ce3 --show`,
		Args: args(func(cmd *cobra.Command, argv []string) error {
			switch len(argv) {
			case 0:
				if freight == "" || stage == "" {
					return fmt.Errorf("give --freight and --stage, or promotion P")
				}
				return nil
			case 2:
				if r, ok := findResource(argv[0]); !ok || r.name != "promotions" {
					return fmt.Errorf("approve: only freight (flags) and promotions can be approved, not %q", argv[0])
				}
				if reason == "" && !show {
					return fmt.Errorf("approve promotion: --reason is required (or --show)")
				}
				return nil
			}
			return fmt.Errorf("approve takes no arguments or promotion P")
		}),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if len(argv) == 2 {
				return a.approvePromotion(cmd, argv[1], reason, show)
			}
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
	cmd.Flags().StringVar(&freight, "freight", "", "freight name or alias")
	cmd.Flags().StringVar(&stage, "stage", "", "stage the freight is approved for")
	cmd.Flags().StringVar(&reason, "reason", "", "why the promotion may go (approve promotion)")
	cmd.Flags().BoolVar(&show, "show", false, "show who approved the promotion and who still has to, without approving")
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
