package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/queue"
)

// next returns the promotion the holder runs next — the running one to
// resume, else the oldest pending one — after dropping promotions that
// ended while queued and, on a superseding stage, pending promotions older
// than the newest. It returns nil after releasing the lease when the queue
// is empty or the stage is verifying.
func (d *Dispatcher) next(ctx context.Context, project, stageName string, g lease.Grant) (*queue.Entry, *model.Stage, error) {
	for {
		r, err := queue.Get(ctx, d.kv, project, stageName)
		if err != nil {
			return nil, nil, err
		}
		if err := r.Check(g); err != nil {
			return nil, nil, err
		}
		stage, _, err := state.GetAs[*model.Stage](ctx, d.o.Store, project, model.KindStage, stageName)
		if errors.Is(err, state.ErrNotFound) {
			stage = nil
		} else if err != nil {
			return nil, nil, err
		}
		if r.Running != nil {
			if stage == nil {
				stage = &model.Stage{ObjectMeta: model.ObjectMeta{Name: stageName, Namespace: project}}
			}
			return r.Running, stage, nil
		}
		if len(r.Pending) == 0 {
			_, err := queue.Update(ctx, d.kv, project, stageName, func(r *queue.Record, _ bool) error {
				if err := r.Check(g); err != nil {
					return err
				}
				if r.Active() {
					return errRetry
				}
				r.Release(g)
				return nil
			})
			if errors.Is(err, errRetry) {
				continue
			}
			return nil, nil, err
		}
		if stage == nil {
			for _, e := range r.Pending {
				if err := d.endPending(ctx, project, stageName, e.Name, model.PromotionPhaseErrored, fmt.Sprintf("stage %q not found", stageName)); err != nil {
					return nil, nil, err
				}
			}
			continue
		}
		if stage.Annotations[model.AnnotationSupersede] == "true" && len(r.Pending) > 1 {
			newest := r.Pending[len(r.Pending)-1].Name
			for _, e := range r.Pending[:len(r.Pending)-1] {
				if err := d.endPending(ctx, project, stageName, e.Name, model.PromotionPhaseAborted, "superseded by "+newest); err != nil {
					return nil, nil, err
				}
			}
			continue
		}
		head := r.Pending[0]
		p, _, err := state.Get[model.Promotion](ctx, d.o.Store.KV(state.Promotions), state.Key(project, head.Name))
		if errors.Is(err, state.ErrNotFound) || (err == nil && p.Status.Phase.IsTerminal()) {
			if err := d.dropEntry(ctx, project, stageName, head.Name); err != nil {
				return nil, nil, err
			}
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if AbortRequested(&p) {
			// Asked to abort while it waited (the request may have been
			// lost on its way): it never starts.
			if err := d.endPending(ctx, project, stageName, head.Name, model.PromotionPhaseAborted, "aborted by request"); err != nil {
				return nil, nil, err
			}
			continue
		}
		status, _, err := state.Get[model.StageStatus](ctx, d.o.Store.KV(state.Stages), state.Key(project, stageName))
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return nil, nil, err
		}
		verifying := model.IsVerifying(stage, &status)
		blocked := ""
		if !verifying && d.o.Gate != nil {
			var retry time.Time
			if blocked, retry, err = d.o.Gate.Admit(ctx, project, stage, &p); err != nil {
				return nil, nil, err
			}
			d.gateTimer(project, stageName, retry)
		}
		_, err = queue.Update(ctx, d.kv, project, stageName, func(cur *queue.Record, _ bool) error {
			if err := cur.Check(g); err != nil {
				return err
			}
			switch {
			case len(cur.Pending) == 0 || cur.Pending[0].Name != head.Name || cur.Running != nil:
				return errRetry
			case verifying && cur.Nudge != r.Nudge:
				return errRetry // a verification ended while we looked
			case verifying:
				cur.Blocked = "stage is verifying its current freight"
				cur.Release(g)
				return nil
			case blocked != "" && cur.Nudge != r.Nudge:
				return errRetry
			case blocked != "":
				cur.Blocked = blocked
				cur.Release(g)
				return nil
			}
			cur.Running = &cur.Pending[0]
			cur.Pending = cur.Pending[1:]
			cur.Blocked = ""
			return nil
		})
		switch {
		case errors.Is(err, errRetry):
			continue
		case err != nil:
			return nil, nil, err
		case verifying:
			d.o.Logger.Debug("stage verifying, promotion waits", "project", project, "stage", stageName, "promotion", head.Name)
			return nil, nil, nil
		case blocked != "":
			d.o.Logger.Debug("promotion waits", "project", project, "stage", stageName, "promotion", head.Name, "reason", blocked)
			return nil, nil, nil
		}
		return &head, stage, nil
	}
}

// gateTimer unblocks the stage at retry (none when zero), replacing the
// stage's earlier timer.
func (d *Dispatcher) gateTimer(project, stage string, retry time.Time) {
	key := queue.Key(project, stage)
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.gates[key]; t != nil {
		t.Stop()
		delete(d.gates, key)
	}
	if retry.IsZero() || d.closing || d.life == nil {
		return
	}
	life := d.life
	d.gates[key] = time.AfterFunc(time.Until(retry), func() {
		if err := d.Unblock(life, project, stage); err != nil && life.Err() == nil {
			d.o.Logger.Warn("unblock stage at its window's opening", "project", project, "stage", stage, "err", err)
		}
	})
}

// dropEntry removes a promotion from the queue record.
func (d *Dispatcher) dropEntry(ctx context.Context, project, stage, name string) error {
	_, err := queue.Update(ctx, d.kv, project, stage, func(r *queue.Record, _ bool) error {
		if !r.Remove(name) {
			return state.ErrNoChange
		}
		return nil
	})
	return err
}

// endPending ends a pending promotion without running it (aborted,
// superseded, its stage gone) and drops it from the queue.
func (d *Dispatcher) endPending(ctx context.Context, project, stage, name string, phase model.PromotionPhase, msg string) error {
	p, ended, err := d.endIfPending(ctx, project, name, phase, msg)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	if ended {
		if err := d.publishFinished(ctx, project, p); err != nil {
			return err
		}
	}
	return d.dropEntry(ctx, project, stage, name)
}

// endIfPending sets a Pending promotion's terminal phase; ended is false
// when it was not Pending. A pending promotion ran no step: no lease
// fences it (a holder starting it compares and sets Pending to Running).
func (d *Dispatcher) endIfPending(ctx context.Context, project, name string, phase model.PromotionPhase, msg string) (*model.Promotion, bool, error) {
	ended := false
	p, _, err := state.Update(ctx, d.o.Store.KV(state.Promotions), state.Key(project, name), func(cur model.Promotion, exists bool) (model.Promotion, error) {
		ended = false
		if !exists {
			return cur, state.ErrNotFound
		}
		if cur.Status.Phase != model.PromotionPhasePending && cur.Status.Phase != "" {
			return cur, state.ErrNoChange
		}
		ended = true
		cur.Status.Phase, cur.Status.Message, cur.Status.FinishedAt = phase, msg, model.NewTime(d.o.Now().UTC())
		return cur, nil
	})
	return &p, ended, err
}

// AnnotationAbort on a Promotion asks to abort it (model.AnnotationAbort):
// set by the abort route, read by the holder at every step boundary and by
// Reconcile, so an abort whose event is lost still happens.
const AnnotationAbort = model.AnnotationAbort

// AnnotationAnnounced marks a finished Promotion whose outcome event was
// published (model.AnnotationPromotionAnnounced).
const AnnotationAnnounced = model.AnnotationPromotionAnnounced

// AbortRequested reports whether someone asked to abort p.
func AbortRequested(p *model.Promotion) bool { return p.Annotations[AnnotationAbort] != "" }

// Abort aborts a promotion: a pending one at once; a running one by
// marking it (AnnotationAbort) and flagging it in its stage's queue
// record, which makes the replica running it cancel the running step's
// context with the abort cause and stop at the next step boundary.
func (d *Dispatcher) Abort(ctx context.Context, project, stage, name string) error {
	p, ended, err := d.endIfPending(ctx, project, name, model.PromotionPhaseAborted, "aborted by request")
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if stage == "" {
		stage = p.Spec.Stage
	}
	if ended {
		if err := d.publishFinished(ctx, project, p); err != nil {
			return err
		}
		return d.dropEntry(ctx, project, stage, name)
	}
	if p.Status.Phase.IsTerminal() {
		return nil
	}
	if err := MarkAbort(ctx, d.o.Store, project, name, "aborted by request"); err != nil {
		return err
	}
	_, err = queue.Update(ctx, d.kv, project, stage, func(r *queue.Record, _ bool) error {
		if r.Running == nil || r.Running.Name != name || r.AbortRequested(name) {
			return state.ErrNoChange
		}
		r.Abort = append(r.Abort, name)
		return nil
	})
	d.cancelRun(project, name)
	return err
}

// MarkAbort sets AnnotationAbort on a promotion that has not ended.
func MarkAbort(ctx context.Context, store *state.Store, project, name, why string) error {
	_, _, err := state.Update(ctx, store.KV(state.Promotions), state.Key(project, name), func(p model.Promotion, exists bool) (model.Promotion, error) {
		if !exists || p.Status.Phase.IsTerminal() || AbortRequested(&p) {
			return p, state.ErrNoChange
		}
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[AnnotationAbort] = why
		return p, nil
	})
	return err
}

// cancelRun cancels a promotion running on this replica with the abort
// cause.
func (d *Dispatcher) cancelRun(project, name string) {
	d.mu.Lock()
	cancel := d.runs[project+"/"+name]
	d.mu.Unlock()
	if cancel != nil {
		cancel(d.o.AbortCause)
	}
}

// publishFinished publishes PromotionSucceeded or PromotionFailed for a
// promotion in a terminal phase, with a deterministic event ID, then marks
// it announced. An error leaves it unmarked: the caller retries, and
// Reconcile publishes what is left unmarked.
func (d *Dispatcher) publishFinished(ctx context.Context, project string, p *model.Promotion) error {
	// A finished promotion is announced even when the caller's ctx ends
	// now: the stage's next step depends on it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	ref := events.Ref{Kind: model.KindPromotion, Name: p.Name}
	var err error
	if p.Status.Phase == model.PromotionPhaseSucceeded {
		_, err = d.o.Bus.PublishWithID(ctx, "PromotionSucceeded."+project+"."+p.Name, project, ref,
			events.PromotionSucceeded{Promotion: p.Name, Stage: p.Spec.Stage, Freight: p.Spec.Freight})
	} else {
		_, err = d.o.Bus.PublishWithID(ctx, "PromotionFailed."+project+"."+p.Name, project, ref,
			events.PromotionFailed{Promotion: p.Name, Stage: p.Spec.Stage, Freight: p.Spec.Freight, Phase: string(p.Status.Phase), Message: p.Status.Message})
	}
	if err != nil {
		return fmt.Errorf("publish outcome of promotion %s: %w", p.Name, err)
	}
	_, _, err = state.Update(ctx, d.o.Store.KV(state.Promotions), state.Key(project, p.Name), func(cur model.Promotion, exists bool) (model.Promotion, error) {
		if !exists || !cur.Status.Phase.IsTerminal() || cur.Annotations[AnnotationAnnounced] != "" {
			return cur, state.ErrNoChange
		}
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[AnnotationAnnounced] = "true"
		return cur, nil
	})
	if err != nil {
		return fmt.Errorf("mark promotion %s announced: %w", p.Name, err)
	}
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[AnnotationAnnounced] = "true"
	return nil
}

func stepTerminal(s model.PromotionStepStatus) bool {
	switch s {
	case model.PromotionStepStatusSucceeded, model.PromotionStepStatusFailed, model.PromotionStepStatusErrored,
		model.PromotionStepStatusSkipped, model.PromotionStepStatusAborted:
		return true
	}
	return false
}

func stepStatuses(p *model.Promotion) []model.PromotionStepStatus {
	out := make([]model.PromotionStepStatus, len(p.Status.StepExecutionMetadata))
	for i, m := range p.Status.StepExecutionMetadata {
		out[i] = m.Status
	}
	return out
}

// errAbortSeen: the stored promotion asks to abort; the run is canceled.
var errAbortSeen = errors.New("promotion asked to abort")

// saver returns the save function handed to the runner. Each save is a
// fenced write of the promotion's status: only under the current stage
// lease (its token at least the stored Fence), and only while the grant
// has not run out locally. The engine saves a step as Running before it
// runs it, so a step's effects (a push, a pull request, an http call)
// follow a successful fenced write of "about to run step N". A save that
// finds the promotion asked to abort (AnnotationAbort) cancels the run and,
// when it would start or continue a step, is refused: the engine stops at
// that step boundary. It publishes PromotionStepFinished for each step
// that finished since the last save.
func (d *Dispatcher) saver(lctx context.Context, cancel context.CancelCauseFunc, project string, p *model.Promotion, hold *holding) func(context.Context, *model.Promotion) error {
	prev := stepStatuses(p)
	return func(ctx context.Context, p *model.Promotion) error {
		if lctx.Err() != nil {
			return context.Cause(lctx)
		}
		g := hold.get()
		if !g.Valid(d.o.Now(), 0) {
			return queue.ErrNotHolder
		}
		running := slices.Contains(stepStatuses(p), model.PromotionStepStatusRunning)
		aborted := false
		stored, _, err := state.Update(ctx, d.o.Store.KV(state.Promotions), state.Key(project, p.Name), func(cur model.Promotion, exists bool) (model.Promotion, error) {
			aborted = false
			if !exists {
				return cur, state.ErrNotFound
			}
			if AbortRequested(&cur) && running {
				aborted = true
				return cur, state.ErrNoChange
			}
			next := cur // keep metadata others write (the abort annotation)
			next.Spec = p.Spec
			next.Status = p.Status
			next.Status.Fence = cur.Status.Fence
			if err := lease.Admit(&next.Status.Fence, g); err != nil {
				return cur, err
			}
			return next, nil
		})
		if err != nil {
			return err
		}
		p.Status.Fence = stored.Status.Fence
		if AbortRequested(&stored) {
			cancel(d.o.AbortCause)
		}
		if aborted {
			return errAbortSeen
		}
		cur := stepStatuses(p)
		for i, s := range cur {
			if !stepTerminal(s) || (i < len(prev) && prev[i] == s) {
				continue
			}
			m := p.Status.StepExecutionMetadata[i]
			ev := events.PromotionStepFinished{Promotion: p.Name, Stage: p.Spec.Stage, Step: i, Alias: m.Alias, Uses: m.Uses, Status: string(s), Message: m.Message}
			if m.StartedAt != nil {
				ev.StartedAt = m.StartedAt.Time
			}
			if m.FinishedAt != nil {
				ev.FinishedAt = m.FinishedAt.Time
			}
			id := fmt.Sprintf("PromotionStepFinished.%s.%s.%d.%s", project, p.Name, i, s)
			if _, err := d.o.Bus.PublishWithID(ctx, id, project, events.Ref{Kind: model.KindPromotion, Name: p.Name}, ev); err != nil {
				d.o.Logger.Warn("publish step finished", "project", project, "promotion", p.Name, "err", err)
			}
		}
		prev = slices.Clone(cur)
		return nil
	}
}
