package autopromote

import (
	"context"
	"fmt"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// ControlFlowVerification is the verification ID a control-flow stage's
// StageVerified carries.
const ControlFlowVerification = "control-flow"

// passControlFlow does for a control-flow stage (no promotion steps) what
// Kargo's control-flow reconciler does: the freight available to it —
// under its availabilityStrategy (All, OneOf) and required soak — is
// verified in it at once, which makes it available downstream. Each
// freight newly passed is announced by FreightUpdated and by a
// StageVerified that wakes the stages downstream (whose evaluation may
// pass it further, through another control-flow stage). Freight still
// soaking upstream gets a wake-up at the moment it becomes available.
func (a *AutoPromoter) passControlFlow(ctx context.Context, project string, stage *model.Stage) error {
	now := a.o.Now()
	freight, err := a.freightFor(ctx, project, stage, now)
	if err != nil {
		return err
	}
	for _, f := range model.ControlFlowFreight(freight, stage, now) {
		if err := a.pass(ctx, project, stage.Name, f.Name, now); err != nil {
			return err
		}
	}
	var wake time.Time
	for _, req := range stage.Spec.RequestedFreight {
		if at, ok := model.NextSoakDeadline(freight, stage, req.Origin, nil, now); ok && (wake.IsZero() || at.Before(wake)) {
			wake = at
		}
	}
	if !wake.IsZero() {
		return a.wakeAt(ctx, project, stage.Name, wake)
	}
	return nil
}

// pass marks one freight verified in a control-flow stage and announces
// it; the events carry deterministic IDs, so a repeat is dropped.
func (a *AutoPromoter) pass(ctx context.Context, project, stage, name string, now time.Time) error {
	f, _, err := state.Update(ctx, a.o.Store.KV(state.Freight), state.Key(project, name), func(f model.Freight, exists bool) (model.Freight, error) {
		if !exists || !f.MarkVerified(stage, now) {
			return f, state.ErrNoChange
		}
		return f, nil
	})
	if err != nil {
		return fmt.Errorf("pass freight %s through %s: %w", name, stage, err)
	}
	a.o.Logger.Info("control-flow stage passed freight", "project", project, "stage", stage, "freight", name)
	id := project + "." + stage + "." + name
	if _, err := a.o.Bus.PublishWithID(ctx, "FreightUpdated."+id+".control-flow", project, events.Ref{Kind: model.KindFreight, Name: name},
		events.FreightUpdated{Freight: name, Alias: f.Alias, Change: "verified in " + stage}); err != nil {
		return err
	}
	_, err = a.o.Bus.PublishWithID(ctx, "StageVerified."+id+".control-flow", project, events.Ref{Kind: model.KindStage, Name: stage},
		events.StageVerified{Stage: stage, Freight: name, Verification: ControlFlowVerification, Phase: string(model.VerificationPhaseSuccessful),
			Message: "passed by a control-flow stage"})
	return err
}
