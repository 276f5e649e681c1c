// Package policy decides whether a queued promotion may start now:
// promotion windows (Kargo's ProjectConfig and ClusterConfig
// promotionWindows) and approval policies (a Caravan addition). The
// dispatcher asks before it starts each promotion, so the decision is
// re-derived from stored state every time a stage's queue is worked —
// at every reconcile pass too — never from an event alone.
package policy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Gate checks promotions against the policies of their project.
type Gate struct {
	store *state.Store
	now   func() time.Time
}

// New returns a Gate reading store; now is the clock (nil: time.Now).
func New(store *state.Store, now func() time.Time) *Gate {
	if now == nil {
		now = time.Now
	}
	return &Gate{store: store, now: now}
}

// Admit says whether p may start on stage now. When it may not, blocked
// says why and retry, when not zero, is when the answer may change on its
// own (a window opens). The promotion's message is set to blocked so that
// people see why it waits.
func (g *Gate) Admit(ctx context.Context, project string, stage *model.Stage, p *model.Promotion) (blocked string, retry time.Time, err error) {
	pol, err := state.LoadPolicies(ctx, g.store, project)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("load the policies of project %s: %w", project, err)
	}
	now := g.now()
	blocked, retry = Check(pol, stage, p, now)
	if blocked != "" && p.Status.Message != blocked {
		_, _, err = state.Update(ctx, g.store.KV(state.Promotions), state.Key(project, p.Name), func(cur model.Promotion, exists bool) (model.Promotion, error) {
			if !exists || cur.Status.Phase.IsTerminal() || cur.Status.Phase == model.PromotionPhaseRunning || cur.Status.Message == blocked {
				return cur, state.ErrNoChange
			}
			cur.Status.Message = blocked
			return cur, nil
		})
		if err != nil && !errors.Is(err, state.ErrNoChange) {
			return blocked, retry, err
		}
	}
	return blocked, retry, nil
}

// Check is Admit's decision, without I/O.
func Check(pol state.Policies, stage *model.Stage, p *model.Promotion, now time.Time) (blocked string, retry time.Time) {
	if ws := model.WindowStatus(pol.Windows(stage), now); ws != nil && ws.Closed && p.Annotations[model.AnnotationWindowOverride] == "" {
		msg := "waiting for a promotion window: " + ws.Reason
		if ws.NextOpen != nil {
			retry = ws.NextOpen.Time
			msg += "; opens at " + ws.NextOpen.UTC().Format(time.RFC3339)
		}
		return msg, retry
	}
	if ap := pol.Approval(stage); ap != nil {
		if st := model.Approval(ap, p, now); !st.Approved() {
			return ApprovalMessage(st), time.Time{}
		}
	}
	return "", time.Time{}
}

// ApprovalMessage says what a promotion still needs.
func ApprovalMessage(st model.ApprovalState) string {
	msg := fmt.Sprintf("waiting for %d more approval(s) of %d", st.Missing, st.Required)
	if len(st.Groups) > 0 {
		msg += fmt.Sprintf(" from %v", st.Groups)
	}
	return msg
}
