package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
)

// printDryRun writes a dry run as text: the steps, where it stopped, the
// outputs and each repository's diff.
func printDryRun(w io.Writer, d *model.PromotionDryRun) error {
	fmt.Fprintf(w, "dry run of stage %s to freight %s: %s", d.Stage, d.Freight, d.Phase)
	if d.Message != "" {
		fmt.Fprintf(w, ": %s", d.Message)
	}
	fmt.Fprintln(w)
	n := len(d.Steps)
	for i, s := range d.Steps {
		if d.StoppedAt != nil && i >= d.StoppedAt.Index {
			break
		}
		status := string(s.Status)
		if status == "" {
			status = "not run"
		}
		fmt.Fprintf(w, "  [%d/%d] %s (%s): %s", i+1, n, s.Alias, s.Uses, status)
		if s.Message != "" {
			fmt.Fprintf(w, ": %s", s.Message)
		}
		fmt.Fprintln(w)
	}
	if st := d.StoppedAt; st != nil {
		fmt.Fprintf(w, "  [%d/%d] %s (%s): stopped here, not run: %s\n", st.Index+1, n, st.Alias, st.Uses, st.Reason)
	}
	if len(d.Outputs) > 0 {
		b, err := json.MarshalIndent(d.Outputs, "  ", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "outputs:\n  %s\n", b)
	}
	if len(d.Diffs) == 0 {
		fmt.Fprintln(w, "no git repository checked out")
	}
	for _, df := range d.Diffs {
		var where []string
		where = append(where, "path "+df.Path)
		if df.Branch != "" {
			where = append(where, "branch "+df.Branch)
		}
		if df.Base != "" {
			where = append(where, "from "+short(df.Base))
		}
		fmt.Fprintf(w, "\nrepository %s (%s): ", df.RepoURL, strings.Join(where, ", "))
		switch len(df.Files) {
		case 0:
			fmt.Fprintln(w, "no change to push")
		case 1:
			fmt.Fprintln(w, "1 file changed")
		default:
			fmt.Fprintf(w, "%d files changed\n", len(df.Files))
		}
		if df.Uncommitted {
			fmt.Fprintln(w, "(the work tree also has changes no step committed; a push would not carry them)")
		}
		_, _ = io.WriteString(w, df.Patch)
		if df.Truncated {
			fmt.Fprintln(w, "… (diff cut)")
		}
	}
	return nil
}
