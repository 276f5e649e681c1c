package autopromote

import (
	"context"
	"errors"
	"time"

	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// freightFor returns the freight an evaluation of stage at now needs:
// from the freight index when it is current, only the freight that can
// matter (see relevant); otherwise every freight of the project, read
// from KV. The model's selection rules give the same answer on both.
func (a *AutoPromoter) freightFor(ctx context.Context, project string, stage *model.Stage, now time.Time) ([]*model.Freight, error) {
	if sets := a.sets(ctx); sets != nil {
		return relevant(sets, project, stage, now), nil
	}
	return state.ListAll[*model.Freight](ctx, a.o.Store, project, model.KindFreight)
}

// freightNamed returns the project's freight of the given names that
// exist, by name.
func (a *AutoPromoter) freightNamed(ctx context.Context, project string, names []string) (map[string]*model.Freight, error) {
	out := map[string]*model.Freight{}
	sets := a.sets(ctx)
	for _, n := range names {
		if _, done := out[n]; done || n == "" {
			continue
		}
		if sets != nil {
			if f, ok := sets.Get(project, n); ok {
				out[n] = f
			}
			continue
		}
		f, _, err := a.findFreight(ctx, project, n)
		if errors.Is(err, state.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[n] = f
	}
	return out, nil
}

// sets returns the freight index's sets once current, nil when there is
// no index or it is not current in time (the caller reads KV).
func (a *AutoPromoter) sets(ctx context.Context) *freightindex.Sets {
	if a.o.Freight == nil {
		return nil
	}
	sets, err := a.o.Freight.Sync(ctx, indexTimeout)
	if err != nil {
		if ctx.Err() == nil {
			a.o.Logger.Warn("freight index: reading KV instead", "err", err)
		}
		return nil
	}
	return sets
}

// relevant returns the freight of project that auto-promotion of stage
// at now can select or wait for, for every origin it requests:
//
//   - NewestFreight: the freight that may be available, newest first, up
//     to the first that is — of the origin's for a direct request, else of
//     those approved for the stage or verified upstream (no other can be
//     available, or become so by soaking); older freight can be neither
//     selected nor waited for.
//   - MatchUpstream: the freight in the upstream stages now.
//   - A control-flow stage: every freight that may be available to it,
//     since it passes on all of them.
//
// Each list is read newest first from the index, so the work does not
// grow with the freight a project keeps, only with the freight newer than
// what the stage can take.
func relevant(sets *freightindex.Sets, project string, stage *model.Stage, now time.Time) []*model.Freight {
	seen := map[string]bool{}
	var out []*model.Freight
	add := func(f *model.Freight) {
		if !seen[f.Name] {
			seen[f.Name] = true
			out = append(out, f)
		}
	}
	// upTo adds a list newest first up to the first freight available.
	upTo := func(o model.FreightOrigin, rel freightindex.Relation, st string) {
		sets.Walk(project, o, rel, st, func(f *model.Freight) bool {
			add(f)
			ok, _ := model.FreightAvailable(f, stage, now)
			return !ok
		})
	}
	whole := func(o model.FreightOrigin, rel freightindex.Relation, st string) {
		sets.Walk(project, o, rel, st, func(f *model.Freight) bool {
			if rel != freightindex.All || !f.IsVerifiedIn(stage.Name) {
				add(f)
			}
			return true
		})
	}
	controlFlow := stage.IsControlFlow()
	for _, req := range stage.Spec.RequestedFreight {
		o := req.Origin
		switch {
		case controlFlow && req.Sources.Direct:
			whole(o, freightindex.All, "")
		case controlFlow:
			whole(o, freightindex.ApprovedFor, stage.Name)
			for _, up := range req.Sources.Stages {
				whole(o, freightindex.VerifiedIn, up)
			}
		case stage.SelectionPolicy(o) == model.AutoPromotionSelectionPolicyMatchUpstream:
			for _, up := range req.Sources.Stages {
				whole(o, freightindex.CurrentlyIn, up)
			}
		case req.Sources.Direct:
			upTo(o, freightindex.All, "")
		default:
			upTo(o, freightindex.ApprovedFor, stage.Name)
			for _, up := range req.Sources.Stages {
				upTo(o, freightindex.VerifiedIn, up)
			}
		}
	}
	return out
}
