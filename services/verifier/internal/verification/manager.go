// Package verification runs Stage verifications: after a promotion (or on
// request) it waits for the stage to be healthy, runs the Stage's analysis
// templates, records the outcome once across any number of replicas and
// qualifies (or disqualifies) the freight for downstream stages.
//
// Every verification is a Record in the caravan-verifications bucket,
// created already claimed by the replica that handled the event. The owner
// renews its lease (pkg/lease) while it works and saves the analysis's
// progress in the record after every measurement; a replica that finds a
// lapsed lease (its periodic scan, and a scan at start) claims the record
// (a new fencing token: the old owner can no longer write it) and
// continues the analysis from the saved progress, adopting a running
// measurement Job. Only the owner finishes a record, so the outcome is
// written once; its effects (freight status, stage verification history,
// StageVerified) are idempotent and marked done in the record, so a crash
// between the two is repaired by the next owner.
//
// Reconcile is the backstop of the events: it starts the verification of a
// stage whose last promotion succeeded and was announced but that has
// none (its PromotionSucceeded was lost).
package verification

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/expressions"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/reconcile"
	"github.com/caravan-cd/caravan/pkg/redact"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// Options tune a Manager.
type Options struct {
	// ReplicaID names this replica in record leases.
	ReplicaID string
	// LeaseTTL is how long a claim lasts without renewal.
	LeaseTTL time.Duration
	// Renewals, when set, hears the outcome of every claim and renewal
	// (the replica's readiness).
	Renewals *lease.Renewals
	// ScanInterval is how often records with lapsed leases are looked for.
	ScanInterval time.Duration
	// HealthPoll is how often a waiting verification re-reads stage health
	// (besides being woken by StageHealthChanged).
	HealthPoll time.Duration
	// HealthTimeout ends a verification in Error when the stage is not
	// healthy by then (0: wait for ever).
	HealthTimeout time.Duration
	// MaxConcurrent bounds the analyses this replica runs at once.
	MaxConcurrent int
	// Retain is how long finished records are kept.
	Retain time.Duration
	// ReconcileInterval is how often Reconcile runs (0: 30s).
	ReconcileInterval time.Duration
}

// HistoryLimit is how many verifications per freight collection the stage
// status keeps (Kargo: 10).
const HistoryLimit = 10

// ActorAuto is the actor of verifications that follow a promotion.
const ActorAuto = "caravan"

// errLostLease: the record's lease is no longer this replica's grant.
var errLostLease = lease.ErrLost

// Manager runs verifications. Create it with New, start Run, then feed it
// events.
type Manager struct {
	store  *state.Store
	kv     jetstream.KeyValue
	bus    *events.Bus
	engine *analysis.Engine
	log    *slog.Logger
	opts   Options
	now    func() time.Time

	launch chan string
	sem    chan struct{}

	mu      sync.Mutex
	running map[string]context.CancelCauseFunc
	signals map[string]chan struct{}
	grants  map[string]lease.Grant // record key → this replica's grant
	// applied holds keys of records known to be applied (they never
	// change again but for deletion), so scans and aborts skip them.
	applied sync.Map
}

// New returns a Manager.
func New(store *state.Store, bus *events.Bus, engine *analysis.Engine, log *slog.Logger, opts Options) *Manager {
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 1000
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 15 * time.Second
	}
	if opts.ScanInterval <= 0 {
		opts.ScanInterval = 10 * time.Second
	}
	if opts.HealthPoll <= 0 {
		opts.HealthPoll = 2 * time.Second
	}
	if opts.Retain <= 0 {
		opts.Retain = 24 * time.Hour
	}
	return &Manager{
		store: store, kv: store.KV(state.Verifications), bus: bus, engine: engine, log: log, opts: opts, now: time.Now,
		launch:  make(chan string, 1024),
		sem:     make(chan struct{}, opts.MaxConcurrent),
		running: map[string]context.CancelCauseFunc{},
		signals: map[string]chan struct{}{},
		grants:  map[string]lease.Grant{},
	}
}

func (m *Manager) grant(key string) (lease.Grant, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.grants[key]
	return g, ok
}

func (m *Manager) setGrant(key string, g lease.Grant) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g.Token == 0 {
		delete(m.grants, key)
		return
	}
	m.grants[key] = g
}

// Run starts the verifications handed to the Manager and, at start and
// every ScanInterval, takes over those whose owner stopped renewing its
// lease. It returns when ctx ends and every local verification stopped;
// their records are left for another replica (or this one, restarted).
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	start := func(key string) {
		m.mu.Lock()
		if _, ok := m.running[key]; ok {
			m.mu.Unlock()
			return
		}
		work, cancel := context.WithCancelCause(ctx)
		m.running[key] = cancel
		m.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				m.mu.Lock()
				delete(m.running, key)
				m.mu.Unlock()
				cancel(nil)
			}()
			m.run(ctx, work, key)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.watchAborts(ctx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		reconcile.New(m.opts.ReconcileInterval).Run(ctx, m.Reconcile, func(err error) { m.log.Warn("reconcile verifications", "err", err) })
	}()
	scan := time.NewTicker(m.opts.ScanInterval)
	defer scan.Stop()
	for _, key := range m.scan(ctx) {
		start(key)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case key := <-m.launch:
			start(key)
		case <-scan.C:
			for _, key := range m.scan(ctx) {
				start(key)
			}
		}
	}
}

// Begin records a new verification of stage, claimed by this replica, and
// starts it. id identifies it (the promotion's name after a promotion);
// a second Begin with the same id does nothing. freight is the freight
// that was promoted ("" for the stage's current freight). A verification
// of the stage still running is aborted: it is superseded.
func (m *Manager) Begin(ctx context.Context, project, stageName, id, promotion, freight, actor string) error {
	status, _, err := state.Get[model.StageStatus](ctx, m.store.KV(state.Stages), state.Key(project, stageName))
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	names := collection(&status, freight)
	if len(names) == 0 {
		return events.Permanentf("stage %s/%s has no current freight to verify", project, stageName)
	}
	now := m.now()
	rec := Record{
		Project: project, Stage: stageName, ID: id, Promotion: promotion, Freight: names, Actor: actor, TraceParent: events.TraceParent(ctx),
		Phase: analysis.PhasePending, CreatedAt: now, Attempts: 1,
	}
	g, _ := rec.Take(m.opts.ReplicaID, 0, m.opts.LeaseTTL, now)
	key := Key(project, stageName, id)
	if _, err := state.Create(ctx, m.kv, key, rec); err != nil {
		if errors.Is(err, state.ErrExists) {
			return nil // handled already (a redelivery)
		}
		return err
	}
	m.setGrant(key, g)
	// A verification of the stage's current freight becomes the stage's
	// current one and supersedes the one before; one of freight already
	// replaced (events handled out of order) does not, and ends Aborted
	// itself.
	if cur := collection(&status, ""); len(cur) == 0 || slices.Contains(cur, names[0]) {
		var previous string
		_, _, err := state.Update(ctx, m.kv, stageKey(project, stageName), func(c current, _ bool) (current, error) {
			previous = c.ID
			if c.ID == id {
				return c, state.ErrNoChange
			}
			return current{ID: id}, nil
		})
		if err != nil {
			return err
		}
		if previous != "" && previous != id {
			if err := m.abort(ctx, Key(project, stageName, previous), "superseded by verification "+id); err != nil {
				m.log.Warn("abort superseded verification", "project", project, "stage", stageName, "verification", previous, "err", err)
			}
		}
	}
	select {
	case m.launch <- key:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// Abort aborts the stage's current verification, if it still runs.
func (m *Manager) Abort(ctx context.Context, project, stage, reason string) error {
	c, _, err := state.Get[current](ctx, m.kv, stageKey(project, stage))
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return m.abort(ctx, Key(project, stage, c.ID), reason)
}

// abort marks an unfinished verification as to be aborted; its owner
// notices at its next lease renewal, or at once when it is this replica.
func (m *Manager) abort(ctx context.Context, key, reason string) error {
	if _, done := m.applied.Load(key); done {
		return nil
	}
	_, _, err := state.Update(ctx, m.kv, key, func(r Record, exists bool) (Record, error) {
		if !exists || r.done() || r.AbortRequested {
			return r, state.ErrNoChange
		}
		r.AbortRequested, r.AbortReason = true, reason
		return r, nil
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	cancel := m.running[key]
	m.mu.Unlock()
	if cancel != nil {
		cancel(analysis.ErrAborted)
	}
	return nil
}

// watchAborts cancels local verifications as soon as an abort is asked
// for on any replica (the lease renewal would notice it too, later).
func (m *Manager) watchAborts(ctx context.Context) {
	w, err := m.kv.Watch(ctx, recordPrefix+".>", jetstream.UpdatesOnly())
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("watch verifications (aborts wait for lease renewals)", "err", err)
		}
		return
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			m.mu.Lock()
			cancel := m.running[e.Key()]
			m.mu.Unlock()
			if cancel == nil {
				continue
			}
			var r Record
			if json.Unmarshal(e.Value(), &r) == nil && r.AbortRequested && !r.done() && r.Holder == m.opts.ReplicaID {
				cancel(analysis.ErrAborted)
			}
		}
	}
}

// HealthChanged wakes the verifications waiting for the stage's health.
func (m *Manager) HealthChanged(project, stage string) {
	key := state.Key(project, stage)
	m.mu.Lock()
	defer m.mu.Unlock()
	if ch, ok := m.signals[key]; ok {
		close(ch)
		delete(m.signals, key)
	}
}

func (m *Manager) signal(project, stage string) <-chan struct{} {
	key := state.Key(project, stage)
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, ok := m.signals[key]
	if !ok {
		ch = make(chan struct{})
		m.signals[key] = ch
	}
	return ch
}

// scan claims the records whose lease lapsed (and this replica's own, after
// a restart) and deletes old finished ones. It returns the keys claimed.
func (m *Manager) scan(ctx context.Context) []string {
	keys, err := state.Keys(ctx, m.kv, recordPrefix+".>")
	if err != nil {
		if ctx.Err() == nil {
			m.log.Warn("scan verifications", "err", err)
		}
		return nil
	}
	now := m.now()
	var claimed []string
	for _, key := range keys {
		if v, done := m.applied.Load(key); done {
			if now.Sub(v.(time.Time)) > m.opts.Retain {
				_ = state.Delete(ctx, m.kv, key, 0)
				m.applied.Delete(key)
			}
			continue
		}
		m.mu.Lock()
		_, local := m.running[key]
		m.mu.Unlock()
		if local {
			continue
		}
		r, rev, err := state.Get[Record](ctx, m.kv, key)
		if err != nil {
			continue
		}
		if r.Applied {
			finished := r.CreatedAt
			if r.FinishedAt != nil {
				finished = *r.FinishedAt
			}
			if now.Sub(finished) > m.opts.Retain {
				_ = state.Delete(ctx, m.kv, key, rev)
			} else {
				m.applied.Store(key, finished)
			}
			continue
		}
		if r.Holder != m.opts.ReplicaID && r.Live(now) {
			continue
		}
		if _, err := m.claim(ctx, key); err == nil {
			claimed = append(claimed, key)
		} else if !errors.Is(err, lease.ErrHeld) && !errors.Is(err, errApplied) && ctx.Err() == nil {
			m.log.Warn("claim verification", "key", key, "err", err)
		}
	}
	return claimed
}

// errApplied: the record is done and applied; nothing to claim.
var errApplied = errors.New("verification applied")

// claim takes a record whose lease lapsed (or that an earlier run of this
// replica held) with a new token.
func (m *Manager) claim(ctx context.Context, key string) (Record, error) {
	var g lease.Grant
	r, _, err := state.UpdateRev(ctx, m.kv, key, func(r Record, rev uint64) (Record, error) {
		if rev == 0 || r.Applied {
			return r, errApplied
		}
		if r.Holder != m.opts.ReplicaID {
			r.Attempts++
		}
		var err error
		g, err = r.Take(m.opts.ReplicaID, rev, m.opts.LeaseTTL, m.now())
		return r, err
	})
	if ctx.Err() == nil && !errors.Is(err, errApplied) {
		m.opts.Renewals.Record(err)
	}
	if err == nil {
		m.setGrant(key, g)
	}
	return r, err
}

// renew extends this replica's lease on key; it reports a lost lease and
// whether an abort was asked for.
func (m *Manager) renew(ctx context.Context, key string) (Record, error) {
	mine, _ := m.grant(key)
	var g lease.Grant
	r, _, err := state.Update(ctx, m.kv, key, func(r Record, exists bool) (Record, error) {
		var err error
		g, err = r.Renew(mine, m.opts.LeaseTTL, m.now())
		return r, err
	})
	if ctx.Err() == nil {
		m.opts.Renewals.Record(err)
	}
	if err == nil {
		m.setGrant(key, g)
	}
	return r, err
}

// update changes this replica's record under its grant (errLostLease when
// the grant is no longer the record's).
func (m *Manager) update(ctx context.Context, key string, fn func(r *Record) error) (Record, error) {
	g, _ := m.grant(key)
	r, _, err := state.Update(ctx, m.kv, key, func(r Record, exists bool) (Record, error) {
		if err := r.Check(g); err != nil {
			return r, err
		}
		if err := fn(&r); err != nil {
			return r, err
		}
		return r, nil
	})
	return r, err
}

// keepLease renews the lease until ctx ends, cancelling work when the
// lease is lost or an abort is asked for.
func (m *Manager) keepLease(ctx context.Context, key string, cancel context.CancelCauseFunc) {
	t := time.NewTicker(m.opts.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r, err := m.renew(ctx, key)
		switch {
		case errors.Is(err, errLostLease):
			cancel(errLostLease)
			return
		case err != nil:
			continue // NATS trouble: try again; the lease still runs
		case r.AbortRequested && !r.done():
			cancel(analysis.ErrAborted)
		}
	}
}

// run takes one claimed record to its end: verify, finish, apply. base
// outlives aborts (it is the Manager's context); work is cancelled by an
// abort or a lost lease.
func (m *Manager) run(base, work context.Context, key string) {
	rec, _, err := state.Get[Record](base, m.kv, key)
	g, held := m.grant(key)
	if err != nil || !held || !rec.Held(g) {
		return
	}
	// secrets learns every secret value the run resolves (AnalysisTemplate
	// arguments from Secrets); the outcome and the log pass through it.
	secrets := redact.New()
	log := secrets.Logger(m.log).With("project", rec.Project, "stage", rec.Stage, "verification", rec.ID)
	defer m.setGrant(key, lease.Grant{})
	// The run continues the trace of the event that began it.
	base, span := events.StartSpan(events.WithTraceParent(base, rec.TraceParent), "run verification")
	defer span.End()
	lease, stopLease := context.WithCancel(base)
	defer stopLease()
	go m.keepLease(lease, key, func(cause error) {
		m.mu.Lock()
		cancel := m.running[key]
		m.mu.Unlock()
		if cancel != nil {
			cancel(cause)
		}
	})
	if !rec.done() {
		out := m.verify(base, work, &rec, log, secrets)
		if out == nil {
			if base.Err() == nil {
				log.Info("verification left to another replica", "cause", context.Cause(work))
			}
			return
		}
		out = out.redacted(secrets)
		rec, err = m.update(base, key, func(r *Record) error {
			if r.done() {
				return state.ErrNoChange
			}
			finished := m.now()
			r.Phase, r.Message, r.Summary, r.FinishedAt = out.Phase, out.Message, out.Summary, &finished
			if out.Result != nil {
				r.Result = out.Result
			}
			if r.StartedAt == nil {
				r.StartedAt = &finished
			}
			return nil
		})
		if err != nil {
			if base.Err() == nil {
				log.Warn("record verification outcome", "err", err)
			}
			return
		}
		log.Info("verification finished", "phase", rec.Phase, "message", rec.Message)
	}
	if err := m.apply(base, key, &rec); err != nil && base.Err() == nil {
		log.Warn("apply verification outcome (will retry)", "err", err)
	}
}

// outcome is how a verification ended.
type outcome struct {
	Phase   analysis.Phase
	Message string
	Summary string
	Result  *analysis.Result
}

// redacted returns the outcome with the secrets hidden from its message,
// summary and result (measurement values and messages: a web metric's URL
// in an error, a response that echoes a token).
func (o *outcome) redacted(secrets *redact.Redactor) *outcome {
	out := *o
	out.Message = secrets.String(o.Message)
	out.Summary = secrets.String(o.Summary)
	if o.Result != nil {
		res, err := redact.JSON(secrets, *o.Result)
		if err != nil {
			res = analysis.Result{Phase: o.Result.Phase, Message: out.Message, StartedAt: o.Result.StartedAt, FinishedAt: o.Result.FinishedAt}
		}
		out.Result = &res
		out.Summary = res.Summary()
	}
	return &out
}

// verify waits for health and runs the analysis. It returns nil when work
// ended for another reason than an abort (shutdown, lost lease).
func (m *Manager) verify(base, work context.Context, rec *Record, log *slog.Logger, secrets *redact.Redactor) *outcome {
	aborted := func() *outcome {
		reason := rec.AbortReason
		if r, _, err := state.Get[Record](base, m.kv, Key(rec.Project, rec.Stage, rec.ID)); err == nil && r.AbortReason != "" {
			reason = r.AbortReason
		}
		if reason == "" {
			reason = "aborted"
		}
		return &outcome{Phase: analysis.PhaseAborted, Message: reason}
	}
	if rec.AbortRequested {
		return aborted()
	}
	stage, _, err := state.GetAs[*model.Stage](work, m.store, rec.Project, model.KindStage, rec.Stage)
	if err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return &outcome{Phase: analysis.PhaseError, Message: fmt.Sprintf("stage %q not found", rec.Stage)}
		}
		if work.Err() != nil {
			return m.ended(work, aborted)
		}
		return &outcome{Phase: analysis.PhaseError, Message: fmt.Sprintf("read stage: %v", err)}
	}
	if out := m.waitHealthy(work, rec); out != nil {
		return out
	}
	if work.Err() != nil {
		return m.ended(work, aborted)
	}
	v := stage.Spec.Verification
	if v == nil || len(v.AnalysisTemplates) == 0 {
		return &outcome{Phase: analysis.PhaseSuccessful, Message: "stage is healthy and has no verification"}
	}
	if err := m.markRunning(base, rec); err != nil {
		if errors.Is(err, errLostLease) {
			return nil
		}
		log.Warn("mark verification running", "err", err)
	}
	spec, err := m.buildSpec(work, rec, stage, secrets)
	if err != nil {
		if work.Err() != nil {
			return m.ended(work, aborted)
		}
		return &outcome{Phase: analysis.PhaseError, Message: err.Error()}
	}
	select {
	case m.sem <- struct{}{}:
		defer func() { <-m.sem }()
	case <-work.Done():
		return m.ended(work, aborted)
	}
	var labels map[string]string
	if v.AnalysisRunMetadata != nil {
		labels = v.AnalysisRunMetadata.Labels
	}
	// Go on from the progress saved by an earlier owner, saving every
	// measurement as it is taken.
	var prev *analysis.Result
	if rec.Result != nil && rec.Phase == analysis.PhaseRunning {
		prev = rec.Result
		log.Info("continuing verification", "measurements", measurements(prev), "attempt", rec.Attempts)
	}
	key := Key(rec.Project, rec.Stage, rec.ID)
	save := func(progress *analysis.Result) {
		if _, err := m.update(base, key, func(r *Record) error {
			if r.done() {
				return state.ErrNoChange
			}
			// Measurements are redacted as they are taken (RunInfo.Redact);
			// the whole progress is redacted again before it is stored.
			if red, err := redact.JSON(secrets, *progress); err == nil {
				progress = &red
			} else {
				return err
			}
			r.Result = progress
			return nil
		}); err != nil && base.Err() == nil {
			log.Warn("save verification progress", "err", err)
		}
	}
	res, err := m.engine.Continue(work, analysis.RunInfo{Name: rec.ID, Namespace: rec.Project, Labels: labels, Redact: secrets.String, Secret: m.secretLookup(rec.Project, secrets)}, spec, prev, save)
	if err != nil {
		return nil
	}
	out := &outcome{Phase: res.Phase, Message: res.Message, Summary: res.Summary(), Result: res}
	if res.Phase == analysis.PhaseAborted {
		a := aborted()
		out.Message = a.Message
	}
	return out
}

// measurements counts the measurements of a run's progress.
func measurements(r *analysis.Result) int {
	n := 0
	for _, m := range r.Metrics {
		n += m.Taken
	}
	return n
}

func (m *Manager) ended(work context.Context, aborted func() *outcome) *outcome {
	if errors.Is(context.Cause(work), analysis.ErrAborted) {
		return aborted()
	}
	return nil
}

// waitHealthy returns nil once the stage is healthy, an outcome when the
// verification cannot go on (superseded, timed out), nil too when work
// ends.
func (m *Manager) waitHealthy(work context.Context, rec *Record) *outcome {
	var deadline <-chan time.Time
	if m.opts.HealthTimeout > 0 {
		t := time.NewTimer(m.opts.HealthTimeout)
		defer t.Stop()
		deadline = t.C
	}
	for {
		wake := m.signal(rec.Project, rec.Stage)
		st, _, err := state.Get[model.StageStatus](work, m.store.KV(state.Stages), state.Key(rec.Project, rec.Stage))
		if err == nil || errors.Is(err, state.ErrNotFound) {
			if cur := collection(&st, ""); len(cur) > 0 && !slices.Contains(cur, rec.Freight[0]) {
				return &outcome{Phase: analysis.PhaseAborted, Message: fmt.Sprintf("superseded: stage no longer uses freight %s", rec.Freight[0])}
			}
			if healthy(&st) {
				return nil
			}
		}
		select {
		case <-work.Done():
			return nil
		case <-deadline:
			msg := "unknown"
			if st.Health != nil {
				msg = string(st.Health.Status)
				if len(st.Health.Issues) > 0 {
					msg += ": " + strings.Join(st.Health.Issues, "; ")
				}
			}
			return &outcome{Phase: analysis.PhaseError, Message: fmt.Sprintf("stage not healthy after %s (%s)", m.opts.HealthTimeout, msg)}
		case <-wake:
		case <-time.After(m.opts.HealthPoll):
		}
	}
}

// healthy: Healthy or NotApplicable; no health recorded counts as healthy
// (a stage without health checks, as in Kargo).
func healthy(s *model.StageStatus) bool {
	if s.Health == nil {
		return true
	}
	switch s.Health.Status {
	case model.HealthStateHealthy, model.HealthStateNotApplicable, "":
		return true
	}
	return false
}

// collection returns the names of the stage's current freight, with
// freight first; just freight when the stage's history does not hold it.
func collection(s *model.StageStatus, freight string) []string {
	var names []string
	if len(s.FreightHistory) > 0 {
		for _, ref := range s.FreightHistory[0].Freight {
			names = append(names, ref.Name)
		}
		slices.Sort(names)
	}
	if freight == "" {
		return names
	}
	if !slices.Contains(names, freight) {
		return []string{freight}
	}
	out := []string{freight}
	for _, n := range names {
		if n != freight {
			out = append(out, n)
		}
	}
	return out
}

func (m *Manager) markRunning(ctx context.Context, rec *Record) error {
	now := m.now()
	r, err := m.update(ctx, Key(rec.Project, rec.Stage, rec.ID), func(r *Record) error {
		if r.Phase == analysis.PhaseRunning && r.StartedAt != nil {
			return state.ErrNoChange // resumed: started before
		}
		r.Phase, r.StartedAt = analysis.PhaseRunning, &now
		return nil
	})
	if err != nil {
		return err
	}
	*rec = r
	if err := m.writeHistory(ctx, rec); err != nil {
		return err
	}
	_, err = m.bus.PublishWithID(ctx, "VerificationStarted."+rec.Project+"."+rec.Stage+"."+rec.ID, rec.Project,
		events.Ref{Kind: model.KindStage, Name: rec.Stage},
		events.VerificationStarted{Stage: rec.Stage, Freight: rec.Freight[0], Verification: rec.ID})
	return err
}

// buildSpec loads the Stage's templates and resolves their arguments,
// telling secrets every value read from a Secret.
func (m *Manager) buildSpec(ctx context.Context, rec *Record, stage *model.Stage, secrets *redact.Redactor) (*analysis.Spec, error) {
	v := stage.Spec.Verification
	var templates []analysis.Template
	for _, ref := range v.AnalysisTemplates {
		switch ref.Kind {
		case "", model.KindAnalysisTemplate, model.KindClusterAnalysisTemplate:
		default:
			return nil, fmt.Errorf("analysis template kind %q is not AnalysisTemplate or ClusterAnalysisTemplate", ref.Kind)
		}
		cluster := ref.Kind == model.KindClusterAnalysisTemplate
		spec, err := m.template(ctx, rec.Project, ref.Name, cluster, nil)
		if err != nil {
			return nil, err
		}
		name := ref.Name
		if cluster {
			name = model.KindClusterAnalysisTemplate + "/" + ref.Name
		}
		templates = append(templates, analysis.Template{Name: name, Spec: spec})
	}
	var freight []*model.Freight
	for _, name := range rec.Freight {
		if f, _, err := state.Get[model.Freight](ctx, m.store.KV(state.Freight), state.Key(rec.Project, name)); err == nil {
			freight = append(freight, &f)
		}
	}
	env, err := argEnv(ctx, rec.Project, stage, rec.Promotion, freight, expressions.StoreLookup{Store: m.store})
	if err != nil {
		return nil, err
	}
	args, err := evalArgs(v.Args, env)
	if err != nil {
		return nil, err
	}
	labels, annotations := runMetadata(rec, v)
	return analysis.BuildFor(ctx, templates, args, m.secretLookup(rec.Project, secrets), analysis.MetaFields(rec.ID, rec.Project, labels, annotations))
}

// runMetadata is the labels and annotations of a verification's run (the
// AnalysisRun Kargo would create): the Stage's analysisRunMetadata and
// Kargo's labels naming the stage, promotion and freight.
func runMetadata(rec *Record, v *model.Verification) (labels, annotations map[string]string) {
	labels, annotations = map[string]string{}, map[string]string{}
	if v.AnalysisRunMetadata != nil {
		maps.Copy(labels, v.AnalysisRunMetadata.Labels)
		maps.Copy(annotations, v.AnalysisRunMetadata.Annotations)
	}
	labels["kargo.akuity.io/stage"] = rec.Stage
	if rec.Promotion != "" {
		labels["kargo.akuity.io/promotion"] = rec.Promotion
	}
	if len(rec.Freight) > 0 {
		labels["kargo.akuity.io/freight"] = rec.Freight[0]
	}
	return labels, annotations
}

// secretLookup reads keys of the project's Secrets, telling secrets every
// value read.
func (m *Manager) secretLookup(project string, secrets *redact.Redactor) analysis.SecretLookup {
	return func(ctx context.Context, name, key string) (string, error) {
		s, _, err := state.GetAs[*model.Secret](ctx, m.store, project, model.KindSecret, name)
		if errors.Is(err, state.ErrNotFound) {
			return "", fmt.Errorf("secret %q not found: %w", name, analysis.ErrNoSecret)
		}
		if err != nil {
			return "", fmt.Errorf("secret %q: %w", name, err)
		}
		v, ok := s.Value(key)
		if !ok {
			return "", fmt.Errorf("secret %q has no key %q: %w", name, key, analysis.ErrNoSecret)
		}
		secrets.Add(string(v))
		return string(v), nil
	}
}

// maxTemplateDepth bounds how deep templates include templates.
const maxTemplateDepth = 10

// template loads an AnalysisTemplate (a ClusterAnalysisTemplate when
// cluster) with the templates it includes (spec.templates) folded in, as
// Argo Rollouts flattens them: their metrics, args, dry-run and retention
// rules are added to its own. path is the chain of includes so far.
func (m *Manager) template(ctx context.Context, project, name string, cluster bool, path []string) (model.AnalysisTemplateSpec, error) {
	kind, where := model.KindAnalysisTemplate, project
	if cluster {
		kind, where = model.KindClusterAnalysisTemplate, ""
	}
	id := kind + "/" + name
	if slices.Contains(path, id) || len(path) >= maxTemplateDepth {
		return model.AnalysisTemplateSpec{}, fmt.Errorf("analysis templates include each other too deeply: %s", strings.Join(append(path, id), " -> "))
	}
	var spec model.AnalysisTemplateSpec
	if cluster {
		t, _, err := state.GetAs[*model.ClusterAnalysisTemplate](ctx, m.store, where, kind, name)
		if err != nil {
			return spec, fmt.Errorf("%s %q: %w", kind, name, err)
		}
		spec = t.Spec
	} else {
		t, _, err := state.GetAs[*model.AnalysisTemplate](ctx, m.store, where, kind, name)
		if err != nil {
			return spec, fmt.Errorf("%s %q: %w", kind, name, err)
		}
		spec = t.Spec
	}
	includes := spec.Templates
	spec.Templates = nil
	for _, inc := range includes {
		sub, err := m.template(ctx, project, inc.TemplateName, inc.ClusterScope, append(path, id))
		if err != nil {
			return spec, err
		}
		spec.Metrics = append(spec.Metrics, sub.Metrics...)
		spec.Args = append(spec.Args, sub.Args...)
		spec.DryRun = append(spec.DryRun, sub.DryRun...)
		spec.MeasurementRetention = append(spec.MeasurementRetention, sub.MeasurementRetention...)
	}
	return spec, nil
}
