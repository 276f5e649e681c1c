// Package autopromote creates Promotions on its own, as Kargo's
// auto-promotion does: when a project's promotion policies enable it for a
// stage, each origin the stage requests gets the freight its selection
// policy picks (NewestFreight or MatchUpstream) unless a hand-made
// promotion of older freight put a hold on the origin.
//
// Decisions are recorded before effects: an auto-promotion of freight to a
// stage is decided once, by creating the record auto.<project>.<stage>.<freight>
// in caravan-promoter, before the Promotion is stored and requested. A
// stage that had a Promotion of the freight, made by hand or on its own,
// has such a record (the dispatcher records every promotion it queues), so
// as in Kargo a stage is never auto-promoted to freight that already had a
// Promotion for it: a failed or aborted auto-promotion is not tried again
// until a person asks (AutoPromotionResumeRequested turns the records of
// the stage's failed and aborted promotions into a new attempt, a new
// Promotion), however often the stage is evaluated.
//
// An evaluation is idempotent and may run on several replicas at once: the
// decision record is created once; the promotion is named
// deterministically from the stage, the freight and the attempt, and its
// PromotionRequested carries a deterministic event ID. A decision whose
// promotion was not requested yet (a crash in between) is completed by
// the next evaluation. When freight will become available only by
// soaking, the evaluation records a wake-up time (key
// wake.<project>.<stage> in caravan-promoter); every replica keeps a timer
// for each and evaluates the stage again when it fires. Pass evaluates
// every stage, the backstop of the events that trigger evaluations.
package autopromote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/stageindex"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/partition"
	"github.com/caravan-cd/caravan/services/promoter/internal/queue"
)

// CreatedBy is the created-by annotation of auto-promotions.
const CreatedBy = model.CreatedByAutoPromotion

const wakePrefix = "wake."

// decisionPrefix starts the keys of decision records.
const decisionPrefix = "auto."

// decision records that a stage had, or was given, a promotion of a
// freight.
type decision struct {
	Promotion string    `json:"promotion"`
	By        string    `json:"by"`
	At        time.Time `json:"at"`
	// Requested: the promotion is stored and requested (an auto-promotion
	// decided but not yet requested is completed by the next evaluation).
	Requested bool `json:"requested,omitempty"`
	// Attempt counts the times a person asked to try again: each attempt
	// is its own Promotion.
	Attempt int `json:"attempt,omitempty"`
}

func decisionKey(project, stage, freight string) string {
	return decisionPrefix + state.Key(project, stage, freight)
}

type wake struct {
	At time.Time `json:"at"`
}

// Options configure an AutoPromoter.
type Options struct {
	Store  *state.Store
	Bus    *events.Bus
	Logger *slog.Logger
	// Audit, when set, records the decisions made: auto-promotions,
	// rollbacks, waits for a promotion window.
	Audit Auditor
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Freight, when set, is the index evaluations read freight from:
	// only the few freight that can matter to a stage (see relevant),
	// not all of a project's. When it is not current within
	// indexTimeout, or not set, evaluations read all of the project's
	// freight from KV.
	Freight *freightindex.Index
	// Stages, when set, is the index that says which stages an event
	// concerns (those requesting an origin, those downstream of a stage,
	// every stage of a project) without listing a project's stages. When
	// it is not current within indexTimeout, or not set, the stages are
	// listed from KV.
	Stages *stageindex.Index
	// PassWorkers bounds how many projects Pass and ControlFlow work at
	// once (default partition.Workers); each project's stages are worked
	// one after another.
	PassWorkers int
}

// indexTimeout bounds how long an evaluation waits for the freight or
// stage index to catch up before it reads KV instead.
const indexTimeout = 3 * time.Second

// Auditor appends to the audit log.
type Auditor interface {
	Append(ctx context.Context, r audit.Record) error
}

// AutoPromoter evaluates auto-promotion of stages.
type AutoPromoter struct {
	o      Options
	kv     state.KV
	mu     sync.Mutex
	timers map[string]*time.Timer
}

// New returns an AutoPromoter.
func New(o Options) *AutoPromoter {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &AutoPromoter{o: o, kv: o.Store.KV(state.Promoter), timers: map[string]*time.Timer{}}
}

// Run keeps a timer for every recorded wake-up time, evaluating the stage
// when it fires, until ctx ends. ready is closed once the wake-ups present
// at start have their timers.
func (a *AutoPromoter) Run(ctx context.Context, ready chan<- struct{}) error {
	changes, initial, err := state.Watch[wake](ctx, a.o.Store.KV(state.Promoter), wakePrefix+">", false)
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-initial:
			if ready != nil {
				close(ready)
			}
		case <-ctx.Done():
		}
	}()
	for c := range changes {
		a.mu.Lock()
		if t := a.timers[c.Key]; t != nil {
			t.Stop()
			delete(a.timers, c.Key)
		}
		if !c.Deleted {
			key, rev := c.Key, c.Revision
			a.timers[key] = time.AfterFunc(time.Until(c.Value.At), func() { a.fire(ctx, key, rev) })
		}
		a.mu.Unlock()
	}
	a.mu.Lock()
	for k, t := range a.timers {
		t.Stop()
		delete(a.timers, k)
	}
	a.mu.Unlock()
	return nil
}

func (a *AutoPromoter) fire(ctx context.Context, key string, rev uint64) {
	if ctx.Err() != nil {
		return
	}
	project, stage, ok := parseWake(key)
	if !ok {
		return
	}
	if err := a.Evaluate(ctx, project, stage); err != nil {
		a.o.Logger.Warn("auto-promotion after soak", "project", project, "stage", stage, "err", err)
		return
	}
	// A newer wake-up written meanwhile has another revision and stays.
	_ = state.Delete(ctx, a.kv, key, rev)
}

func parseWake(key string) (project, stage string, ok bool) {
	return queue.Parse(queue.KeyPrefix + key[len(wakePrefix):])
}

// Evaluate brings the stage's derived status up to date (see SyncStatus)
// and auto-promotes it if its policy allows and some origin has a better
// candidate than what the stage has or has queued. A control-flow stage
// is never promoted: it passes the freight available to it downstream
// instead (see passControlFlow).
func (a *AutoPromoter) Evaluate(ctx context.Context, project, stageName string) error {
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
	policies := pol.PromotionPolicies()
	enabled := model.AutoPromotionEnabled(policies, stage) && !stage.IsControlFlow()
	windows := model.WindowStatus(pol.Windows(stage), a.o.Now())
	if err := a.syncStatus(ctx, project, stage, enabled, windows); err != nil {
		return err
	}
	stage.Default()
	if stage.IsControlFlow() {
		return a.passControlFlow(ctx, project, stage)
	}
	if err := a.rollback(ctx, project, stage, model.AutoRollbackFor(policies, stage)); err != nil {
		return fmt.Errorf("auto-rollback: %w", err)
	}
	if !enabled {
		return nil
	}
	if windows != nil && windows.Closed {
		return a.windowWait(ctx, project, stage, windows)
	}
	status, _, err := state.Get[model.StageStatus](ctx, a.o.Store.KV(state.Stages), state.Key(project, stageName))
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	rec, err := queue.Get(ctx, a.kv, project, stageName)
	if err != nil {
		return err
	}
	now := a.o.Now()
	freight, err := a.freightFor(ctx, project, stage, now)
	if err != nil {
		return err
	}
	var wakeAt time.Time
	for _, req := range stage.Spec.RequestedFreight {
		if status.Held(req.Origin) {
			continue
		}
		sel, why := model.SelectAutoPromotion(freight, stage, req.Origin, now)
		if at, ok := soakDeadline(freight, stage, req, sel, now); ok && (wakeAt.IsZero() || at.Before(wakeAt)) {
			wakeAt = at
		}
		if sel == nil {
			a.o.Logger.Debug("nothing to auto-promote", "project", project, "stage", stageName, "origin", req.Origin.String(), "reason", why)
			continue
		}
		if cur, ok := status.CurrentFreight(req.Origin); ok && cur.Name == sel.Name {
			continue
		}
		if rec.HasFreight(sel.Name) {
			continue
		}
		if err := a.promote(ctx, project, stage, sel, now); err != nil {
			return err
		}
	}
	if !wakeAt.IsZero() {
		return a.wakeAt(ctx, project, stageName, wakeAt)
	}
	return nil
}

// soakDeadline returns when a better candidate for req becomes available
// by soaking alone: newer freight for NewestFreight, the upstream stage's
// current freight for MatchUpstream.
func soakDeadline(freight []*model.Freight, stage *model.Stage, req model.FreightRequest, sel *model.Freight, now time.Time) (time.Time, bool) {
	if stage.SelectionPolicy(req.Origin) != model.AutoPromotionSelectionPolicyMatchUpstream {
		return model.NextSoakDeadline(freight, stage, req.Origin, sel, now)
	}
	if sel != nil || len(req.Sources.Stages) != 1 {
		return time.Time{}, false
	}
	for _, f := range freight {
		if f.Origin == req.Origin && f.IsCurrentlyIn(req.Sources.Stages[0]) {
			if at, ok := model.AvailableAt(f, stage, now); ok && at.After(now) {
				return at, true
			}
		}
	}
	return time.Time{}, false
}

func (a *AutoPromoter) policies(ctx context.Context, project string) ([]model.PromotionPolicy, error) {
	cfg, _, err := state.GetAs[*model.ProjectConfig](ctx, a.o.Store, project, model.KindProjectConfig, project)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return cfg.Spec.PromotionPolicies, nil
}

// Name returns the deterministic name of the auto-promotion of freight to
// stage: one per (stage, freight) and attempt (0 until a person asks to
// try again).
func Name(project, stage string, freight *model.Freight, attempt int) string {
	seed := project + "\x00" + stage + "\x00" + freight.Name
	if attempt > 0 {
		seed += "\x00" + strconv.Itoa(attempt)
	}
	sum := sha256.Sum256([]byte(seed))
	var ms uint64
	if freight.CreationTimestamp != nil && freight.CreationTimestamp.Unix() > 0 {
		ms = ulid.Timestamp(freight.CreationTimestamp.Time)
	}
	id, err := ulid.New(ms, bytes.NewReader(sum[:]))
	if err != nil {
		id = ulid.ULID{}
	}
	return model.PromotionName(stage, id.String(), freight.Name)
}

// promote auto-promotes f to stage unless the stage had a promotion of f:
// it records the decision, stores the Promotion and requests it.
func (a *AutoPromoter) promote(ctx context.Context, project string, stage *model.Stage, f *model.Freight, now time.Time) error {
	name := Name(project, stage.Name, f, 0)
	key := decisionKey(project, stage.Name, f.Name)
	dec, _, err := state.Get[decision](ctx, a.kv, key)
	switch {
	case errors.Is(err, state.ErrNotFound):
		_, err = state.Create(ctx, a.kv, key, decision{Promotion: name, By: CreatedBy, At: now.UTC()})
		if errors.Is(err, state.ErrExists) {
			if dec, _, err = state.Get[decision](ctx, a.kv, key); err != nil {
				return err
			}
			if dec.Requested || dec.By != CreatedBy {
				return nil
			}
			name = Name(project, stage.Name, f, dec.Attempt)
		} else if err != nil {
			return fmt.Errorf("record auto-promotion of %s to %s: %w", f.Name, stage.Name, err)
		}
	case err != nil:
		return err
	case dec.Requested || dec.By != CreatedBy:
		return nil // decided before: never again
	default:
		name = Name(project, stage.Name, f, dec.Attempt) // decided, not yet requested: go on
	}
	id := name[len(stage.Name)+1 : len(stage.Name)+1+ulid.EncodedSize]
	p := model.NewPromotion(stage, f, id, CreatedBy, now)
	p.Name = name
	if p.Namespace == "" {
		p.Namespace = project
	}
	_, err = a.o.Store.PutObject(ctx, p, 0)
	switch {
	case errors.Is(err, state.ErrExists):
		// Created by another replica or an earlier attempt; make sure it
		// was requested (the event ID drops a duplicate).
	case err != nil:
		return fmt.Errorf("create auto-promotion %s: %w", name, err)
	default:
		a.o.Logger.Info("auto-promotion", "project", project, "stage", stage.Name, "freight", f.Name, "promotion", name)
		a.audit(ctx, audit.Record{ID: "auto." + name, Project: project, Action: audit.ActionAutoPromotion, Object: "Promotion/" + name,
			Reason: fmt.Sprintf("freight %s to stage %s", f.Name, stage.Name)})
	}
	if _, err = a.o.Bus.PublishWithID(ctx, "PromotionRequested."+project+"."+name, project,
		events.Ref{Kind: model.KindPromotion, Name: name},
		events.PromotionRequested{Promotion: name, Stage: stage.Name, Freight: f.Name}); err != nil {
		// Stored: the dispatcher's reconciler queues it anyway.
		a.o.Logger.Warn("request auto-promotion", "project", project, "promotion", name, "err", err)
	}
	_, _, err = state.Update(ctx, a.kv, key, func(d decision, exists bool) (decision, error) {
		if exists && d.Requested {
			return d, state.ErrNoChange
		}
		d.Promotion, d.By, d.Requested = name, CreatedBy, true
		if d.At.IsZero() {
			d.At = now.UTC()
		}
		return d, nil
	})
	return err
}

// Record records that p was queued for its stage: the stage is never
// auto-promoted to p's freight (as in Kargo, a stage is not auto-promoted
// to freight that already has a Promotion for it). The dispatcher calls it
// for every promotion it queues.
func (a *AutoPromoter) Record(ctx context.Context, project string, p *model.Promotion) error {
	by := p.Annotations[model.AnnotationPromotionCreatedBy]
	if by == "" {
		by = "unknown"
	}
	_, err := state.Create(ctx, a.kv, decisionKey(project, p.Spec.Stage, p.Spec.Freight),
		decision{Promotion: p.Name, By: by, At: a.o.Now().UTC(), Requested: true})
	if errors.Is(err, state.ErrExists) {
		return nil
	}
	return err
}

func (a *AutoPromoter) wakeAt(ctx context.Context, project, stage string, at time.Time) error {
	_, _, err := state.Update(ctx, a.kv, wakePrefix+state.Key(project, stage), func(cur wake, exists bool) (wake, error) {
		if exists && cur.At.Equal(at) {
			return cur, state.ErrNoChange
		}
		return wake{At: at}, nil
	})
	return err
}

// Resume lifts a stage's auto-promotion holds, lets the promotions of
// the stage that failed, errored or were aborted be tried again (a person
// asks), and evaluates it.
func (a *AutoPromoter) Resume(ctx context.Context, project, stage string) error {
	if err := a.forgetFailed(ctx, project, stage); err != nil {
		return err
	}
	_, _, err := state.Update(ctx, a.o.Store.KV(state.Stages), state.Key(project, stage), func(s model.StageStatus, exists bool) (model.StageStatus, error) {
		if !exists || len(s.AutoPromotionHolds) == 0 {
			return s, state.ErrNoChange
		}
		s.AutoPromotionHolds = nil
		return s, nil
	})
	if err != nil {
		return err
	}
	return a.Evaluate(ctx, project, stage)
}

// forgetFailed turns the decisions of the stage's promotions that ended
// other than Succeeded into decisions to try again.
func (a *AutoPromoter) forgetFailed(ctx context.Context, project, stage string) error {
	items, _, err := state.List[decision](ctx, a.kv, decisionPrefix+state.Prefix(project, stage), 0, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, it := range items {
		p, _, err := state.Get[model.Promotion](ctx, a.o.Store.KV(state.Promotions), state.Key(project, it.Value.Promotion))
		switch {
		case errors.Is(err, state.ErrNotFound):
			continue // collected: keep the decision
		case err != nil:
			errs = append(errs, err)
			continue
		}
		if !p.Status.Phase.IsTerminal() || p.Status.Phase == model.PromotionPhaseSucceeded {
			continue
		}
		// Another attempt, as a new Promotion.
		_, _, err = state.Update(ctx, a.kv, it.Key, func(d decision, exists bool) (decision, error) {
			if !exists || d.Promotion != it.Value.Promotion {
				return d, state.ErrNoChange
			}
			d.By, d.Requested, d.Attempt = CreatedBy, false, d.Attempt+1
			return d, nil
		})
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Pass evaluates every stage of every project whose policies enable its
// auto-promotion (or auto-rollback): the backstop of the events that
// trigger evaluations (FreightDiscovered, FreightApproved, StageVerified,
// a Stage or ProjectConfig applied), any of which may be lost. It finds
// the projects and their stages in the stage index when it is current,
// else in KV. Projects are passed several at once (Options.PassWorkers),
// each project's stages one after another, so a project with many stages
// does not delay the others' backstop.
func (a *AutoPromoter) Pass(ctx context.Context) error {
	projects, err := a.stageProjects(ctx)
	if err != nil {
		return err
	}
	return partition.Projects(ctx, projects, a.o.PassWorkers, a.passProject)
}

// passProject is Pass for one project.
func (a *AutoPromoter) passProject(ctx context.Context, project string) error {
	policies, err := a.policies(ctx, project)
	if err != nil {
		return err
	}
	return a.Stages(ctx, project, func(s *stageindex.Stage) bool {
		sel := s.Selectable()
		return model.AutoPromotionEnabled(policies, sel) || model.AutoRollbackFor(policies, sel) != nil
	})
}
