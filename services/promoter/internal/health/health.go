// Package health keeps stages' health: after a promotion succeeds and then
// periodically, it evaluates the health checks the stage's last promotion
// registered, writes the verdict into the stage status and publishes
// StageHealthChanged when it changes. A stage whose promotion registered no
// checks is Healthy.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Checker evaluates health checks (the step engine).
type Checker interface {
	Health(ctx context.Context, project string, checks []model.HealthCheckStep) model.Health
}

// Keeper evaluates and records stage health.
type Keeper struct {
	store   *state.Store
	bus     *events.Bus
	checker Checker
	log     *slog.Logger
}

// New returns a Keeper.
func New(store *state.Store, bus *events.Bus, checker Checker, log *slog.Logger) *Keeper {
	return &Keeper{store: store, bus: bus, checker: checker, log: log}
}

// Promoted assesses a stage right after p succeeded on it, before
// PromotionSucceeded is published, and publishes StageHealthChanged even
// when the verdict equals the previous one: it is the first verdict on the
// new freight, which the verifier waits for.
func (k *Keeper) Promoted(ctx context.Context, project, stage string, p *model.Promotion) {
	if err := k.assess(ctx, project, stage, p.Name, p.Status.HealthChecks, true); err != nil && ctx.Err() == nil {
		k.log.Warn("stage health", "project", project, "stage", stage, "err", err)
	}
}

// CheckAll re-assesses every stage whose last successful promotion
// registered health checks (stages promoting now are left alone).
func (k *Keeper) CheckAll(ctx context.Context) error {
	items, _, err := state.List[model.StageStatus](ctx, k.store.KV(state.Stages), ">", 0, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, it := range items {
		s := it.Value
		last := s.LastPromotion
		if s.CurrentPromotion != nil || last == nil || last.Status == nil || last.Status.Phase != model.PromotionPhaseSucceeded {
			continue
		}
		project, stage, ok := strings.Cut(it.Key, ".")
		if !ok {
			continue
		}
		project, stage = state.Untoken(project), state.Untoken(stage)
		p, _, err := state.Get[model.Promotion](ctx, k.store.KV(state.Promotions), state.Key(project, last.Name))
		if errors.Is(err, state.ErrNotFound) || (err == nil && len(p.Status.HealthChecks) == 0) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := k.assess(ctx, project, stage, p.Name, p.Status.HealthChecks, false); err != nil {
			errs = append(errs, fmt.Errorf("stage %s/%s: %w", project, stage, err))
		}
	}
	return errors.Join(errs...)
}

func (k *Keeper) assess(ctx context.Context, project, stage, promotion string, checks []model.HealthCheckStep, fresh bool) error {
	h := model.Health{Status: model.HealthStateHealthy}
	if len(checks) > 0 {
		h = k.checker.Health(ctx, project, checks)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var prev model.HealthState
	changed := false
	_, _, err := state.Update(ctx, k.store.KV(state.Stages), state.Key(project, stage), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
		prev, changed = "", false
		if s.LastPromotion == nil || s.LastPromotion.Name != promotion {
			return s, state.ErrNoChange // promoted again meanwhile
		}
		if s.Health != nil {
			prev = s.Health.Status
			if prev == h.Status && slices.Equal(s.Health.Issues, h.Issues) {
				return s, state.ErrNoChange
			}
		}
		changed = prev != h.Status
		s.Health = &h
		return s, nil
	})
	// The first verdict on a stage is announced by the assessment that
	// follows its promotion (fresh), even when a periodic check got there
	// first: one event, not two.
	if err != nil || (!changed && !fresh) || (!fresh && prev == "") {
		return err
	}
	ev := events.StageHealthChanged{Stage: stage, Health: string(h.Status), Previous: string(prev), Message: strings.Join(h.Issues, "; ")}
	ref := events.Ref{Kind: model.KindStage, Name: stage}
	if fresh {
		// Once per promotion, even from two replicas.
		_, err = k.bus.PublishWithID(ctx, "StageHealthChanged."+project+"."+promotion, project, ref, ev)
	} else {
		_, err = k.bus.Publish(ctx, project, ref, ev)
	}
	return err
}
