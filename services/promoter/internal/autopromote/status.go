package autopromote

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/stageindex"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/partition"
)

// SyncStatus brings the parts of a stage's status that follow from the
// rest up to date: conditions, freightSummary, autoPromotionEnabled and
// observedGeneration (model.SyncStageStatus). It writes only when
// something changed.
func (a *AutoPromoter) SyncStatus(ctx context.Context, project, stageName string) error {
	stage, _, err := state.GetAs[*model.Stage](ctx, a.o.Store, project, model.KindStage, stageName)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	pol, err := state.LoadPolicies(ctx, a.o.Store, project)
	if err != nil {
		return err
	}
	enabled := model.AutoPromotionEnabled(pol.PromotionPolicies(), stage) && !stage.IsControlFlow()
	return a.syncStatus(ctx, project, stage, enabled, model.WindowStatus(pol.Windows(stage), a.o.Now()))
}

// syncStatus also sets the stage's promotionWindowStatus to windows (nil:
// no window gates it).
func (a *AutoPromoter) syncStatus(ctx context.Context, project string, stage *model.Stage, autoPromotionEnabled bool, windows *model.PromotionWindowStatus) error {
	_, _, err := state.Update(ctx, a.o.Store.KV(state.Stages), state.Key(project, stage.Name), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
		changed := model.SyncStageStatus(stage, &s, autoPromotionEnabled, a.o.Now())
		if !reflect.DeepEqual(s.PromotionWindowStatus, windows) {
			s.PromotionWindowStatus, changed = windows, true
		}
		if !changed {
			return s, state.ErrNoChange
		}
		return s, nil
	})
	return err
}

// WatchStatus syncs a stage's status (SyncStatus) every time another part
// of it changes — a promotion, a verification, a health check — until ctx
// ends. Every stage present at start is synced once.
func (a *AutoPromoter) WatchStatus(ctx context.Context) error {
	changes, _, err := state.Watch[json.RawMessage](ctx, a.o.Store.KV(state.Stages), ">", false)
	if err != nil {
		return err
	}
	for c := range changes {
		if c.Deleted {
			continue
		}
		project, stage, ok := strings.Cut(c.Key, ".")
		if !ok {
			continue
		}
		if err := a.SyncStatus(ctx, state.Untoken(project), state.Untoken(stage)); err != nil && ctx.Err() == nil {
			a.o.Logger.Warn("sync stage status", "project", state.Untoken(project), "stage", state.Untoken(stage), "err", err)
		}
	}
	return nil
}

// ControlFlow syncs the status of every stage of every project and
// evaluates every control-flow stage and the stages just downstream of
// them: the level-triggered pass behind the events that normally keep
// stage status current and move freight through control-flow stages.
// Projects are worked several at once (Options.PassWorkers), each
// project's stages one after another, as in Pass.
func (a *AutoPromoter) ControlFlow(ctx context.Context) error {
	projects, _, err := a.o.Store.ListObjects(ctx, "", model.KindProject, 0, "")
	if err != nil {
		return err
	}
	names := make([]string, 0, len(projects))
	for _, p := range projects {
		names = append(names, p.GetObjectMeta().Name)
	}
	return partition.Projects(ctx, names, a.o.PassWorkers, a.controlFlowProject)
}

// controlFlowProject is ControlFlow for one project.
func (a *AutoPromoter) controlFlowProject(ctx context.Context, project string) error {
	stages, err := a.projectStages(ctx, project)
	if err != nil {
		return err
	}
	var errs []error
	gates := map[string]bool{}
	for _, s := range stages {
		if s.ControlFlow {
			gates[s.Name] = true
		} else if err := a.SyncStatus(ctx, project, s.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if len(gates) == 0 {
		return errors.Join(errs...)
	}
	errs = append(errs, a.Stages(ctx, project, func(s *stageindex.Stage) bool {
		if gates[s.Name] {
			return true
		}
		for _, up := range s.Upstream {
			if gates[up] {
				return true
			}
		}
		return false
	}))
	return errors.Join(errs...)
}
