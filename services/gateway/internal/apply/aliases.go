package apply

import (
	"context"
	"fmt"

	"github.com/caravan-cd/caravan/pkg/model"
)

// checkAliases refuses Freight whose alias another freight of the project
// holds (stored, or earlier in the same body), as Kargo's admission does.
// A freight keeping its own alias is not checked again.
func (a *Applier) checkAliases(ctx context.Context, docs []model.Document) (model.Issues, error) {
	holders := map[string]map[string]string{} // project → alias → freight
	var issues model.Issues
	for _, d := range docs {
		f, ok := d.Object.(*model.Freight)
		if !ok || f.Alias == "" {
			continue
		}
		held, ok := holders[f.Namespace]
		if !ok {
			objs, _, err := a.store.ListObjects(ctx, f.Namespace, model.KindFreight, 0, "")
			if err != nil {
				return nil, fmt.Errorf("load the freight of project %q: %w", f.Namespace, err)
			}
			held = map[string]string{}
			for _, o := range objs {
				if s, ok := o.(*model.Freight); ok && s.Alias != "" {
					held[s.Alias] = s.Name
				}
			}
			holders[f.Namespace] = held
		}
		if other, ok := held[f.Alias]; ok && other != f.Name {
			issues = append(issues, model.Issue{Document: d.Index, Kind: model.KindFreight, Name: f.Name, Field: "alias",
				Message: fmt.Sprintf("alias %q is taken by freight %s", f.Alias, other)})
			continue
		}
		held[f.Alias] = f.Name
	}
	return issues, nil
}

// reserveAlias reserves the alias a freight is about to be written with
// (state.ReserveAlias), so a writer racing this one cannot take it too.
func (a *Applier) reserveAlias(ctx context.Context, next, cur model.Object) error {
	f, ok := next.(*model.Freight)
	if !ok || f.Alias == "" {
		return nil
	}
	if c, ok := cur.(*model.Freight); ok && c.Alias == f.Alias {
		return nil
	}
	return a.store.ReserveAlias(ctx, f.Namespace, f.Alias, f.Name)
}

// releaseAlias frees the alias a freight had before it was written with
// another one. The write is done: a release that fails leaves the old
// alias reserved until state.AliasGrace has passed, no longer.
func (a *Applier) releaseAlias(ctx context.Context, next, cur model.Object) {
	c, ok := cur.(*model.Freight)
	if !ok || c.Alias == "" {
		return
	}
	if f, ok := next.(*model.Freight); ok && f.Alias == c.Alias {
		return
	}
	_ = a.store.ReleaseAlias(ctx, c.Namespace, c.Alias, c.Name)
}
