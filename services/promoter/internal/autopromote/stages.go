package autopromote

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/stageindex"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Requesting evaluates the stages of project that request freight of
// origin o (new freight of o was discovered).
func (a *AutoPromoter) Requesting(ctx context.Context, project string, o model.FreightOrigin) error {
	names, err := a.requesting(ctx, project, o)
	if err != nil {
		return err
	}
	return a.evaluateAll(ctx, project, names)
}

// Downstream evaluates the stages of project that have stage among their
// upstream stages (freight was verified in stage).
func (a *AutoPromoter) Downstream(ctx context.Context, project, stage string) error {
	names, err := a.downstream(ctx, project, stage)
	if err != nil {
		return err
	}
	return a.evaluateAll(ctx, project, names)
}

// Stages evaluates every stage of project for which match is true (nil:
// every stage).
func (a *AutoPromoter) Stages(ctx context.Context, project string, match func(*stageindex.Stage) bool) error {
	names, err := a.matching(ctx, project, match)
	if err != nil {
		return err
	}
	return a.evaluateAll(ctx, project, names)
}

func (a *AutoPromoter) requesting(ctx context.Context, project string, o model.FreightOrigin) ([]string, error) {
	return a.stageNames(ctx, project, func(sets *stageindex.Sets) []string { return sets.Requesting(project, o) },
		func(s *stageindex.Stage) bool { return s.Requests(o) })
}

func (a *AutoPromoter) downstream(ctx context.Context, project, stage string) ([]string, error) {
	return a.stageNames(ctx, project, func(sets *stageindex.Sets) []string { return sets.Downstream(project, stage) },
		func(s *stageindex.Stage) bool { return s.Downstream(stage) })
}

func (a *AutoPromoter) matching(ctx context.Context, project string, match func(*stageindex.Stage) bool) ([]string, error) {
	return a.stageNames(ctx, project, func(sets *stageindex.Sets) []string {
		var out []string
		for _, s := range sets.Stages(project) {
			if match == nil || match(s) {
				out = append(out, s.Name)
			}
		}
		return out
	}, match)
}

func (a *AutoPromoter) evaluateAll(ctx context.Context, project string, names []string) error {
	var errs []error
	for _, name := range names {
		if err := a.Evaluate(ctx, project, name); err != nil {
			errs = append(errs, fmt.Errorf("stage %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// stageNames returns the names of project's stages an event concerns:
// from the stage index (indexed) when it is current, else those of the
// stages listed from KV for which match is true (nil: all). Both give the
// same names, sorted.
func (a *AutoPromoter) stageNames(ctx context.Context, project string, indexed func(*stageindex.Sets) []string, match func(*stageindex.Stage) bool) ([]string, error) {
	if sets := a.stageSets(ctx); sets != nil {
		return indexed(sets), nil
	}
	stages, err := a.stagesFromKV(ctx, project)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range stages {
		if match == nil || match(s) {
			out = append(out, s.Name)
		}
	}
	return out, nil
}

// projectStages returns project's stages, sorted by name: from the stage
// index when it is current, else listed from KV.
func (a *AutoPromoter) projectStages(ctx context.Context, project string) ([]*stageindex.Stage, error) {
	if sets := a.stageSets(ctx); sets != nil {
		return sets.Stages(project), nil
	}
	return a.stagesFromKV(ctx, project)
}

// stagesFromKV lists project's stages from KV (one request per stage,
// beside the key listing): what the index spares.
func (a *AutoPromoter) stagesFromKV(ctx context.Context, project string) ([]*stageindex.Stage, error) {
	objs, _, err := a.o.Store.ListObjects(ctx, project, model.KindStage, 0, "")
	if err != nil {
		return nil, err
	}
	sets := stageindex.NewSets()
	for _, o := range objs {
		if s, ok := o.(*model.Stage); ok {
			sets.Put(project, stageindex.Of(s))
		}
	}
	return sets.Stages(project), nil
}

// stageProjects returns the projects that have stages: from the stage
// index when it is current, else from the keys of KV.
func (a *AutoPromoter) stageProjects(ctx context.Context) ([]string, error) {
	if sets := a.stageSets(ctx); sets != nil {
		return sets.Projects(), nil
	}
	keys, err := state.Keys(ctx, a.o.Store.KV(state.Resources), "*."+state.Token(model.KindStage)+".*")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		if p, _, ok := strings.Cut(k, "."); ok && !seen[state.Untoken(p)] {
			seen[state.Untoken(p)] = true
			out = append(out, state.Untoken(p))
		}
	}
	return out, nil
}

// stageSets returns the stage index's sets once current, nil when there
// is no index or it is not current in time (the caller lists KV).
func (a *AutoPromoter) stageSets(ctx context.Context) *stageindex.Sets {
	if a.o.Stages == nil {
		return nil
	}
	sets, err := a.o.Stages.Sync(ctx, indexTimeout)
	if err != nil {
		if ctx.Err() == nil {
			a.o.Logger.Warn("stage index: listing KV instead", "err", err)
		}
		return nil
	}
	return sets
}
