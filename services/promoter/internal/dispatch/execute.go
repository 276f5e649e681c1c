package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	leasepkg "github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/queue"
)

var errSkip = errors.New("skip")

// runOne runs (or resumes) one promotion and records its outcome, every
// write fenced by hold's grant. It returns nil with lease canceled when it
// was interrupted: the promotion then stays Running for the next holder.
func (d *Dispatcher) runOne(lease context.Context, project string, stage *model.Stage, e queue.Entry, hold *holding) error {
	// The run continues the trace of the request that queued it.
	lease, span := events.StartSpan(events.WithTraceParent(lease, e.TraceParent), "run promotion")
	defer span.End()
	log := d.o.Logger.With("project", project, "stage", stage.Name, "promotion", e.Name)
	promotions := d.o.Store.KV(state.Promotions)
	key := state.Key(project, e.Name)

	cur, _, err := state.Get[model.Promotion](lease, promotions, key)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur.Status.Phase.IsTerminal() {
		// Ended but not recorded everywhere (a crash while finishing).
		return d.finish(lease, project, stage, &cur, hold.get())
	}
	freight, _, err := state.GetAs[*model.Freight](lease, d.o.Store, project, model.KindFreight, cur.Spec.Freight)
	if errors.Is(err, state.ErrNotFound) {
		cur.Status.Phase, cur.Status.Message = model.PromotionPhaseErrored, fmt.Sprintf("freight %q not found", cur.Spec.Freight)
		cur.Status.FinishedAt = model.NewTime(d.o.Now().UTC())
		if err := d.record(lease, project, stage, &cur, hold.get()); err != nil {
			return err
		}
		if _, err := d.writeFinal(lease, project, &cur, hold.get()); err != nil {
			return err
		}
		return d.finish(lease, project, stage, &cur, hold.get())
	}
	if err != nil {
		return err
	}

	// Take the promotion under this holder's token: from now on a
	// replica with an older grant cannot write it (lease.Admit).
	started := false
	g := hold.get()
	p, _, err := state.Update(lease, promotions, key, func(cur model.Promotion, exists bool) (model.Promotion, error) {
		started = false
		switch {
		case !exists || cur.Status.Phase.IsTerminal():
			return cur, errSkip
		case cur.Status.Phase == model.PromotionPhaseRunning && cur.Status.Fence == g.Token:
			return cur, state.ErrNoChange
		}
		if err := leasepkg.Admit(&cur.Status.Fence, g); err != nil {
			return cur, err
		}
		if cur.Status.Phase != model.PromotionPhaseRunning {
			started = true
			ref := freight.Ref()
			cur.Status.Phase, cur.Status.Message = model.PromotionPhaseRunning, ""
			cur.Status.Freight = &ref
			cur.Status.StartedAt = model.NewTime(d.o.Now().UTC())
		}
		return cur, nil
	})
	if errors.Is(err, errSkip) {
		return nil
	}
	if err != nil {
		return err
	}
	if started {
		if err := d.started(lease, project, stage, &p, freight, g); err != nil {
			return err
		}
	} else {
		log.Info("resuming promotion", "step", p.Status.CurrentStep, "token", g.Token)
	}

	runCtx, cancel := context.WithCancelCause(lease)
	defer cancel(nil)
	runKey := project + "/" + p.Name
	d.mu.Lock()
	d.runs[runKey] = cancel
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.runs, runKey)
		d.mu.Unlock()
	}()
	if r, err := queue.Get(lease, d.kv, project, stage.Name); AbortRequested(&p) || err == nil && r.AbortRequested(p.Name) {
		cancel(d.o.AbortCause)
	}

	phase, msg, runErr := d.o.Runner.Run(runCtx, &p, d.saver(lease, cancel, project, &p, hold))
	if lease.Err() != nil || errors.Is(runErr, queue.ErrNotHolder) || errors.Is(runErr, leasepkg.ErrFenced) {
		log.Info("promotion interrupted", "cause", context.Cause(lease), "err", runErr)
		return nil
	}
	// Fence, as in saver: a replica that lost the stage (or whose queue
	// record went with its project) records nothing.
	if r, err := queue.Get(lease, d.kv, project, stage.Name); err == nil && r.Holder != d.o.ID {
		log.Info("promotion interrupted", "cause", queue.ErrNotHolder)
		return nil
	}
	aborted := errors.Is(context.Cause(runCtx), d.o.AbortCause)
	switch {
	case aborted && !phase.IsTerminal():
		phase, msg = model.PromotionPhaseAborted, "aborted by request"
	case runErr != nil && !phase.IsTerminal():
		phase, msg = model.PromotionPhaseErrored, runErr.Error()
	case !phase.IsTerminal():
		phase, msg = model.PromotionPhaseErrored, fmt.Sprintf("runner ended in phase %q", phase)
	}
	final, _, err := state.Get[model.Promotion](lease, promotions, key)
	if err != nil {
		final = p
	}
	final.Status.Phase, final.Status.Message = phase, msg
	final.Status.FinishedAt = model.NewTime(d.o.Now().UTC())
	// The stage and freight first: once the promotion reads terminal, its
	// outcome is recorded everywhere.
	g = hold.get()
	if err := d.record(lease, project, stage, &final, g); err != nil {
		return err
	}
	written, err := d.writeFinal(lease, project, &final, g)
	if err != nil {
		return err
	}
	log.Info("promotion finished", "phase", phase, "message", msg)
	return d.announce(lease, project, stage, written)
}

// writeFinal stores a promotion's terminal status under g, keeping what
// others wrote to its metadata.
func (d *Dispatcher) writeFinal(ctx context.Context, project string, final *model.Promotion, g leasepkg.Grant) (*model.Promotion, error) {
	p, _, err := state.Update(ctx, d.o.Store.KV(state.Promotions), state.Key(project, final.Name), func(cur model.Promotion, exists bool) (model.Promotion, error) {
		if !exists {
			return cur, state.ErrNotFound
		}
		next := cur
		next.Status = final.Status
		next.Status.Fence = cur.Status.Fence
		if err := leasepkg.Admit(&next.Status.Fence, g); err != nil {
			return cur, err
		}
		return next, nil
	})
	return &p, err
}

// started records a promotion that began running: the stage's current
// promotion and, for a manual promotion of freight older than the newest
// available, a hold on auto-promotion of its origin. It publishes
// PromotionStarted.
func (d *Dispatcher) started(ctx context.Context, project string, stage *model.Stage, p *model.Promotion, freight *model.Freight, g leasepkg.Grant) error {
	var hold *model.AutoPromotionHold
	auto, err := d.autoPromoted(ctx, project, stage)
	if err != nil {
		return err
	}
	if auto && p.Annotations[model.AnnotationPromotionCreatedBy] != "auto" {
		newest, err := d.newerAvailable(ctx, project, stage, freight, d.o.Now())
		if err != nil {
			return err
		}
		if newest != nil {
			hold = &model.AutoPromotionHold{
				Origin: freight.Origin, FreightName: freight.Name, PromotionName: p.Name,
				Actor: p.Annotations[model.AnnotationPromotionCreatedBy], CreatedAt: model.NewTime(d.o.Now().UTC()),
				Reason: fmt.Sprintf("freight %s promoted by hand while %s is newer", freightLabel(freight), freightLabel(newest)),
			}
		}
	}
	ref := &model.PromotionReference{Name: p.Name, Freight: p.Status.Freight}
	held := false
	if _, _, err := state.Update(ctx, d.o.Store.KV(state.Stages), state.Key(project, stage.Name), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
		if err := leasepkg.Admit(&s.Fence, g); err != nil {
			return s, err
		}
		s.CurrentPromotion = ref
		s.Phase = model.StagePhasePromoting
		held = hold != nil && !s.Held(hold.Origin)
		if held {
			s.Hold(*hold)
		}
		return s, nil
	}); err != nil {
		return err
	}
	if held {
		if err := d.announceHold(ctx, project, stage.Name, p, hold); err != nil {
			return err
		}
	}
	_, err = d.o.Bus.PublishWithID(ctx, "PromotionStarted."+project+"."+p.Name, project, events.Ref{Kind: model.KindPromotion, Name: p.Name},
		events.PromotionStarted{Promotion: p.Name, Stage: stage.Name, Freight: p.Spec.Freight})
	if err != nil {
		d.o.Logger.Warn("publish promotion started", "project", project, "promotion", p.Name, "err", err)
	}
	return nil
}

// announceHold shows a new hold in the promotion that placed it (saved at
// once: p is what the run saves) and publishes AutoPromotionHeld.
func (d *Dispatcher) announceHold(ctx context.Context, project, stage string, p *model.Promotion, hold *model.AutoPromotionHold) error {
	p.Status.AutoPromotionHold = hold
	if _, _, err := state.Update(ctx, d.o.Store.KV(state.Promotions), state.Key(project, p.Name), func(cur model.Promotion, exists bool) (model.Promotion, error) {
		if !exists {
			return cur, state.ErrNoChange
		}
		cur.Status.AutoPromotionHold = hold
		return cur, nil
	}); err != nil {
		return err
	}
	ev := events.AutoPromotionHeld{Stage: stage, Origin: events.FreightOrigin{Kind: string(hold.Origin.Kind), Name: hold.Origin.Name},
		Freight: hold.FreightName, Promotion: p.Name, Reason: hold.Reason}
	if _, err := d.o.Bus.PublishWithID(ctx, "AutoPromotionHeld."+project+"."+p.Name, project, events.Ref{Kind: model.KindStage, Name: stage}, ev); err != nil {
		d.o.Logger.Warn("publish auto-promotion held", "project", project, "promotion", p.Name, "err", err)
	}
	return nil
}

// finish records a promotion that ended and announces it. It is
// idempotent.
func (d *Dispatcher) finish(ctx context.Context, project string, stage *model.Stage, p *model.Promotion, g leasepkg.Grant) error {
	if err := d.record(ctx, project, stage, p, g); err != nil {
		return err
	}
	return d.announce(ctx, project, stage, p)
}

// announce calls the Succeeded hook after a success (stage health is
// assessed before the verifier hears of the promotion) and publishes the
// promotion's outcome event, unless that was done.
func (d *Dispatcher) announce(ctx context.Context, project string, stage *model.Stage, p *model.Promotion) error {
	if p.Annotations[AnnotationAnnounced] != "" {
		return nil
	}
	if p.Status.Phase == model.PromotionPhaseSucceeded && d.o.Succeeded != nil {
		d.o.Succeeded(ctx, project, stage, p)
	}
	if d.o.Finished != nil {
		d.o.Finished(ctx, project, stage, p)
	}
	return d.publishFinished(ctx, project, p)
}

// record records a promotion's outcome on its stage (last promotion,
// freight history) and freight (currentlyIn), under g. It is idempotent,
// and leaves a stage alone that recorded a promotion finished later.
func (d *Dispatcher) record(ctx context.Context, project string, stage *model.Stage, p *model.Promotion, g leasepkg.Grant) error {
	now := d.o.Now().UTC()
	succeeded := p.Status.Phase == model.PromotionPhaseSucceeded
	var replaced string // the freight of the same origin the stage used before
	ref := &model.PromotionReference{
		Name:       p.Name,
		Freight:    p.Status.Freight,
		Status:     &model.PromotionStatus{Phase: p.Status.Phase, Message: p.Status.Message, FinishedAt: p.Status.FinishedAt},
		FinishedAt: p.Status.FinishedAt,
	}
	// Kargo's hold and resume intents (annotations) take effect when the
	// promotion ends, unless it was aborted, while auto-promotion is on.
	hold, resume := model.PromotionIntent(p)
	if p.Status.Phase == model.PromotionPhaseAborted || !stage.RequestsOrigin(orZero(hold)) && !stage.RequestsOrigin(orZero(resume)) {
		hold, resume = nil, nil
	} else if auto, err := d.autoPromoted(ctx, project, stage); err != nil {
		return err
	} else if !auto {
		hold, resume = nil, nil
	}
	if _, _, err := state.Update(ctx, d.o.Store.KV(state.Stages), state.Key(project, stage.Name), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
		replaced = ""
		if s.LastPromotion != nil && s.LastPromotion.Name == p.Name {
			return s, state.ErrNoChange // recorded already
		}
		if last := s.LastPromotion; last != nil && last.FinishedAt != nil && p.Status.FinishedAt != nil && last.FinishedAt.After(p.Status.FinishedAt.Time) {
			return s, state.ErrNoChange // a later promotion is recorded
		}
		if err := leasepkg.Admit(&s.Fence, g); err != nil {
			return s, err
		}
		if hold != nil && stage.RequestsOrigin(*hold) {
			actor := p.Annotations[model.AnnotationCreateActor]
			if actor == "" {
				actor = p.Annotations[model.AnnotationPromotionCreatedBy]
			}
			s.Hold(model.AutoPromotionHold{Origin: *hold, FreightName: p.Spec.Freight, PromotionName: p.Name, Actor: actor, CreatedAt: model.NewTime(now)})
		}
		if resume != nil {
			delete(s.AutoPromotionHolds, resume.String())
		}
		if s.CurrentPromotion != nil && s.CurrentPromotion.Name == p.Name {
			s.CurrentPromotion = nil
		}
		s.LastPromotion = ref
		switch {
		case succeeded && p.Status.Freight != nil:
			if cur, ok := s.CurrentFreight(p.Status.Freight.Origin); ok && cur.Name != p.Status.Freight.Name {
				replaced = cur.Name
			}
			s.FreightHistory = s.PushFreight(*p.Status.Freight)
			s.Phase = model.StagePhaseSteady
			if stage.Spec.Verification != nil {
				s.Phase = model.StagePhaseVerifying
			}
		case p.Status.Phase == model.PromotionPhaseAborted:
			s.Phase = model.StagePhaseSteady
		default:
			s.Phase = model.StagePhaseFailed
		}
		return s, nil
	}); err != nil {
		return err
	}
	if succeeded {
		return d.moveFreight(ctx, project, stage.Name, p.Spec.Freight, replaced, now)
	}
	return nil
}

// moveFreight marks freight as used by stage since now and replaced as no
// longer used, recording its longest soak there.
func (d *Dispatcher) moveFreight(ctx context.Context, project, stage, freight, replaced string, now time.Time) error {
	kv := d.o.Store.KV(state.Freight)
	_, _, err := state.Update(ctx, kv, state.Key(project, freight), func(f model.Freight, exists bool) (model.Freight, error) {
		if !exists {
			return f, state.ErrNoChange
		}
		if f.IsCurrentlyIn(stage) {
			return f, state.ErrNoChange
		}
		if f.Status.CurrentlyIn == nil {
			f.Status.CurrentlyIn = map[string]model.CurrentStage{}
		}
		f.Status.CurrentlyIn[stage] = model.CurrentStage{Since: model.NewTime(now)}
		return f, nil
	})
	if err != nil {
		return fmt.Errorf("mark freight %s in %s: %w", freight, stage, err)
	}
	if replaced == "" {
		return nil
	}
	_, _, err = state.Update(ctx, kv, state.Key(project, replaced), func(f model.Freight, exists bool) (model.Freight, error) {
		c, ok := f.Status.CurrentlyIn[stage]
		if !exists || !ok {
			return f, state.ErrNoChange
		}
		if v, ok := f.Status.VerifiedIn[stage]; ok && c.Since != nil {
			soak := now.Sub(c.Since.Time)
			if v.LongestSoak == nil || v.LongestSoak.Duration < soak {
				v.LongestSoak = model.NewDuration(soak)
			}
			f.Status.VerifiedIn[stage] = v
		}
		delete(f.Status.CurrentlyIn, stage)
		return f, nil
	})
	if err != nil {
		return fmt.Errorf("mark freight %s out of %s: %w", replaced, stage, err)
	}
	return nil
}

// autoPromoted reports whether the project's policies let stage
// auto-promote (holds matter only then).
func (d *Dispatcher) autoPromoted(ctx context.Context, project string, stage *model.Stage) (bool, error) {
	cfg, _, err := state.GetAs[*model.ProjectConfig](ctx, d.o.Store, project, model.KindProjectConfig, project)
	if errors.Is(err, state.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return model.AutoPromotionEnabled(cfg.Spec.PromotionPolicies, stage), nil
}

func orZero(o *model.FreightOrigin) model.FreightOrigin {
	if o == nil {
		return model.FreightOrigin{}
	}
	return *o
}

// freightLabel names freight for people: its alias, else its ID.
func freightLabel(f *model.Freight) string {
	if f.Alias != "" {
		return f.Alias
	}
	return f.Name
}
