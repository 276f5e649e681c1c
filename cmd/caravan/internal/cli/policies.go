package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/client"
)

func (a *app) approvePromotion(cmd *cobra.Command, name, reason string, show bool) error {
	c, project, err := a.projectClient()
	if err != nil {
		return err
	}
	var ap *client.Approval
	if show {
		ap, err = c.PromotionApproval(cmd.Context(), project, name)
	} else {
		ap, err = c.ApprovePromotion(cmd.Context(), project, name, reason)
	}
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if !show {
		fmt.Fprintf(out, "promotion/%s approved\n", name)
	}
	printApproval(out, ap)
	return nil
}

func printApproval(w io.Writer, ap *client.Approval) {
	if !ap.Policy {
		fmt.Fprintf(w, "no approval policy gates stage %s\n", ap.Stage)
		return
	}
	approvers := "nobody yet"
	if len(ap.Approvers) > 0 {
		approvers = strings.Join(ap.Approvers, ", ")
	}
	fmt.Fprintf(w, "approved by: %s (%d of %d)\n", approvers, len(ap.Approvers), ap.Required)
	if ap.Approved {
		fmt.Fprintln(w, "approved: the promotion may run")
		return
	}
	who := "anyone with the promoter role"
	if len(ap.Groups) > 0 {
		who = "members of " + strings.Join(ap.Groups, ", ")
	}
	fmt.Fprintf(w, "still to approve: %d more, from %s, other than %s\n", ap.Missing, who, ap.Requester)
	if ap.ExpiresAt != nil {
		fmt.Fprintf(w, "the first approval expires at %s\n", ap.ExpiresAt.UTC().Format(time.RFC3339))
	}
}

func (a *app) newAudit() *cobra.Command {
	var actor, action, object, since, until, before, output string
	var limit int
	cmd := &cobra.Command{
		Use:   "audit [--actor A] [--action X] [--object O] [--since T] [--limit N]",
		Short: "Show the project's audit log",
		Long: `Show the project's audit log, newest first: every change made through the
API (apply, delete, promote, approve, abort, override, token create and
revoke, …) and every automatic decision (auto-promotion, rollback,
window-wait), with its actor, time, object and status. Nothing in it can be
changed. --since and --until take RFC 3339 times or durations back from now
(24h).`,
		Example: `  caravan audit -p demo --action promote --since 24h
  caravan audit -p demo --actor email:ana@example.com -o json`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != formatJSON && output != formatYAML {
				return usagef("--output must be json or yaml")
			}
			q := url.Values{}
			for k, v := range map[string]string{"actor": actor, "action": action, "object": object, "before": before} {
				if v != "" {
					q.Set(k, v)
				}
			}
			for k, v := range map[string]string{"since": since, "until": until} {
				if v == "" {
					continue
				}
				if d, err := time.ParseDuration(v); err == nil {
					v = time.Now().Add(-d).UTC().Format(time.RFC3339)
				}
				q.Set(k, v)
			}
			if limit > 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			c, project, err := a.projectClient()
			if err != nil {
				return err
			}
			page, err := c.Audit(cmd.Context(), project, q)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output != "" {
				return printValue(out, output, page)
			}
			t := newTable(out, "TIME", "ACTOR", "ACTION", "OBJECT", "STATUS", "REASON")
			for _, r := range page.Items {
				status := ""
				if r.Status != 0 {
					status = strconv.Itoa(r.Status)
				} else if r.Automatic {
					status = "auto"
				}
				t.row(r.Time.UTC().Format(time.RFC3339), r.Actor, r.Action, r.Object, status, r.Reason)
			}
			if err := t.flush(); err != nil {
				return err
			}
			if page.Before != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "older records: --before %s\n", page.Before)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&actor, "actor", "", "only records of this actor")
	f.StringVar(&action, "action", "", "only records of this action")
	f.StringVar(&object, "object", "", "only records whose object starts with this (Promotion/, Stage/prod)")
	f.StringVar(&since, "since", "", "only records since this time (RFC 3339) or this long ago (24h)")
	f.StringVar(&until, "until", "", "only records until this time (RFC 3339) or this long ago")
	f.StringVar(&before, "before", "", "only records older than this sequence (paging)")
	f.IntVar(&limit, "limit", 0, "at most this many records (default 100)")
	f.StringVarP(&output, "output", "o", "", "json or yaml")
	return cmd
}

// printValue prints v as JSON or YAML.
func printValue(w io.Writer, format string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return printRaw(w, format, []json.RawMessage{b}, true)
}
