package verification

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// apply carries a finished verification's outcome out, each part
// idempotent: the stage's verification history, the freight's
// status.verifiedIn, StageVerified (with a deterministic event ID), then
// marks the record applied.
func (m *Manager) apply(ctx context.Context, key string, rec *Record) error {
	stage, _, err := state.GetAs[*model.Stage](ctx, m.store, rec.Project, model.KindStage, rec.Stage)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	if stage != nil && stage.Spec.Verification != nil {
		if err := m.writeHistory(ctx, rec); err != nil {
			return err
		}
	}
	if err := m.qualify(ctx, rec); err != nil {
		return err
	}
	if _, err := m.bus.PublishWithID(ctx, "StageVerified."+rec.Project+"."+rec.Stage+"."+rec.ID, rec.Project,
		events.Ref{Kind: model.KindStage, Name: rec.Stage},
		events.StageVerified{
			Stage: rec.Stage, Freight: rec.Freight[0], Verification: rec.ID,
			Phase: string(rec.Phase), Message: rec.Message, Summary: rec.Summary,
		}); err != nil {
		return err
	}
	_, _, err = state.Update(ctx, m.kv, key, func(r Record, exists bool) (Record, error) {
		if !exists || r.Applied {
			return r, state.ErrNoChange
		}
		r.Applied = true
		return r, nil
	})
	if err == nil {
		rec.Applied = true
		finished := rec.CreatedAt
		if rec.FinishedAt != nil {
			finished = *rec.FinishedAt
		}
		m.applied.Store(key, finished)
	}
	return err
}

// qualify writes the outcome into the freight: Successful adds
// status.verifiedIn[stage]; Failed and Error remove it, so a failed
// re-verification takes back an earlier qualification (Kargo #5144);
// Inconclusive and Aborted leave it as it is.
func (m *Manager) qualify(ctx context.Context, rec *Record) error {
	var verify bool
	switch rec.Phase {
	case analysis.PhaseSuccessful:
		verify = true
	case analysis.PhaseFailed, analysis.PhaseError:
	default:
		return nil
	}
	at := rec.CreatedAt
	if rec.FinishedAt != nil {
		at = *rec.FinishedAt
	}
	for _, name := range rec.Freight {
		changed := false
		f, _, err := state.Update(ctx, m.store.KV(state.Freight), state.Key(rec.Project, name), func(f model.Freight, exists bool) (model.Freight, error) {
			changed = false
			if !exists {
				return f, state.ErrNoChange // collected meanwhile
			}
			_, was := f.Status.VerifiedIn[rec.Stage]
			switch {
			case verify && !was:
				if f.Status.VerifiedIn == nil {
					f.Status.VerifiedIn = map[string]model.VerifiedStage{}
				}
				f.Status.VerifiedIn[rec.Stage] = model.VerifiedStage{VerifiedAt: model.NewTime(at)}
			case !verify && was:
				delete(f.Status.VerifiedIn, rec.Stage)
			default:
				return f, state.ErrNoChange
			}
			changed = true
			return f, nil
		})
		if err != nil {
			return err
		}
		if !changed {
			continue
		}
		change := "verified in " + rec.Stage
		if !verify {
			change = fmt.Sprintf("verification in %s %s", rec.Stage, rec.Phase)
		}
		if _, err := m.bus.PublishWithID(ctx, "FreightUpdated."+rec.Project+"."+name+".verification."+rec.ID, rec.Project,
			events.Ref{Kind: model.KindFreight, Name: name},
			events.FreightUpdated{Freight: name, Alias: f.Alias, Change: change}); err != nil {
			return err
		}
	}
	return nil
}

// writeHistory puts the record's state into the stage's verification
// history: on the freight collection holding the verified freight (newest
// entry first), replacing an earlier state of the same verification,
// keeping HistoryLimit entries. A stage still marked Verifying for this
// collection becomes Steady when the verification ends.
func (m *Manager) writeHistory(ctx context.Context, rec *Record) error {
	info := model.VerificationInfo{
		ID:          rec.ID,
		Actor:       rec.Actor,
		Phase:       model.VerificationPhase(rec.Phase),
		Message:     rec.Message,
		AnalysisRun: &model.AnalysisRunReference{Namespace: rec.Project, Name: rec.ID, Phase: string(rec.Phase)},
	}
	if info.Phase == model.VerificationPhase(analysis.PhasePending) {
		info.Phase = model.VerificationPhasePending
	}
	if rec.StartedAt != nil {
		info.StartTime = model.NewTime(*rec.StartedAt)
	} else {
		info.StartTime = model.NewTime(rec.CreatedAt)
	}
	if rec.FinishedAt != nil {
		info.FinishTime = model.NewTime(*rec.FinishedAt)
	}
	_, _, err := state.Update(ctx, m.store.KV(state.Stages), state.Key(rec.Project, rec.Stage), func(s model.StageStatus, exists bool) (model.StageStatus, error) {
		if !exists {
			return s, state.ErrNoChange
		}
		i := slices.IndexFunc(s.FreightHistory, func(c model.FreightCollection) bool {
			for _, ref := range c.Freight {
				if ref.Name == rec.Freight[0] {
					return true
				}
			}
			return false
		})
		if i < 0 {
			return s, state.ErrNoChange
		}
		// Copy what changes: Update may call this function again.
		history := slices.Clone(s.FreightHistory)
		col := history[i]
		if j := slices.IndexFunc(col.VerificationHistory, func(v model.VerificationInfo) bool { return v.ID == info.ID }); j >= 0 {
			old := col.VerificationHistory[j]
			if old.Phase == info.Phase && old.Message == info.Message {
				return s, state.ErrNoChange
			}
			if old.Phase.IsTerminal() {
				return s, state.ErrNoChange // never step back from an outcome
			}
		}
		entries := []model.VerificationInfo{info}
		for _, v := range col.VerificationHistory {
			if v.ID != info.ID {
				entries = append(entries, v)
			}
		}
		if len(entries) > HistoryLimit {
			entries = entries[:HistoryLimit]
		}
		col.VerificationHistory = entries
		history[i] = col
		s.FreightHistory = history
		if i == 0 && info.Phase.IsTerminal() && s.Phase == model.StagePhaseVerifying {
			s.Phase = model.StagePhaseSteady
		}
		return s, nil
	})
	return err
}
