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
// Every scan (a third of the lease TTL) it lists the Warehouses, takes or
// renews their leases, starts workers for new ones and stops the workers of
// leases it lost and of deleted Warehouses.
type scheduler struct {
	cfg    Config
	log    *slog.Logger
	d      *discoverer
	leases *lease.Leases
	nc     *nats.Conn

	mu      sync.Mutex
	workers map[string]*worker
	wg      sync.WaitGroup
}

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

func newScheduler(cfg Config, log *slog.Logger, d *discoverer, l *lease.Leases, nc *nats.Conn) *scheduler {
	return &scheduler{cfg: cfg, log: log, d: d, leases: l, nc: nc, workers: map[string]*worker{}}
}

// run scans until ctx ends, then stops every worker and releases the
// leases so another replica takes over at once.
func (s *scheduler) run(ctx context.Context) error {
	sub, err := s.nc.Subscribe(forwardPrefix+"."+s.leases.Holder(), func(m *nats.Msg) {
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
	rctx, stopReconcile := context.WithCancel(ctx)
	reconciled := make(chan struct{})
	go func() {
		defer close(reconciled)
		s.reconcile(rctx)
	}()
	defer func() { <-reconciled }()
	defer stopReconcile()
	period := max(s.cfg.LeaseTTL/3, 50*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if err := s.scan(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("scan warehouses", "err", err)
		}
		select {
		case <-ctx.Done():
			s.stopAll()
			return nil
		case <-t.C:
		}
	}
}

// replicasToken is the project token under which replicas announce
// themselves in the lease bucket (project names cannot start with "_").
const replicasToken = "_replicas"

// scan renews this replica's presence, then takes or renews the lease of
// every Warehouse, sharing them out: a replica takes a free lease only
// while it works fewer than its fair share (Warehouses / live replicas,
// rounded up) and gives up leases beyond it, which the others then take.
// A lease whose holder died is free once expired.
func (s *scheduler) scan(ctx context.Context) error {
	live, err := s.liveReplicas(ctx)
	if err != nil {
		return err
	}
	keys, err := state.Keys(ctx, s.d.store.KV(state.Resources), "*.Warehouse.*")
	if err != nil {
		return err
	}
	fair := (len(keys) + live - 1) / max(live, 1)
	seen := map[string]bool{}
	for _, k := range keys {
		tokens := strings.Split(k, ".")
		if len(tokens) != 3 {
			continue
		}
		project, name := state.Untoken(tokens[0]), state.Untoken(tokens[2])
		key := state.Key(project, name)
		seen[key] = true
		s.mu.Lock()
		_, mine := s.workers[key]
		n := len(s.workers)
		s.mu.Unlock()
		if !mine && n >= fair {
			continue // leave it to a replica with fewer
		}
		_, err := s.leases.Acquire(ctx, key)
		switch {
		case err == nil:
			s.start(ctx, project, name, request{full: true})
		case errors.Is(err, lease.ErrHeld):
			s.stop(key, false)
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			s.log.Warn("lease", "project", project, "warehouse", name, "err", err)
		}
	}
	s.mu.Lock()
	var gone, excess []string
	for k := range s.workers {
		if !seen[k] {
			gone = append(gone, k)
		} else if len(s.workers)-len(excess) > fair {
			excess = append(excess, k)
		}
	}
	s.mu.Unlock()
	for _, k := range append(gone, excess...) {
		s.stop(k, true)
	}
	return nil
}

// liveReplicas renews this replica's presence record and counts the
// replicas whose record has not expired (itself included).
func (s *scheduler) liveReplicas(ctx context.Context) (int, error) {
	kv := s.d.store.KV(state.DiscoveryLeases)
	me := state.Key(replicasToken, s.leases.Holder())
	if _, err := state.Put(ctx, kv, me, lease.Record{Lease: lease.Lease{Holder: s.leases.Holder(), Expires: time.Now().Add(s.cfg.LeaseTTL)}}); err != nil {
		return 0, err
	}
	items, _, err := state.List[lease.Record](ctx, kv, state.Prefix(replicasToken), 0, "")
	if err != nil {
		return 0, err
	}
	n := 0
	now := time.Now()
	for _, it := range items {
		if it.Value.Expires.After(now) {
			n++
		}
	}
	return max(n, 1), nil
}

// start starts the worker of project/name unless it runs; a new worker
// begins with req (a full discovery at least).
func (s *scheduler) start(ctx context.Context, project, name string, req request) *worker {
	key := state.Key(project, name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := s.workers[key]; ok {
		return w
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{project: project, name: name, key: key, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	req.merge(request{full: true})
	w.enqueue(req)
	s.workers[key] = w
	s.wg.Go(func() { s.work(wctx, w) })
	s.log.Debug("working warehouse", "project", project, "warehouse", name, "replica", s.leases.Holder())
	return w
}

// stop stops key's worker; release gives its lease up too.
func (s *scheduler) stop(key string, release bool) {
	s.mu.Lock()
	w, ok := s.workers[key]
	delete(s.workers, key)
	s.mu.Unlock()
	if ok {
		w.cancel()
		<-w.done
	}
	if release {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.leases.Release(ctx, key)
	}
}

func (s *scheduler) stopAll() {
	s.mu.Lock()
	keys := make([]string, 0, len(s.workers))
	for k := range s.workers {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	for _, k := range keys {
		s.stop(k, true)
	}
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = state.Delete(ctx, s.d.store.KV(state.DiscoveryLeases), state.Key(replicasToken, s.leases.Holder()), 0)
}

// request hands req for project/name to whichever replica works it: this
// one when it holds (or can take) the lease, else the holder over core
// NATS. An error makes the event's delivery retry later (the holder may be
// gone; its lease then expires and a replica takes over).
func (s *scheduler) request(ctx context.Context, project, name string, req request) error {
	if err := s.local(ctx, project, name, req); err == nil {
		return nil
	} else if !errors.Is(err, errNotHolder) {
		return err
	}
	holder, err := s.leases.Current(ctx, state.Key(project, name))
	if err != nil {
		return err
	}
	if holder == "" || holder == s.leases.Holder() {
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

var errNotHolder = errors.New("another replica holds the lease")

// local queues req on this replica's worker, starting one when this
// replica can take the lease.
func (s *scheduler) local(ctx context.Context, project, name string, req request) error {
	key := state.Key(project, name)
	s.mu.Lock()
	w, ok := s.workers[key]
	s.mu.Unlock()
	if ok {
		w.enqueue(req)
		return nil
	}
	if _, err := s.leases.Acquire(ctx, key); errors.Is(err, lease.ErrHeld) {
		return errNotHolder
	} else if err != nil {
		return err
	}
	s.start(ctx, project, name, req)
	return nil
}

// work runs discoveries of one Warehouse: what is requested at once, a full
// one every interval (with ±10% jitter), and after a failure again after an
// exponential backoff (RetryBase doubling, capped at the interval).
func (s *scheduler) work(ctx context.Context, w *worker) {
	defer close(w.done)
	log := s.log.With("project", w.project, "warehouse", w.name)
	interval := s.cfg.MinInterval
	failures := 0
	timer := time.NewTimer(time.Hour)
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
		grant, held := s.leases.Grant(w.key)
		if !held {
			span.End()
			<-ctx.Done() // the lease passed on: the scan stops this worker
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
// Warehouse this replica works whose spec changed (its
// ResourceApplied may be lost) is discovered at once, seen through a watch
// of the specs and on every pass; one whose last discovery is older than
// its interval (a worker stuck, a timer lost) is discovered again. Passes
// run every CARAVAN_RECONCILE_INTERVAL (0–20% sooner at random).
func (s *scheduler) reconcile(ctx context.Context) {
	loop := reconcile.New(s.cfg.ReconcileInterval)
	changes, _, err := state.Watch[json.RawMessage](ctx, s.d.store.KV(state.Resources), "*."+model.KindWarehouse+".*", true)
	if err != nil {
		s.log.Warn("watch warehouse specs (changes wait for the next pass)", "err", err)
	} else {
		go func() {
			for c := range changes {
				tokens := strings.Split(c.Key, ".")
				if len(tokens) != 3 || c.Deleted {
					continue
				}
				s.mu.Lock()
				w := s.workers[state.Key(state.Untoken(tokens[0]), state.Untoken(tokens[2]))]
				s.mu.Unlock()
				if w != nil {
					w.enqueue(request{full: true})
				}
			}
		}()
	}
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
	return errors.Join(errs...)
}
