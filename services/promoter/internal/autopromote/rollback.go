package autopromote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// RolledBackBy is the created-by annotation of rollback promotions.
const RolledBackBy = model.CreatedByAutoRollback

const rollbackPrefix = "rollback."

// rollbackDecision records that a failure was rolled back (or could not
// be), so it is acted on once however often the stage is evaluated.
type rollbackDecision struct {
	Trigger   string    `json:"trigger"`
	Promotion string    `json:"promotion,omitempty"`
	Freight   string    `json:"freight,omitempty"`
	Reason    string    `json:"reason"`
	At        time.Time `json:"at"`
	// Bad is the freight that failed.
	Bad string `json:"bad,omitempty"`
	// Requested: the rollback promotion is stored and requested.
	Requested bool `json:"requested,omitempty"`
}

func rollbackKey(project, stage, trigger string) string {
	sum := sha256.Sum256([]byte(trigger))
	return rollbackPrefix + state.Key(project, stage, fmt.Sprintf("%x", sum[:8]))
}

// rollback rolls stage back once per failure its auto-rollback policy
// lists: to the newest freight it held and verified before, by a
// Promotion marked as a rollback, and holds auto-promotion of the origin
// until a person resumes it. Everything it needs is read from the stored
// state, so it is re-derived at every evaluation.
func (a *AutoPromoter) rollback(ctx context.Context, project string, stage *model.Stage, rb *model.AutoRollback) error {
	if rb == nil || stage.IsControlFlow() {
		return nil
	}
	status, _, err := state.Get[model.StageStatus](ctx, a.o.Store.KV(state.Stages), state.Key(project, stage.Name))
	if errors.Is(err, state.ErrNotFound) || status.LastPromotion == nil || status.CurrentPromotion != nil {
		return nil
	}
	if err != nil {
		return err
	}
	last, _, err := state.GetAs[*model.Promotion](ctx, a.o.Store, project, model.KindPromotion, status.LastPromotion.Name)
	if errors.Is(err, state.ErrNotFound) {
		return nil // collected: too old to act on
	}
	if err != nil {
		return err
	}
	trig := model.RollbackTriggerOf(rb, &status, last.Spec.Freight, last.Annotations[model.AnnotationRollback] != "")
	if trig == nil {
		return nil
	}
	key := rollbackKey(project, stage.Name, trig.ID)
	dec, _, err := state.Get[rollbackDecision](ctx, a.kv, key)
	switch {
	case err == nil && (dec.Requested || dec.Promotion == ""):
		return nil // acted on before
	case err == nil:
		// Decided, not yet requested (a crash in between): go on.
	case !errors.Is(err, state.ErrNotFound):
		return err
	default:
		if dec, err = a.decideRollback(ctx, project, stage, &status, trig, key); err != nil || dec.Promotion == "" {
			return err
		}
	}
	return a.requestRollback(ctx, project, stage, key, dec)
}

// decideRollback records what to do about trig: roll back to the newest
// earlier verified freight, or nothing when there is none.
func (a *AutoPromoter) decideRollback(ctx context.Context, project string, stage *model.Stage, st *model.StageStatus, trig *model.RollbackTrigger, key string) (rollbackDecision, error) {
	names := []string{trig.Freight}
	for _, c := range st.FreightHistory {
		for _, ref := range c.Freight {
			names = append(names, ref.Name)
		}
	}
	byName, err := a.freightNamed(ctx, project, names)
	if err != nil {
		return rollbackDecision{}, err
	}
	dec := rollbackDecision{Trigger: trig.ID, Reason: trig.Reason, At: a.o.Now().UTC(), Bad: trig.Freight}
	bad := byName[trig.Freight]
	var target *model.Freight
	if bad != nil {
		target = model.RollbackTarget(st, stage.Name, bad, byName)
	}
	if target == nil {
		dec.Reason += ": no earlier verified freight to roll back to"
	} else {
		dec.Promotion, dec.Freight = rollbackName(project, stage.Name, trig.ID, target, dec.At), target.Name
	}
	if _, err := state.Create(ctx, a.kv, key, dec); errors.Is(err, state.ErrExists) {
		return rollbackDecision{}, nil // another replica decided
	} else if err != nil {
		return rollbackDecision{}, fmt.Errorf("record rollback of %s: %w", stage.Name, err)
	}
	if target == nil {
		a.o.Logger.Warn("auto-rollback: nothing to roll back to", "project", project, "stage", stage.Name, "reason", trig.Reason)
		a.audit(ctx, audit.Record{ID: "rollback." + key, Project: project, Action: audit.ActionRollback, Object: "Stage/" + stage.Name, Reason: dec.Reason})
	}
	return dec, nil
}

// requestRollback stores and requests the rollback promotion dec decided,
// holds auto-promotion of the origin and marks the decision requested.
func (a *AutoPromoter) requestRollback(ctx context.Context, project string, stage *model.Stage, key string, dec rollbackDecision) error {
	target, _, err := a.findFreight(ctx, project, dec.Freight)
	if err != nil {
		return err
	}
	name := dec.Promotion
	id := name[len(stage.Name)+1 : len(stage.Name)+1+ulid.EncodedSize]
	p := model.NewPromotion(stage, target, id, RolledBackBy, dec.At)
	p.Name = name
	if p.Namespace == "" {
		p.Namespace = project
	}
	p.Annotations[model.AnnotationRollback] = dec.Reason
	if _, err := a.o.Store.PutObject(ctx, p, 0); err != nil && !errors.Is(err, state.ErrExists) {
		return fmt.Errorf("create rollback %s: %w", name, err)
	}
	// Auto-promotion of the origin waits for a person (resume).
	if _, _, err := state.Update(ctx, a.o.Store.KV(state.Stages), state.Key(project, stage.Name), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
		s.Hold(model.AutoPromotionHold{Origin: target.Origin, FreightName: target.Name, PromotionName: name, Actor: RolledBackBy,
			CreatedAt: model.NewTime(dec.At), Reason: "auto-rollback after " + dec.Reason})
		return s, nil
	}); err != nil {
		return err
	}
	a.o.Logger.Info("auto-rollback", "project", project, "stage", stage.Name, "from", dec.Bad, "to", target.Name, "promotion", name, "reason", dec.Reason)
	a.audit(ctx, audit.Record{ID: "rollback." + name, Project: project, Action: audit.ActionRollback, Object: "Promotion/" + name,
		Reason: fmt.Sprintf("%s: back to freight %s", dec.Reason, target.Name)})
	if _, err := a.o.Bus.PublishWithID(ctx, "PromotionRequested."+project+"."+name, project,
		events.Ref{Kind: model.KindPromotion, Name: name},
		events.PromotionRequested{Promotion: name, Stage: stage.Name, Freight: target.Name}); err != nil {
		// Stored: the dispatcher's reconciler queues it anyway.
		a.o.Logger.Warn("request rollback", "project", project, "promotion", name, "err", err)
	}
	_, _, err = state.Update(ctx, a.kv, key, func(d rollbackDecision, exists bool) (rollbackDecision, error) {
		if !exists || d.Requested {
			return d, state.ErrNoChange
		}
		d.Requested = true
		return d, nil
	})
	return err
}

func (a *AutoPromoter) findFreight(ctx context.Context, project, name string) (*model.Freight, uint64, error) {
	return state.GetAs[*model.Freight](ctx, a.o.Store, project, model.KindFreight, name)
}

// rollbackName names the rollback of trigger deterministically.
func rollbackName(project, stage, trigger string, f *model.Freight, at time.Time) string {
	sum := sha256.Sum256([]byte(project + "\x00" + stage + "\x00rollback\x00" + trigger))
	id, err := ulid.New(ulid.Timestamp(at), bytes.NewReader(sum[:]))
	if err != nil {
		id = ulid.ULID{}
	}
	return model.PromotionName(stage, id.String(), f.Name)
}

// audit appends a record of an automatic decision, if there is a log.
func (a *AutoPromoter) audit(ctx context.Context, r audit.Record) {
	if a.o.Audit == nil {
		return
	}
	r.Actor, r.Automatic = "system:promoter", true
	if err := a.o.Audit.Append(ctx, r); err != nil {
		a.o.Logger.Warn("append audit record", "action", r.Action, "err", err)
	}
}
