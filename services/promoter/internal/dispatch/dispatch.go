// Package dispatch runs promotions one at a time per stage across any number
// of promoter replicas. Each stage has a queue record (package queue); the
// replica holding its lease works the queue: it takes the oldest pending
// promotion, runs it with the step runner, records the outcome (promotion,
// stage status, freight) and publishes the promotion events. Every replica
// watches the queue records, so a stage whose holder stops renewing its
// lease (a crash) is taken over when the lease expires, and the running
// promotion is resumed from its saved step.
//
// Every write the holder makes for a stage is fenced by its lease token
// (pkg/lease): the queue record's own lease, the promotion's and the stage
// status's Fence. A step runs only after the holder saved it as Running
// under its token, so a replica whose lease passed on runs no step.
//
// Reconcile is the backstop of the events: it queues stored promotions
// nobody queued (a Promotion applied as a manifest, a lost
// PromotionRequested), ends aborted pending ones, publishes outcomes whose
// event was lost and unblocks stages whose verification ended unseen.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/queue"
)

// Runner runs a promotion's steps from its saved current step, saving its
// progress through save. It returns the terminal phase and a message. When
// ctx is canceled with the abort cause it ends the promotion as Aborted.
type Runner interface {
	Run(ctx context.Context, p *model.Promotion, save func(context.Context, *model.Promotion) error) (model.PromotionPhase, string, error)
}

// Options configure a Dispatcher.
type Options struct {
	Store  *state.Store
	Bus    *events.Bus
	Runner Runner
	Logger *slog.Logger
	// ID names this replica in stage leases; unique per replica.
	ID string
	// LeaseTTL is how long a stage lease lasts without renewal: how soon
	// another replica resumes the promotions of a replica that died.
	LeaseTTL time.Duration
	// MaxConcurrent bounds the promotions this replica runs at once.
	MaxConcurrent int
	// AbortCause is the cause ctx is canceled with to abort a running
	// promotion (the step engine's ErrAborted).
	AbortCause error
	// Succeeded is called after a promotion succeeded and was recorded.
	Succeeded func(ctx context.Context, project string, stage *model.Stage, p *model.Promotion)
	// Queued is called for every promotion queued (auto-promotion records
	// that the stage had a promotion of the freight).
	Queued func(ctx context.Context, project string, p *model.Promotion) error
	// Gate, when set, is asked before each promotion starts; a promotion
	// it blocks waits at the head of its stage's queue.
	Gate Gate
	// Finished is called after a promotion ended and was recorded.
	Finished func(ctx context.Context, project string, stage *model.Stage, p *model.Promotion)
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Renewals, when set, hears the outcome of every stage lease write
	// (the replica's readiness).
	Renewals *lease.Renewals
	// Freight, when set, is the index a hand-made promotion into an
	// auto-promoted stage reads to decide whether it holds
	// auto-promotion (is newer freight available?), instead of all of
	// the project's freight; when it is not current within
	// indexTimeout, or not set, the freight is read from KV.
	Freight *freightindex.Index
	// PassWorkers bounds how many projects Reconcile works at once
	// (default partition.Workers).
	PassWorkers int
}

// Gate decides whether a promotion may start now. Blocked says why not;
// retry, when not zero, is when to ask again without being woken.
type Gate interface {
	Admit(ctx context.Context, project string, stage *model.Stage, p *model.Promotion) (blocked string, retry time.Time, err error)
}

// Dispatcher runs the promotion queues of every stage.
type Dispatcher struct {
	o    Options
	kv   state.KV
	sem  chan struct{}
	life context.Context // the dispatcher's lifetime: Run's ctx

	mu      sync.Mutex
	closing bool
	workers map[string]*worker                 // queue key → worker
	timers  map[string]*time.Timer             // queue key → lease expiry timer
	gates   map[string]*time.Timer             // queue key → when a gate may open
	runs    map[string]context.CancelCauseFunc // project/promotion → cancel
	queued  map[string]bool                    // project/promotion known queued (watch)
	wg      sync.WaitGroup
}

type worker struct{ again bool }

// ErrAborted is the default abort cause.
var ErrAborted = errors.New("promotion aborted")

// New returns a Dispatcher; Run starts it.
func New(o Options) *Dispatcher {
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 15 * time.Second
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 1
	}
	if o.AbortCause == nil {
		o.AbortCause = ErrAborted
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Dispatcher{
		o:       o,
		kv:      o.Store.KV(state.Promoter),
		sem:     make(chan struct{}, o.MaxConcurrent),
		workers: map[string]*worker{},
		timers:  map[string]*time.Timer{},
		gates:   map[string]*time.Timer{},
		runs:    map[string]context.CancelCauseFunc{},
		queued:  map[string]bool{},
	}
}

// Run watches the queue records and works the stages that need it until
// ctx ends, then waits for its workers: a promotion interrupted by the end
// of ctx stays Running, its stage lease is released and another replica (or
// this one, restarted) resumes it. ready is closed once the queues present
// at start were looked at.
func (d *Dispatcher) Run(ctx context.Context, ready chan<- struct{}) error {
	d.mu.Lock()
	d.life = ctx
	d.mu.Unlock()
	changes, initial, err := state.Watch[queue.Record](ctx, d.o.Store.KV(state.Promoter), queue.KeyPrefix+">", false)
	if err != nil {
		return err
	}
	watched := make(chan error, 1)
	go func() { watched <- d.watchPromotions(ctx) }()
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
		d.observe(c)
	}
	werr := <-watched
	d.mu.Lock()
	d.closing = true
	for _, timers := range []map[string]*time.Timer{d.timers, d.gates} {
		for k, t := range timers {
			t.Stop()
			delete(timers, k)
		}
	}
	d.mu.Unlock()
	d.wg.Wait()
	return werr
}

// observe reacts to a change of a queue record: it aborts local runs asked
// to abort, and takes the stage when it has work and no live holder, or
// sets a timer for its holder's lease expiry.
func (d *Dispatcher) observe(c state.Change[queue.Record]) {
	project, stage, ok := queue.Parse(c.Key)
	if !ok {
		return
	}
	d.mu.Lock()
	if t := d.timers[c.Key]; t != nil {
		t.Stop()
		delete(d.timers, c.Key)
	}
	r := c.Value
	for _, name := range r.Abort {
		if cancel := d.runs[project+"/"+name]; cancel != nil {
			cancel(d.o.AbortCause)
		}
	}
	_, local := d.workers[c.Key]
	d.mu.Unlock()
	switch {
	case c.Deleted, !r.Active(), r.Running == nil && r.Blocked != "":
	case r.Holder == d.o.ID && local:
	case r.Holder == d.o.ID, !r.Live(d.o.Now()):
		d.kick(project, stage)
	default:
		wait := r.Expires.Sub(d.o.Now()) + 20*time.Millisecond
		d.mu.Lock()
		if !d.closing {
			d.timers[c.Key] = time.AfterFunc(wait, func() { d.kick(project, stage) })
		}
		d.mu.Unlock()
	}
}

// Enqueue queues a stored promotion on its stage and starts working the
// stage if no replica does. It is idempotent.
func (d *Dispatcher) Enqueue(ctx context.Context, project string, p *model.Promotion) error {
	e := queue.Entry{Name: p.Name, Freight: p.Spec.Freight, TraceParent: events.TraceParent(ctx)}
	if p.CreationTimestamp != nil {
		e.Created = p.CreationTimestamp.Time
	}
	if _, err := queue.Update(ctx, d.kv, project, p.Spec.Stage, func(r *queue.Record, _ bool) error {
		if !r.Add(e) {
			return state.ErrNoChange
		}
		return nil
	}); err != nil {
		return fmt.Errorf("queue promotion %s: %w", p.Name, err)
	}
	d.mu.Lock()
	d.queued[project+"/"+p.Name] = true
	d.mu.Unlock()
	if d.o.Queued != nil {
		if err := d.o.Queued(ctx, project, p); err != nil {
			return fmt.Errorf("queue promotion %s: %w", p.Name, err)
		}
	}
	d.kick(project, p.Spec.Stage)
	return nil
}

// Unblock lets a stage whose queue waits for its verification go on.
func (d *Dispatcher) Unblock(ctx context.Context, project, stage string) error {
	_, err := queue.Update(ctx, d.kv, project, stage, func(r *queue.Record, exists bool) error {
		if !exists {
			return state.ErrNoChange
		}
		r.Blocked = ""
		r.Nudge++
		return nil
	})
	if err != nil {
		return fmt.Errorf("unblock stage %s: %w", stage, err)
	}
	d.kick(project, stage)
	return nil
}

// kick makes sure a local worker tries to work the stage.
func (d *Dispatcher) kick(project, stage string) {
	key := queue.Key(project, stage)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing || d.life == nil {
		return
	}
	if w := d.workers[key]; w != nil {
		w.again = true
		return
	}
	d.workers[key] = &worker{}
	d.wg.Add(1)
	go d.work(d.life, project, stage, key)
}

func (d *Dispatcher) work(ctx context.Context, project, stage, key string) {
	defer d.wg.Done()
	for {
		if err := d.serve(ctx, project, stage); err != nil && ctx.Err() == nil {
			d.o.Logger.Error("stage queue", "project", project, "stage", stage, "err", err)
			// Back off before the stage is worked again.
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		d.mu.Lock()
		w := d.workers[key]
		if w.again && !d.closing {
			w.again = false
			d.mu.Unlock()
			continue
		}
		delete(d.workers, key)
		d.mu.Unlock()
		return
	}
}

var (
	errNothing = errors.New("nothing to do")
	errRetry   = errors.New("record changed")
)

// holding is this replica's grant on a stage's lease while it works the
// stage; renew keeps its expiry current.
type holding struct {
	mu    sync.Mutex
	grant lease.Grant
}

func (h *holding) get() lease.Grant {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.grant
}

func (h *holding) set(g lease.Grant) {
	h.mu.Lock()
	h.grant = g
	h.mu.Unlock()
}

// serve takes the stage's lease and runs its promotions one after the
// other until its queue is empty or blocked, or the lease is lost.
func (d *Dispatcher) serve(ctx context.Context, project, stage string) error {
	var g lease.Grant
	_, err := queue.UpdateRev(ctx, d.kv, project, stage, func(r *queue.Record, rev uint64) error {
		switch {
		case !r.Active(), r.Running == nil && r.Blocked != "":
			return errNothing
		}
		var err error
		g, err = r.Take(d.o.ID, rev, d.o.LeaseTTL, d.o.Now())
		return err
	})
	if ctx.Err() == nil {
		d.o.Renewals.Record(ignoreNothing(err))
	}
	if errors.Is(err, errNothing) || errors.Is(err, lease.ErrHeld) {
		return nil
	}
	if err != nil {
		return err
	}
	hold := &holding{grant: g}
	lctx, cancel := context.WithCancelCause(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		d.renew(lctx, cancel, project, stage, hold)
	}()
	released := false
	defer func() {
		cancel(nil)
		<-renewed
		// A stop, an interruption or an error leaves the lease to be
		// released: the next holder resumes a running promotion from its
		// saved step.
		if !released {
			d.release(project, stage, hold.get())
		}
	}()
	for {
		e, st, err := d.next(lctx, project, stage, hold.get())
		switch {
		case errors.Is(err, queue.ErrNotHolder):
			released = true
			return nil
		case lctx.Err() != nil:
			return nil
		case err == nil && e == nil:
			released = true // an empty or blocked queue released it
			return nil
		case err != nil:
			return err
		}
		select {
		case d.sem <- struct{}{}:
		case <-lctx.Done():
			return nil
		}
		err = d.runOne(lctx, project, st, *e, hold)
		<-d.sem
		switch {
		case lctx.Err() != nil:
			return nil // interrupted: the promotion stays Running
		case err != nil:
			// The promotion stays in the running slot: the next try
			// finishes it (records it, announces it).
			return fmt.Errorf("promotion %s: %w", e.Name, err)
		}
		if _, err := queue.Update(lctx, d.kv, project, stage, func(r *queue.Record, _ bool) error {
			if err := r.Check(hold.get()); err != nil {
				return err
			}
			r.Remove(e.Name)
			return nil
		}); err != nil {
			if errors.Is(err, queue.ErrNotHolder) {
				return nil // taken over: the new holder goes on
			}
			return err
		}
		d.mu.Lock()
		delete(d.queued, project+"/"+e.Name)
		d.mu.Unlock()
	}
}

// ignoreNothing counts "nothing to do" as a store that answered.
func ignoreNothing(err error) error {
	if errors.Is(err, errNothing) || errors.Is(err, queue.ErrNotHolder) {
		return nil
	}
	return err
}

// renew extends the stage lease every third of its TTL; it cancels the
// worker's ctx with ErrNotHolder when the lease was lost or could not be
// renewed in time.
func (d *Dispatcher) renew(ctx context.Context, cancel context.CancelCauseFunc, project, stage string, hold *holding) {
	t := time.NewTicker(d.o.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A renewal that cannot land before a third of the TTL is left
		// gives up, and so does the work: another replica may take the
		// stage soon.
		var g lease.Grant
		rctx, cancelRenew := context.WithDeadline(ctx, hold.get().Expires.Add(-d.o.LeaseTTL/3))
		_, err := queue.Update(rctx, d.kv, project, stage, func(r *queue.Record, _ bool) error {
			var err error
			g, err = r.Renew(hold.get(), d.o.LeaseTTL, d.o.Now())
			return err
		})
		cancelRenew()
		if ctx.Err() == nil {
			d.o.Renewals.Record(ignoreNothing(err))
		}
		switch {
		case err == nil:
			hold.set(g)
		case errors.Is(err, queue.ErrNotHolder):
			cancel(queue.ErrNotHolder)
			return
		case !hold.get().Valid(d.o.Now(), d.o.LeaseTTL/3):
			cancel(fmt.Errorf("renew stage lease: %w", err))
			return
		}
	}
}

// release gives the stage lease up (keeping any running promotion for the
// next holder to resume).
func (d *Dispatcher) release(project, stage string, g lease.Grant) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := queue.Update(ctx, d.kv, project, stage, func(r *queue.Record, _ bool) error {
		if !r.Release(g) {
			return state.ErrNoChange
		}
		return nil
	})
	if err != nil {
		d.o.Logger.Warn("release stage lease", "project", project, "stage", stage, "err", err)
	}
}
