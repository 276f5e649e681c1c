package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/reconcile"
	"github.com/caravan-cd/caravan/pkg/state"
)

// forwardPrefix is the core NATS subject prefix on which a replica takes
// requests for the Warehouses it holds: <prefix>.<replica id>.
const forwardPrefix = "caravan.discovery.forward"

// scheduler runs one worker per Warehouse this replica holds the lease of.
// The Warehouses it knows from a watch of their specs, the live replicas
// from the lease Ring's watch of heartbeats; each Warehouse belongs to one
// live replica by rendezvous hashing (lease.Ring.Owner). When the replicas
// or the Warehouses change (and every third of the lease TTL, as a
// backstop) it balances: it takes the leases of the Warehouses it owns and
// starts their workers, and stops the workers and releases the leases of
// the Warehouses it no longer owns, so their new owner takes them at once.
// Holding leases costs one heartbeat write per period however many
// Warehouses there are; a lease is written only when it changes hands.
type scheduler struct {
	cfg  Config
	log  *slog.Logger
	d    *discoverer
	ring *lease.Ring
	nc   *nats.Conn

	mu         sync.Mutex
	workers    map[string]*worker
	warehouses map[string]ref // key → Warehouse, from the watch
	waiting    map[string]bool
	wg         sync.WaitGroup
	kick       chan struct{}
}

// ref names a Warehouse.
type ref struct{ project, name string }

type worker struct {
	project, name, key string
	cancel             context.CancelFunc
	done               chan struct{}

	mu      sync.Mutex
	pending *request
	wake    chan struct{}
}

func (w *worker) enqueue(r request) {
	w.mu.Lock()
	if w.pending == nil {
		w.pending = &request{}
	}
	w.pending.merge(r)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) take() (request, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == nil {
		return request{}, false
	}
	r := *w.pending
	w.pending = nil
	return r, true
}

// forward is a request handed to the replica holding a Warehouse.
type forward struct {
	Project string  `json:"project"`
	Name    string  `json:"name"`
	Request request `json:"request"`
}

// MarshalJSON and UnmarshalJSON make request travel.
func (r request) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Full        bool   `json:"full"`
		Hints       []any  `json:"hints,omitempty"`
		TraceParent string `json:"traceparent,omitempty"`
	}{r.full, toAny(r.hints), r.traceParent})
}

func (r *request) UnmarshalJSON(b []byte) error {
	var v struct {
		Full        bool            `json:"full"`
		Hints       json.RawMessage `json:"hints"`
		TraceParent string          `json:"traceparent"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	r.full, r.traceParent = v.Full, v.TraceParent
	if len(v.Hints) > 0 {
		return json.Unmarshal(v.Hints, &r.hints)
	}
	return nil
}

func toAny[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

func newScheduler(cfg Config, log *slog.Logger, d *discoverer, ring *lease.Ring, nc *nats.Conn) *scheduler {
	return &scheduler{
		cfg: cfg, log: log, d: d, ring: ring, nc: nc,
		workers: map[string]*worker{}, warehouses: map[string]ref{}, waiting: map[string]bool{},
		kick: make(chan struct{}, 1),
	}
}

// wake asks for a balance soon.
func (s *scheduler) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run balances until ctx ends, then stops every worker, releases the
// leases and leaves the ring, so other replicas take over at once.
func (s *scheduler) run(ctx context.Context) error {
	sub, err := s.nc.Subscribe(forwardPrefix+"."+s.ring.Holder(), func(m *nats.Msg) {
		var f forward
		if err := json.Unmarshal(m.Data, &f); err != nil {
			_ = m.Respond([]byte("bad request"))
			return
		}
		if err := s.local(ctx, f.Project, f.Name, f.Request); err != nil {
			_ = m.Respond([]byte(err.Error()))
			return
		}
		_ = m.Respond([]byte("ok"))
	})
	if err != nil {
		return fmt.Errorf("subscribe forward subject: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	rctx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	if err := s.ring.Join(rctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := s.watchWarehouses(rctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := s.watchLeases(rctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	reconciled := make(chan struct{})
	go func() {
		defer close(reconciled)
		s.reconcile(rctx)
	}()
	defer func() { <-reconciled }()
	defer stopWatching()
	t := time.NewTicker(max(s.cfg.LeaseTTL/3, 50*time.Millisecond))
	defer t.Stop()
	for {
		if err := s.balance(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("balance warehouses", "err", err)
		}
		select {
		case <-ctx.Done():
			s.stopAll()
			return nil
		case <-s.ring.Changes():
		case <-s.kick:
		case <-t.C:
		}
	}
}

// watchWarehouses follows the Warehouse specs (keys only): it returns once
// the current ones are known; later, a new or deleted Warehouse makes the
// scheduler balance, and a changed one is discovered at once by the
// replica working it (its ResourceApplied may be lost).
func (s *scheduler) watchWarehouses(ctx context.Context) error {
	changes, ready, err := state.Watch[struct{}](ctx, s.d.store.KV(state.Resources), "*."+model.KindWarehouse+".*", false, state.KeysOnly())
	if err != nil {
		return fmt.Errorf("watch warehouses: %w", err)
	}
	// The current Warehouses are known before this returns: once ready
	// closes, every initial change is in the channel.
	for loaded := false; !loaded; {
		select {
		case c, ok := <-changes:
			if !ok {
				return ctx.Err()
			}
			s.seeWarehouse(c)
		case <-ready:
			for len(changes) > 0 {
				s.seeWarehouse(<-changes)
			}
			loaded = true
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	go func() {
		for c := range changes {
			s.seeWarehouse(c)
		}
	}()
	return nil
}

// seeWarehouse records one change of the Warehouse keys: an initial one
// only fills the set; later a new Warehouse wakes the scheduler, a changed
// one asks its worker for a full discovery, a deleted one wakes the
// scheduler to drop it.
func (s *scheduler) seeWarehouse(c state.Change[struct{}]) {
	tokens := strings.Split(c.Key, ".")
	if len(tokens) != 3 {
		return
	}
	r := ref{state.Untoken(tokens[0]), state.Untoken(tokens[2])}
	key := state.Key(r.project, r.name)
	s.mu.Lock()
	_, known := s.warehouses[key]
	wk := s.workers[key]
	if c.Deleted {
		delete(s.warehouses, key)
	} else {
		s.warehouses[key] = r
	}
	s.mu.Unlock()
	switch {
	case c.Deleted:
		s.wake()
	case !c.Initial && wk != nil:
		wk.enqueue(request{full: true})
	case !known && !c.Initial:
		s.wake()
	}
}

// watchLeases makes the scheduler balance as soon as a lease it waits for
// (held by the Warehouse's previous owner) changes: released, most often.
func (s *scheduler) watchLeases(ctx context.Context) error {
	w, err := s.d.store.KV(state.DiscoveryLeases).Watch(ctx, "*.*", jetstream.UpdatesOnly(), jetstream.MetaOnly())
	if err != nil {
		return fmt.Errorf("watch leases: %w", err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				s.mu.Lock()
				waited := s.waiting[e.Key()]
				s.mu.Unlock()
				if waited {
					s.wake()
				}
			}
		}
	}()
	return nil
}

// balance works the Warehouses this replica owns and gives the others up.
// It writes only leases that change hands. A replica whose heartbeat lapsed
// stops every worker: another replica may take its Warehouses.
func (s *scheduler) balance(ctx context.Context) error {
	if err := s.ring.Healthy(); err != nil {
		s.stopEvery(false)
		return err
	}
	me := s.ring.Holder()
	s.mu.Lock()
	var take []ref
	var drop []string
	for key, r := range s.warehouses {
		_, working := s.workers[key]
		owned := s.ring.Owner(key) == me
		switch {
		case owned && !working:
			take = append(take, r)
		case !owned && working:
			drop = append(drop, key)
		}
	}
	for key := range s.workers {
		if _, ok := s.warehouses[key]; !ok {
			drop = append(drop, key) // deleted
		}
	}
	for key := range s.waiting {
		if _, ok := s.warehouses[key]; !ok || s.ring.Owner(key) != me {
			delete(s.waiting, key)
		}
	}
	s.mu.Unlock()
	for _, key := range drop {
		s.stop(key, true)
	}
	var errs []error
	for _, r := range take {
		key := state.Key(r.project, r.name)
		_, err := s.ring.Acquire(ctx, key)
		switch {
		case err == nil:
			s.mu.Lock()
			delete(s.waiting, key)
			s.mu.Unlock()
			s.start(ctx, r.project, r.name, nil)
		case errors.Is(err, lease.ErrHeld):
			// Its previous owner still works it; it lets go once it sees
			// this replica, and the lease watch wakes us.
			s.mu.Lock()
			s.waiting[key] = true
			s.mu.Unlock()
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			errs = append(errs, fmt.Errorf("lease %s/%s: %w", r.project, r.name, err))
		}
	}
	return errors.Join(errs...)
}

// start starts the worker of project/name unless it runs. A worker started
// for a request begins with it; one taken over begins with a full
// discovery only when one is due (the last is older than the interval,
// failed, or saw an older spec), else it waits for the rest of the
// interval: a Warehouse changing hands is not discovered again.
func (s *scheduler) start(ctx context.Context, project, name string, req *request) *worker {
	key := state.Key(project, name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := s.workers[key]; ok {
		if req != nil {
			w.enqueue(*req)
		}
		return w
	}
	if _, ok := s.warehouses[key]; !ok {
		s.warehouses[key] = ref{project, name} // before the watch says so
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{project: project, name: name, key: key, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	if req != nil {
		w.enqueue(*req)
	}
	s.workers[key] = w
	s.wg.Go(func() { s.work(wctx, w) })
	s.log.Debug("working warehouse", "project", project, "warehouse", name, "replica", s.ring.Holder())
	return w
}

// stop stops key's worker; release gives its lease up too (else it is
// only forgotten: it lapses with the heartbeat).
func (s *scheduler) stop(key string, release bool) {
	s.mu.Lock()
	w, ok := s.workers[key]
	delete(s.workers, key)
	s.mu.Unlock()
	if ok {
		w.cancel()
		<-w.done
	}
	if !release {
		s.ring.Forget(key)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.ring.Release(ctx, key); err != nil {
		s.log.Debug("release lease", "lease", key, "err", err)
	}
}

// stopEvery stops every worker.
func (s *scheduler) stopEvery(release bool) {
	s.mu.Lock()
	keys := make([]string, 0, len(s.workers))
	for k := range s.workers {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	for _, k := range keys {
		s.stop(k, release)
	}
}

func (s *scheduler) stopAll() {
	s.stopEvery(true)
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.ring.Leave(ctx)
}

// request hands req for project/name to whichever replica works it: this
// one when it holds (or, as its owner, can take) the lease, else the
// holder (or, when none holds it, the owner) over core NATS. An error makes
// the event's delivery retry later (the lease may be changing hands).
func (s *scheduler) request(ctx context.Context, project, name string, req request) error {
	if err := s.local(ctx, project, name, req); err == nil {
		return nil
	} else if !errors.Is(err, errNotHolder) {
		return err
	}
	key := state.Key(project, name)
	holder, err := s.ring.Current(ctx, key)
	if err != nil {
		return err
	}
	if holder == "" {
		holder = s.ring.Owner(key)
	}
	if holder == "" || holder == s.ring.Holder() {
		return fmt.Errorf("warehouse %s/%s: lease changing hands", project, name)
	}
	data, err := json.Marshal(forward{Project: project, Name: name, Request: req})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := s.nc.RequestWithContext(rctx, forwardPrefix+"."+holder, data)
	if err != nil {
		return fmt.Errorf("forward to replica %s: %w", holder, err)
	}
	if string(resp.Data) != "ok" {
		return fmt.Errorf("forward to replica %s: %s", holder, resp.Data)
	}
	return nil
}

var errNotHolder = errors.New("another replica works the warehouse")

// local queues req on this replica's worker, starting one when this
// replica owns the Warehouse and can take its lease.
func (s *scheduler) local(ctx context.Context, project, name string, req request) error {
	key := state.Key(project, name)
	s.mu.Lock()
	w, ok := s.workers[key]
	s.mu.Unlock()
	if ok {
		w.enqueue(req)
		return nil
	}
	if s.ring.Owner(key) != s.ring.Holder() {
		return errNotHolder
	}
	if _, err := s.ring.Acquire(ctx, key); errors.Is(err, lease.ErrHeld) {
		return errNotHolder
	} else if err != nil {
		return err
	}
	s.start(ctx, project, name, &req)
	return nil
}

// due returns how long until project/name's next full discovery (0: now)
// and its interval: now when it was never discovered, its spec changed
// since, or its last discovery failed or is older than the interval.
func (s *scheduler) due(ctx context.Context, project, name string) (time.Duration, time.Duration) {
	wh, _, err := state.GetAs[*model.Warehouse](ctx, s.d.store, project, model.KindWarehouse, name)
	if err != nil {
		return 0, s.cfg.MinInterval // the discovery tells what is wrong
	}
	wh.Default()
	interval := max(wh.Spec.Interval.Duration, s.cfg.MinInterval)
	st, _, err := state.Get[model.WarehouseStatus](ctx, s.d.store.KV(state.Warehouses), state.Key(project, name))
	if err != nil || st.LastRunAt == nil || st.ObservedGeneration != wh.Generation {
		return 0, interval
	}
	for _, c := range st.Conditions {
		if c.Type == ConditionReady && c.Status != model.ConditionTrue {
			return 0, interval
		}
	}
	age := s.d.now().Sub(st.LastRunAt.Time)
	if age >= interval || age < 0 {
		return 0, interval
	}
	return jitter(interval - age), interval
}

// work runs discoveries of one Warehouse: what is requested at once, a full
// one every interval (with ±10% jitter), and after a failure again after an
// exponential backoff (RetryBase doubling, capped at the interval).
func (s *scheduler) work(ctx context.Context, w *worker) {
	defer close(w.done)
	log := s.log.With("project", w.project, "warehouse", w.name)
	first, interval := s.due(ctx, w.project, w.name)
	if first == 0 {
		w.enqueue(request{full: true})
		first = interval
	}
	failures := 0
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		req, ok := w.take()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
				continue
			case <-timer.C:
				req = request{full: true}
			}
		}
		// A requested discovery continues the requester's trace.
		dctx, span := events.StartSpan(events.WithTraceParent(ctx, req.traceParent), "discover warehouse")
		grant, held := s.ring.Grant(w.key)
		if !held {
			span.End()
			s.wake()
			<-ctx.Done() // the heartbeat lapsed: balance stops this worker
			return
		}
		out, err := s.d.discover(dctx, w.project, w.name, req, grant)
		span.End()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errGone) {
			log.Debug("warehouse gone")
			go s.stop(w.key, true)
			<-ctx.Done()
			return
		}
		if out.interval > 0 {
			interval = max(out.interval, s.cfg.MinInterval)
		}
		var delay time.Duration
		if err != nil {
			failures++
			delay = min(s.cfg.RetryBase<<min(failures-1, 20), interval)
			log.Warn("discovery failed", "err", err, "failures", failures, "retry_in", delay)
		} else {
			failures = 0
			delay = jitter(interval)
			if out.announced {
				log.Info("freight discovered", "freight", out.freight.Name, "alias", out.freight.Alias)
			}
		}
		if req.full || err != nil {
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(delay)
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// reconcile is the backstop of the events that ask for discoveries: a
// Warehouse this replica works whose spec changed (its ResourceApplied may
// be lost; the Warehouse watch sees it too) or whose last discovery is
// older than its interval (a worker stuck, a timer lost) is discovered
// again. Passes run every CARAVAN_RECONCILE_INTERVAL (0–20% sooner at
// random).
func (s *scheduler) reconcile(ctx context.Context) {
	loop := reconcile.New(s.cfg.ReconcileInterval)
	loop.Run(ctx, s.pass, func(err error) { s.log.Warn("reconcile warehouses", "err", err) })
}

// pass looks at every Warehouse this replica works.
func (s *scheduler) pass(ctx context.Context) error {
	s.mu.Lock()
	workers := make([]*worker, 0, len(s.workers))
	for _, w := range s.workers {
		workers = append(workers, w)
	}
	s.mu.Unlock()
	now := s.d.now()
	var errs []error
	for _, w := range workers {
		wh, _, err := state.GetAs[*model.Warehouse](ctx, s.d.store, w.project, model.KindWarehouse, w.name)
		if errors.Is(err, state.ErrNotFound) {
			continue // the worker notices
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		wh.Default()
		st, _, err := state.Get[model.WarehouseStatus](ctx, s.d.store.KV(state.Warehouses), state.Key(w.project, w.name))
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		interval := max(wh.Spec.Interval.Duration, s.cfg.MinInterval)
		// The worker's own timer fires within the interval (+10% jitter);
		// a quarter more and it missed.
		overdue := st.LastRunAt == nil || now.Sub(st.LastRunAt.Time) > interval+interval/4
		if st.ObservedGeneration != wh.Generation || overdue {
			s.log.Debug("warehouse due", "project", w.project, "warehouse", w.name, "generation", wh.Generation, "observed", st.ObservedGeneration)
			w.enqueue(request{full: true})
		}
	}
	// Announcements whose run stopped between creating the Freight and
	// marking it announced, after twice the lease TTL.
	if err := s.d.sweepUnannounced(ctx, 2*s.cfg.LeaseTTL); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
