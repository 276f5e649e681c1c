package cli

import (
	"context"
	"encoding/json"
	"time"

	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Completion of names asks the server: stage, warehouse, promotion and
// project names, freight aliases. It resolves the server, token and
// project as the verb would (flags already typed count), and completes
// nothing, quietly, when the server cannot be reached.

// completionTimeout bounds the server's answer: a shell waits for it.
const completionTimeout = 3 * time.Second

// names lists the names of kind (a resource name such as "stages") from
// the server; for freight, aliases.
func (a *app) names(ctx context.Context, kind string) []string {
	r, ok := findResource(kind)
	if !ok {
		return nil
	}
	c, t, err := a.client()
	if err != nil || (!r.cluster && t.project == "") {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	items, err := c.List(ctx, r.path(t.project), nil)
	if err != nil {
		return nil
	}
	return itemNames(items, r.name == "freight")
}

// itemNames are the names (or, for freight, the aliases and then the
// names) of listed objects.
func itemNames(items []json.RawMessage, freight bool) []string {
	var out []string
	for _, it := range items {
		var obj struct {
			Metadata model.ObjectMeta `json:"metadata"`
			Alias    string           `json:"alias"`
			ID       string           `json:"id"`
		}
		if json.Unmarshal(it, &obj) != nil {
			continue
		}
		switch {
		case freight && obj.Alias != "":
			out = append(out, obj.Alias)
		case obj.Metadata.Name != "":
			out = append(out, obj.Metadata.Name)
		case obj.ID != "":
			out = append(out, obj.ID)
		}
	}
	return out
}

// completeKindName completes the second argument of "VERB KIND NAME" with
// the names of kind ("" takes the kind from the first argument).
func (a *app) completeKindName(kind string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, argv []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch len(argv) {
		case 0:
			if kind != "" {
				return []cobra.Completion{kind[:len(kind)-1]}, cobra.ShellCompDirectiveNoFileComp
			}
			names := make([]string, 0, len(resources))
			for _, r := range resources {
				names = append(names, r.name)
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		case 1:
			k := kind
			if k == "" {
				k = argv[0]
			}
			return a.names(cmd.Context(), k), cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeFlag completes a flag's value with the names of kind.
func (a *app) completeFlag(cmd *cobra.Command, flag, kind string) {
	_ = cmd.RegisterFlagCompletionFunc(flag, func(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return a.names(cmd.Context(), kind), cobra.ShellCompDirectiveNoFileComp
	})
}
