package dispatch

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/partition"
	"github.com/caravan-cd/caravan/services/promoter/internal/queue"
)

// Reconcile is one pass over every stored promotion and queue record,
// driving each to where it should be:
//
//   - a promotion not yet ended and in no queue (applied as a manifest, its
//     PromotionRequested lost, its replica gone before queueing it) is
//     queued;
//   - a pending promotion asked to abort ends Aborted;
//   - a finished promotion whose outcome event was not published (the
//     publish failed, the replica died) gets it published;
//   - a queue blocked for a verification that has ended (its
//     StageVerified lost) is unblocked;
//   - a queue with work and no live holder is worked.
//
// Every replica runs it at start, on every CARAVAN_RECONCILE_INTERVAL and
// when woken; each action is idempotent, so N replicas may run it at once.
// Projects are reconciled several at once (Options.PassWorkers), each
// project's promotions and then its queues one after another, so a
// project with many promotions does not delay the others' backstop.
func (d *Dispatcher) Reconcile(ctx context.Context) error {
	items, _, err := state.List[model.Promotion](ctx, d.o.Store.KV(state.Promotions), ">", 0, "")
	if err != nil {
		return err
	}
	records, _, err := state.List[queue.Record](ctx, d.kv, queue.KeyPrefix+">", 0, "")
	if err != nil {
		return err
	}
	type work struct {
		promotions []state.Item[model.Promotion]
		queues     []state.Item[queue.Record]
	}
	byProject := map[string]*work{}
	var projects []string
	of := func(project string) *work {
		w := byProject[project]
		if w == nil {
			w = &work{}
			byProject[project] = w
			projects = append(projects, project)
		}
		return w
	}
	queues := map[string]queue.Record{}
	for _, it := range records {
		queues[it.Key] = it.Value
		if project, _, ok := queue.Parse(it.Key); ok {
			of(project).queues = append(of(project).queues, it)
		}
	}
	for _, it := range items {
		project, _, _ := strings.Cut(it.Key, ".")
		project = state.Untoken(project)
		of(project).promotions = append(of(project).promotions, it)
	}
	return partition.Projects(ctx, projects, d.o.PassWorkers, func(ctx context.Context, project string) error {
		var errs []error
		w := byProject[project]
		for _, it := range w.promotions {
			p := it.Value
			if p.Namespace == "" {
				p.Namespace = project
			}
			errs = append(errs, d.reconcilePromotion(ctx, project, &p, queues[queue.Key(project, p.Spec.Stage)], true))
		}
		for _, it := range w.queues {
			_, stage, _ := queue.Parse(it.Key)
			errs = append(errs, d.reconcileQueue(ctx, project, stage, it.Value))
		}
		return errors.Join(errs...)
	})
}

// reconcilePromotion drives one promotion; pass says a reconcile pass
// (rather than the watch of new promotions) found it, which is worth
// reporting: an event was lost.
func (d *Dispatcher) reconcilePromotion(ctx context.Context, project string, p *model.Promotion, r queue.Record, pass bool) error {
	switch {
	case p.Status.Phase.IsTerminal():
		if p.Annotations[AnnotationAnnounced] != "" || r.Has(p.Name) {
			return nil // announced, or its holder finishes it
		}
		d.o.Logger.Info("publishing the outcome of a finished promotion", "project", project, "promotion", p.Name, "phase", p.Status.Phase)
		stage, _, err := state.GetAs[*model.Stage](ctx, d.o.Store, project, model.KindStage, p.Spec.Stage)
		if errors.Is(err, state.ErrNotFound) {
			stage = &model.Stage{ObjectMeta: model.ObjectMeta{Name: p.Spec.Stage, Namespace: project}}
		} else if err != nil {
			return err
		}
		return d.announce(ctx, project, stage, p)
	case AbortRequested(p) && (p.Status.Phase == model.PromotionPhasePending || p.Status.Phase == ""):
		return d.endPending(ctx, project, p.Spec.Stage, p.Name, model.PromotionPhaseAborted, "aborted by request")
	case AbortRequested(p):
		d.cancelRun(project, p.Name)
	}
	if r.Has(p.Name) {
		return nil
	}
	lvl := slog.LevelDebug
	if pass {
		lvl = slog.LevelInfo
	}
	d.o.Logger.Log(ctx, lvl, "queueing a promotion nobody queued", "project", project, "stage", p.Spec.Stage, "promotion", p.Name)
	return d.Enqueue(ctx, project, p)
}

func (d *Dispatcher) reconcileQueue(ctx context.Context, project, stageName string, r queue.Record) error {
	if r.Blocked != "" && r.Running == nil {
		stage, _, err := state.GetAs[*model.Stage](ctx, d.o.Store, project, model.KindStage, stageName)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return err
		}
		status, _, err := state.Get[model.StageStatus](ctx, d.o.Store.KV(state.Stages), state.Key(project, stageName))
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return err
		}
		if stage == nil || !model.IsVerifying(stage, &status) {
			// A verification that ended unseen, or a gate (window,
			// approvals) to ask again: next() blocks again if it must.
			d.o.Logger.Debug("re-checking a blocked stage", "project", project, "stage", stageName, "blocked", r.Blocked)
			return d.Unblock(ctx, project, stageName)
		}
		return nil
	}
	if r.Active() && (!r.Live(d.o.Now()) || r.Holder == d.o.ID) {
		d.kick(project, stageName)
	}
	return nil
}

// watchPromotions queues new promotions the moment they are stored (an
// applied Promotion has no PromotionRequested) and cancels local runs of
// promotions asked to abort, until ctx ends.
func (d *Dispatcher) watchPromotions(ctx context.Context) error {
	changes, _, err := state.Watch[model.Promotion](ctx, d.o.Store.KV(state.Promotions), ">", true)
	if err != nil {
		return err
	}
	for c := range changes {
		if c.Deleted {
			continue
		}
		p := c.Value
		project, _, _ := strings.Cut(c.Key, ".")
		project = state.Untoken(project)
		if p.Namespace == "" {
			p.Namespace = project
		}
		key := project + "/" + p.Name
		switch {
		case p.Status.Phase.IsTerminal():
			d.mu.Lock()
			delete(d.queued, key)
			d.mu.Unlock()
			continue
		case AbortRequested(&p):
			d.cancelRun(project, p.Name)
			if p.Status.Phase != model.PromotionPhasePending && p.Status.Phase != "" {
				continue
			}
		case p.Status.Phase != model.PromotionPhasePending && p.Status.Phase != "":
			continue // running: it is in a queue
		}
		d.mu.Lock()
		known := d.queued[key]
		d.mu.Unlock()
		if known && !AbortRequested(&p) {
			continue
		}
		// A promotion requested through the API has its PromotionRequested
		// on the way, which queues it in the request's trace: the watch
		// gives it a moment and queues only what is still not queued.
		if wait := d.requestGrace(&p); wait > 0 && !AbortRequested(&p) {
			time.AfterFunc(wait, func() {
				d.mu.Lock()
				known := d.queued[key]
				d.mu.Unlock()
				if !known && ctx.Err() == nil {
					d.watched(ctx, project, &p)
				}
			})
			continue
		}
		d.watched(ctx, project, &p)
	}
	return nil
}

// newPromotionGrace is how long the watch leaves a new promotion to its
// PromotionRequested before it queues it itself.
const newPromotionGrace = time.Second

// requestGrace is how much longer the watch leaves p to its event.
func (d *Dispatcher) requestGrace(p *model.Promotion) time.Duration {
	if p.CreationTimestamp == nil {
		return 0
	}
	return min(newPromotionGrace-d.o.Now().Sub(p.CreationTimestamp.Time), newPromotionGrace)
}

// watched drives a promotion the watch saw.
func (d *Dispatcher) watched(ctx context.Context, project string, p *model.Promotion) {
	r, err := queue.Get(ctx, d.kv, project, p.Spec.Stage)
	if err != nil {
		if ctx.Err() == nil {
			d.o.Logger.Warn("watch promotions: read queue", "project", project, "stage", p.Spec.Stage, "err", err)
		}
		return // the next pass repairs
	}
	if err := d.reconcilePromotion(ctx, project, p, r, false); err != nil && ctx.Err() == nil {
		d.o.Logger.Warn("watch promotions", "project", project, "promotion", p.Name, "err", err)
	}
}
