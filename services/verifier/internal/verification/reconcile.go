package verification

import (
	"context"
	"errors"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Reconcile is one pass over every stage: a stage whose last promotion
// succeeded and was announced, but whose freight was never verified there
// (the stage's verification history of its current freight is empty, or,
// for a stage without verification, the freight is not verified in it)
// and that has no verification record of that promotion, gets its
// verification started, as PromotionSucceeded would have started it. So a
// lost PromotionSucceeded costs at most one CARAVAN_RECONCILE_INTERVAL.
// Records whose owner went away are claimed by the scan. Every replica
// runs it; Begin is idempotent.
func (m *Manager) Reconcile(ctx context.Context) error {
	items, _, err := state.List[model.StageStatus](ctx, m.store.KV(state.Stages), ">", 0, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, it := range items {
		project, stage, ok := strings.Cut(it.Key, ".")
		if !ok {
			continue
		}
		project, stage = state.Untoken(project), state.Untoken(stage)
		if err := m.reconcileStage(ctx, project, stage, &it.Value); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) reconcileStage(ctx context.Context, project, stageName string, status *model.StageStatus) error {
	last := status.LastPromotion
	if last == nil || last.Status == nil || last.Status.Phase != model.PromotionPhaseSucceeded || last.Freight == nil || len(status.FreightHistory) == 0 {
		return nil
	}
	// Only once the promotion was announced: the promoter writes the
	// stage's first health verdict before, and the verifier waits on it.
	p, _, err := state.Get[model.Promotion](ctx, m.store.KV(state.Promotions), state.Key(project, last.Name))
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if p.Annotations[model.AnnotationPromotionAnnounced] == "" {
		return nil
	}
	stage, _, err := state.GetAs[*model.Stage](ctx, m.store, project, model.KindStage, stageName)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if stage.Spec.Verification != nil {
		if len(status.FreightHistory[0].VerificationHistory) > 0 {
			return nil
		}
	} else {
		f, _, err := state.Get[model.Freight](ctx, m.store.KV(state.Freight), state.Key(project, last.Freight.Name))
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, ok := f.Status.VerifiedIn[stageName]; ok {
			return nil
		}
	}
	if _, _, err := state.Get[Record](ctx, m.kv, Key(project, stageName, last.Name)); err == nil || !errors.Is(err, state.ErrNotFound) {
		return err // recorded: the scan claims it if its owner went away
	}
	m.log.Info("starting a verification nobody started", "project", project, "stage", stageName, "promotion", last.Name)
	return m.Begin(ctx, project, stageName, last.Name, last.Name, last.Freight.Name, ActorAuto)
}
