// Package freight turns a Warehouse's discovered artifacts into Freight as
// Kargo does: one artifact per subscription, the newest selected one; the
// Freight's name is its content ID, so the same artifacts from the same
// Warehouse always make the same Freight.
package freight

import (
	"errors"
	"fmt"

	"github.com/expr-lang/expr"

	"github.com/caravan-cd/caravan/pkg/model"
)

// ErrIncomplete: some subscription has no artifact yet, so no Freight can
// be assembled.
var ErrIncomplete = errors.New("not every subscription has a discovered artifact")

// Build assembles the Freight of the newest artifact of every subscription
// of w from art (whose results are in subscription order, one per kind).
// Each artifact carries the name of its subscription, when it has one.
func Build(w *model.Warehouse, art *model.DiscoveredArtifacts) (*model.Freight, error) {
	f := &model.Freight{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
		ObjectMeta: model.ObjectMeta{Namespace: w.Namespace},
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: w.Name},
	}
	if art == nil {
		return nil, ErrIncomplete
	}
	var gi, ii, ci int
	for _, sub := range w.Spec.Subscriptions {
		switch {
		case sub.Git != nil:
			if gi >= len(art.Git) || len(art.Git[gi].Commits) == 0 {
				return nil, fmt.Errorf("%w: git %s", ErrIncomplete, sub.Git.RepoURL)
			}
			c := art.Git[gi].Commits[0]
			f.Commits = append(f.Commits, model.GitCommit{SubscriptionName: sub.Name, RepoURL: sub.Git.RepoURL, ID: c.ID, Branch: c.Branch, Tag: c.Tag, Message: c.Subject, Author: c.Author, Committer: c.Committer})
			gi++
		case sub.Image != nil:
			if ii >= len(art.Images) || len(art.Images[ii].References) == 0 {
				return nil, fmt.Errorf("%w: image %s", ErrIncomplete, sub.Image.RepoURL)
			}
			r := art.Images[ii].References[0]
			f.Images = append(f.Images, model.Image{SubscriptionName: sub.Name, RepoURL: sub.Image.RepoURL, Tag: r.Tag, Digest: r.Digest, Annotations: r.Annotations})
			ii++
		case sub.Chart != nil:
			if ci >= len(art.Charts) || len(art.Charts[ci].Versions) == 0 {
				return nil, fmt.Errorf("%w: chart %s %s", ErrIncomplete, sub.Chart.RepoURL, sub.Chart.Name)
			}
			f.Charts = append(f.Charts, model.Chart{SubscriptionName: sub.Name, RepoURL: sub.Chart.RepoURL, Name: sub.Chart.Name, Version: art.Charts[ci].Versions[0]})
			ci++
		}
	}
	f.Name = f.GenerateID()
	return f, nil
}

// Criteria is a compiled freightCreationCriteria expression. As in Kargo
// it sees the discovered artifacts, the newest of each subscription,
// through imageFrom(repoURL) (an Image: RepoURL, Tag, Digest,
// Annotations), commitFrom(repoURL) (a DiscoveredCommit: ID, Branch, Tag,
// Subject, Author, Committer, CreatorDate) and chartFrom(repoURL[, name])
// (a Chart: RepoURL, Name, Version); each is nil when nothing was
// discovered from the repository.
type Criteria struct {
	src string
}

// env is what a criteria expression evaluates against.
type env struct {
	art *model.DiscoveredArtifacts
}

func options(e *env) []expr.Option {
	return []expr.Option{
		expr.AsBool(),
		expr.Function("imageFrom", func(params ...any) (any, error) {
			repo, _ := params[0].(string)
			for _, r := range e.images() {
				if r.RepoURL == repo && len(r.References) > 0 {
					ref := r.References[0]
					return &model.Image{RepoURL: r.RepoURL, Tag: ref.Tag, Digest: ref.Digest, Annotations: ref.Annotations}, nil
				}
			}
			return (*model.Image)(nil), nil
		}, new(func(string) *model.Image)),
		expr.Function("commitFrom", func(params ...any) (any, error) {
			repo, _ := params[0].(string)
			for _, g := range e.git() {
				if model.NormalizeGitURL(g.RepoURL) == model.NormalizeGitURL(repo) && len(g.Commits) > 0 {
					c := g.Commits[0]
					return &c, nil
				}
			}
			return (*model.DiscoveredCommit)(nil), nil
		}, new(func(string) *model.DiscoveredCommit)),
		expr.Function("chartFrom", func(params ...any) (any, error) {
			repo, _ := params[0].(string)
			chart := ""
			if len(params) > 1 {
				chart, _ = params[1].(string)
			}
			for _, c := range e.charts() {
				if model.NormalizeChartURL(c.RepoURL) == model.NormalizeChartURL(repo) && (chart == "" || c.Name == chart) && len(c.Versions) > 0 {
					return &model.Chart{RepoURL: c.RepoURL, Name: c.Name, Version: c.Versions[0]}, nil
				}
			}
			return (*model.Chart)(nil), nil
		}, new(func(string) *model.Chart), new(func(string, string) *model.Chart)),
	}
}

func (e *env) images() []model.ImageDiscoveryResult {
	if e.art == nil {
		return nil
	}
	return e.art.Images
}

func (e *env) git() []model.GitDiscoveryResult {
	if e.art == nil {
		return nil
	}
	return e.art.Git
}

func (e *env) charts() []model.ChartDiscoveryResult {
	if e.art == nil {
		return nil
	}
	return e.art.Charts
}

// CompileCriteria checks expression's syntax and types.
func CompileCriteria(expression string) (*Criteria, error) {
	if _, err := expr.Compile(expression, options(&env{})...); err != nil {
		return nil, fmt.Errorf("freightCreationCriteria: %w", err)
	}
	return &Criteria{src: expression}, nil
}

// Allows evaluates the criteria against the discovered artifacts art.
func (c *Criteria) Allows(art *model.DiscoveredArtifacts) (bool, error) {
	e := &env{art: art}
	prog, err := expr.Compile(c.src, options(e)...)
	if err != nil {
		return false, fmt.Errorf("freightCreationCriteria: %w", err)
	}
	out, err := expr.Run(prog, nil)
	if err != nil {
		return false, fmt.Errorf("freightCreationCriteria: %w", err)
	}
	ok, _ := out.(bool)
	return ok, nil
}
