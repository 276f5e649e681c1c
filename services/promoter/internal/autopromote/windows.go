package autopromote

import (
	"context"
	"time"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

const windowPrefix = "window."

// windowWaitRecord is the closure a stage's auto-promotion last waited
// for, so that each closure is audited once.
type windowWaitRecord struct {
	Reason   string     `json:"reason"`
	NextOpen *time.Time `json:"nextOpen,omitempty"`
}

// windowWait holds auto-promotion of a stage while promotion windows are
// closed: nothing is promoted, and the stage is evaluated again when they
// open (a wake-up, and every reconcile pass besides). The wait is audited
// once per closure.
func (a *AutoPromoter) windowWait(ctx context.Context, project string, stage *model.Stage, ws *model.PromotionWindowStatus) error {
	rec := windowWaitRecord{Reason: ws.Reason}
	if ws.NextOpen != nil {
		t := ws.NextOpen.UTC()
		rec.NextOpen = &t
	}
	changed := false
	_, _, err := state.Update(ctx, a.kv, windowPrefix+state.Key(project, stage.Name), func(cur windowWaitRecord, exists bool) (windowWaitRecord, error) {
		changed = false
		if exists && cur.Reason == rec.Reason && (cur.NextOpen == nil) == (rec.NextOpen == nil) && (cur.NextOpen == nil || cur.NextOpen.Equal(*rec.NextOpen)) {
			return cur, state.ErrNoChange
		}
		changed = true
		return rec, nil
	})
	switch {
	case err != nil:
		return err
	case changed:
		reason := ws.Reason
		if rec.NextOpen != nil {
			reason += "; opens at " + rec.NextOpen.Format(time.RFC3339)
		}
		a.o.Logger.Info("auto-promotion waits for a promotion window", "project", project, "stage", stage.Name, "reason", reason)
		a.audit(ctx, audit.Record{Project: project, Action: audit.ActionWindowWait, Object: "Stage/" + stage.Name, Reason: reason})
	}
	if rec.NextOpen != nil {
		return a.wakeAt(ctx, project, stage.Name, *rec.NextOpen)
	}
	return nil
}
