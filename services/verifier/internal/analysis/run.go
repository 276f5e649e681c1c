package analysis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// ErrAborted is the cause to cancel a run's context with to abort it: the
// run then ends in phase Aborted instead of returning an error.
var ErrAborted = errors.New("verification aborted")

// Provider takes measurements of one kind. Implementations must be safe for
// concurrent use.
type Provider interface {
	// Measure takes one measurement. An error makes the measurement's phase
	// Error; the engine adds the template, metric and measurement to its
	// message.
	Measure(ctx context.Context, req Request) (Value, error)
}

// Request is one measurement to take.
type Request struct {
	Metric *Metric
	// Index counts the metric's measurements from 1.
	Index int
	// Run names the run, for providers that create objects (jobs).
	Run RunInfo
}

// RunInfo identifies a run.
type RunInfo struct {
	Name      string
	Namespace string
	Labels    map[string]string
	// Redact hides secret values in each measurement's value and message
	// before anything (messages, summaries) is derived from them; nil
	// hides nothing.
	Redact func(string) string
	// Secret returns the value of key in the run's project Secret name,
	// for providers whose credentials live in a Secret (datadog,
	// newRelic, influxdb, wavefront); the value is redacted from
	// measurements. nil: no Secrets are available.
	Secret SecretLookup
}

// Value is what a provider measured.
type Value struct {
	// Result is what conditions see as `result`.
	Result any
	// Text is the value as recorded; JSON of Result when empty.
	Text string
	// Phase, when set, is the measurement's phase as the provider decided
	// it (a job's success); conditions are then not evaluated.
	Phase Phase
}

// Measurement is one measurement of a metric.
type Measurement struct {
	Phase       Phase     `json:"phase"`
	Value       string    `json:"value,omitempty"`
	Message     string    `json:"message,omitempty"`
	ScheduledAt time.Time `json:"scheduledAt"`
	StartedAt   time.Time `json:"startedAt"`
	FinishedAt  time.Time `json:"finishedAt"`
}

// MetricResult is the outcome of one metric, with its latest measurements.
type MetricResult struct {
	Name               string        `json:"name"`
	Template           string        `json:"template"`
	Phase              Phase         `json:"phase"`
	Message            string        `json:"message,omitempty"`
	DryRun             bool          `json:"dryRun,omitempty"`
	Count              int           `json:"count"`
	Successful         int           `json:"successful"`
	Failed             int           `json:"failed"`
	Inconclusive       int           `json:"inconclusive"`
	Error              int           `json:"error"`
	ConsecutiveError   int           `json:"consecutiveError"`
	ConsecutiveSuccess int           `json:"consecutiveSuccess"`
	Measurements       []Measurement `json:"measurements,omitempty"`
	// Taken counts the measurements taken (errors included); a resumed
	// run goes on with the next one.
	Taken int `json:"taken,omitempty"`
}

// Result is the outcome of a run.
type Result struct {
	Phase      Phase          `json:"phase"`
	Message    string         `json:"message,omitempty"`
	Metrics    []MetricResult `json:"metrics,omitempty"`
	StartedAt  time.Time      `json:"startedAt"`
	FinishedAt time.Time      `json:"finishedAt"`
}

// Summary describes the run's metrics in one line each.
func (r *Result) Summary() string {
	var b strings.Builder
	for i, m := range r.Metrics {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s/%s: %s", m.Template, m.Name, m.Phase)
		if m.DryRun {
			b.WriteString(" (dry run)")
		}
		fmt.Fprintf(&b, " (%d successful, %d failed, %d inconclusive, %d error", m.Successful, m.Failed, m.Inconclusive, m.Error)
		if n := len(m.Measurements); n > 0 && m.Measurements[n-1].Value != "" {
			fmt.Fprintf(&b, ", last %s", truncate(m.Measurements[n-1].Value, 80))
		}
		b.WriteString(")")
	}
	return b.String()
}

// Engine runs analyses. Its zero value is not usable: set Providers.
type Engine struct {
	// Providers by provider name ("web", "prometheus", "job", …).
	Providers map[string]Provider
	// Clock defaults to the wall clock.
	Clock Clock
	// ErrorRetryInterval is the wait after a measurement errors, shortened
	// to the metric's interval when that is shorter (Argo: 10s).
	ErrorRetryInterval time.Duration
}

// DefaultErrorRetryInterval is Argo Rollouts' wait after an error.
const DefaultErrorRetryInterval = 10 * time.Second

// ErrTerminating is the cause a run cancels its other metrics' contexts
// with once one metric decided the run (Argo's terminating run).
var ErrTerminating = errors.New("run terminating")

// Run runs spec until every metric is complete. Cancelling ctx with cause
// ErrAborted aborts the run (phase Aborted); any other end of ctx returns
// its error, for the run was not finished. Measurements of the metrics run
// concurrently; once a metric that is not a dry run ends Failed, Error or
// Inconclusive, the others stop and are assessed as Argo assesses a
// terminating run.
func (e *Engine) Run(ctx context.Context, run RunInfo, spec *Spec) (*Result, error) {
	return e.Continue(ctx, run, spec, nil, nil)
}

// Continue is Run going on from prev, the progress of an interrupted run
// of the same spec (nil: from the start): metrics already complete stay
// as they are, the others keep their counters and measurements and take
// their next measurement when it is due (at once when overdue). record,
// when set, is called with a copy of the progress after every
// measurement, so it can be saved as it is taken.
func (e *Engine) Continue(ctx context.Context, run RunInfo, spec *Spec, prev *Result, record func(*Result)) (*Result, error) {
	clock := e.Clock
	if clock == nil {
		clock = RealClock{}
	}
	res := &Result{StartedAt: clock.Now(), Metrics: make([]MetricResult, len(spec.Metrics))}
	if prev != nil && !prev.StartedAt.IsZero() {
		res.StartedAt = prev.StartedAt
	}
	var mu sync.Mutex // guards res.Metrics while metrics run
	progress := func(i int, mr MetricResult) {
		mu.Lock()
		defer mu.Unlock()
		res.Metrics[i] = mr
		if record != nil {
			snap := *res
			snap.Metrics = make([]MetricResult, len(res.Metrics))
			for j, m := range res.Metrics {
				m.Measurements = append([]Measurement(nil), m.Measurements...)
				snap.Metrics[j] = m
			}
			record(&snap)
		}
	}
	for i := range spec.Metrics {
		res.Metrics[i] = MetricResult{Name: spec.Metrics[i].Name, Template: spec.Metrics[i].Template, Phase: PhasePending, DryRun: spec.Metrics[i].DryRun}
		if prev != nil {
			for _, pm := range prev.Metrics {
				if pm.Name == spec.Metrics[i].Name && pm.Template == spec.Metrics[i].Template {
					res.Metrics[i] = pm
				}
			}
		}
	}
	for i := range spec.Metrics {
		m := &spec.Metrics[i]
		if e.Providers[m.Provider] == nil {
			res.Phase = PhaseError
			res.Message = fmt.Sprintf("template %q, metric %q: provider %q is not supported", m.Template, m.Name, m.Provider)
			res.FinishedAt = clock.Now()
			return res, nil
		}
	}
	mctx, terminate := context.WithCancelCause(ctx)
	defer terminate(nil)
	var wg sync.WaitGroup
	var once sync.Once
	for i := range spec.Metrics {
		mu.Lock()
		from := res.Metrics[i]
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			mr := from
			if !from.Phase.Completed() {
				mr = e.runMetric(mctx, clock, run, &spec.Metrics[i], from, func(mr MetricResult) { progress(i, mr) })
			}
			mu.Lock()
			res.Metrics[i] = mr
			mu.Unlock()
			if !mr.DryRun && (mr.Phase == PhaseFailed || mr.Phase == PhaseError || mr.Phase == PhaseInconclusive) {
				once.Do(func() { terminate(ErrTerminating) })
			}
		}()
	}
	wg.Wait()
	res.FinishedAt = clock.Now()
	if ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), ErrAborted) {
			res.Phase = PhaseAborted
			res.Message = "run aborted"
			for i := range res.Metrics {
				if !res.Metrics[i].Phase.Completed() {
					res.Metrics[i].Phase = PhaseAborted
				}
			}
			return res, nil
		}
		return res, context.Cause(ctx)
	}
	res.Phase, res.Message = assessRun(res.Metrics)
	return res, nil
}

// assessRun reduces the metrics' phases to the run's, the worst of those
// that are not dry runs.
func assessRun(metrics []MetricResult) (Phase, string) {
	phase := PhaseSuccessful
	var message string
	var dry []string
	for _, m := range metrics {
		if m.DryRun {
			if m.Phase != PhaseSuccessful {
				dry = append(dry, fmt.Sprintf("dry-run metric %q assessed %s", m.Name, m.Phase))
			}
			continue
		}
		if m.Phase.worse(phase) {
			phase = m.Phase
			message = fmt.Sprintf("metric %q assessed %s due to %s", m.Name, m.Phase, m.Message)
		}
	}
	if len(dry) > 0 {
		if message != "" {
			message += "; "
		}
		message += strings.Join(dry, "; ")
	}
	return phase, message
}

// runMetric takes m's measurements from r's state on (a fresh MetricResult
// or an interrupted run's), calling progress after each.
func (e *Engine) runMetric(ctx context.Context, clock Clock, run RunInfo, m *Metric, r MetricResult, progress func(MetricResult)) MetricResult {
	r.Name, r.Template, r.DryRun = m.Name, m.Template, m.DryRun
	provider := e.Providers[m.Provider]
	retry := e.ErrorRetryInterval
	if retry <= 0 {
		retry = DefaultErrorRetryInterval
	}
	next := clock.Now().Add(m.InitialDelay)
	if n := len(r.Measurements); n > 0 {
		// Resumed: the next measurement is due one interval after the
		// last one (at once when that is past).
		last := r.Measurements[n-1]
		wait := m.Interval
		if last.Phase == PhaseError && (wait == 0 || wait > retry) {
			wait = retry
		}
		next = last.ScheduledAt.Add(wait)
		if now := clock.Now(); next.Before(now) {
			next = now
		}
	}
	for {
		if err := clock.Sleep(ctx, next.Sub(clock.Now())); err != nil {
			break
		}
		r.Taken++
		meas := Measurement{ScheduledAt: next, StartedAt: clock.Now()}
		v, err := provider.Measure(ctx, Request{Metric: m, Index: r.Taken, Run: run})
		if ctx.Err() != nil {
			r.Taken-- // cut short by the run ending: not a measurement
			break
		}
		meas.FinishedAt = clock.Now()
		if err == nil {
			meas.Value = v.Text
			if meas.Value == "" && v.Result != nil {
				meas.Value = text(v.Result)
			}
			meas.Phase = v.Phase
			if meas.Phase == "" {
				meas.Phase, err = Evaluate(v.Result, m.SuccessCondition, m.FailureCondition)
			}
		}
		if err != nil {
			meas.Phase = PhaseError
			meas.Message = fmt.Sprintf("template %q, metric %q, measurement %d: %v", m.Template, m.Name, r.Taken, err)
		}
		if run.Redact != nil {
			meas.Value, meas.Message = run.Redact(meas.Value), run.Redact(meas.Message)
		}
		r.record(meas, m.Retention)
		phase, reason := assessMetric(m, &r, false)
		if phase.Completed() {
			r.Phase, r.Message = phase, reason
			progress(r)
			return r
		}
		r.Phase = phase
		progress(r)
		wait := m.Interval
		if meas.Phase == PhaseError && (wait == 0 || wait > retry) {
			wait = retry
		}
		next = meas.ScheduledAt.Add(wait)
		if now := clock.Now(); next.Before(now) {
			next = now
		}
	}
	r.Phase, r.Message = assessMetric(m, &r, true)
	return r
}

func (r *MetricResult) record(meas Measurement, retention int) {
	switch meas.Phase {
	case PhaseSuccessful:
		r.Count++
		r.Successful++
		r.ConsecutiveSuccess++
		r.ConsecutiveError = 0
	case PhaseFailed:
		r.Count++
		r.Failed++
		r.ConsecutiveSuccess = 0
		r.ConsecutiveError = 0
	case PhaseInconclusive:
		r.Count++
		r.Inconclusive++
		r.ConsecutiveSuccess = 0
		r.ConsecutiveError = 0
	case PhaseError:
		r.Error++
		r.ConsecutiveError++
		r.ConsecutiveSuccess = 0
	}
	r.Measurements = append(r.Measurements, meas)
	if retention > 0 && len(r.Measurements) > retention {
		r.Measurements = append(r.Measurements[:0:0], r.Measurements[len(r.Measurements)-retention:]...)
	}
}

// assessMetric decides a metric's phase from its counters, following Argo
// Rollouts: limits first (failures, inconclusive, consecutive errors), then
// consecutive successes, then the count; a terminating run ends a metric
// still running as Successful.
func assessMetric(m *Metric, r *MetricResult, terminating bool) (Phase, string) {
	if r.Taken == 0 {
		if terminating {
			return PhaseSuccessful, "the run ended before its first measurement"
		}
		return PhasePending, ""
	}
	if m.FailureLimit >= 0 && r.Failed > m.FailureLimit {
		return PhaseFailed, fmt.Sprintf("failed (%d) > failureLimit (%d)%s", r.Failed, m.FailureLimit, r.last())
	}
	if m.InconclusiveLimit >= 0 && r.Inconclusive > m.InconclusiveLimit {
		return PhaseInconclusive, fmt.Sprintf("inconclusive (%d) > inconclusiveLimit (%d)%s", r.Inconclusive, m.InconclusiveLimit, r.last())
	}
	if r.ConsecutiveError > m.ConsecutiveErrorLimit {
		return PhaseError, fmt.Sprintf("consecutiveErrors (%d) > consecutiveErrorLimit (%d)%s", r.ConsecutiveError, m.ConsecutiveErrorLimit, r.last())
	}
	if m.ConsecutiveSuccessLimit > 0 && r.ConsecutiveSuccess >= m.ConsecutiveSuccessLimit {
		return PhaseSuccessful, fmt.Sprintf("consecutiveSuccesses (%d) >= consecutiveSuccessLimit (%d)", r.ConsecutiveSuccess, m.ConsecutiveSuccessLimit)
	}
	if count := m.count(); count > 0 && r.Count >= count {
		failureApplicable := m.FailureLimit >= 0
		successApplicable := m.ConsecutiveSuccessLimit > 0
		switch {
		case failureApplicable && successApplicable:
			return PhaseInconclusive, fmt.Sprintf("count (%d) reached with consecutiveSuccessLimit (%d) not reached and failureLimit (%d) not exceeded", count, m.ConsecutiveSuccessLimit, m.FailureLimit)
		case successApplicable:
			return PhaseFailed, fmt.Sprintf("count (%d) reached with consecutiveSuccessLimit (%d) not reached", count, m.ConsecutiveSuccessLimit)
		}
		return PhaseSuccessful, fmt.Sprintf("count (%d) reached", count)
	}
	if terminating {
		return PhaseSuccessful, "the run ended while the metric was running"
	}
	return PhaseRunning, ""
}

// last describes the latest measurement for a metric's message.
func (r *MetricResult) last() string {
	if len(r.Measurements) == 0 {
		return ""
	}
	m := r.Measurements[len(r.Measurements)-1]
	switch {
	case m.Message != "":
		return ": " + m.Message
	case m.Value != "":
		return ": last value " + truncate(m.Value, 200)
	}
	return ""
}

func text(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
