package analysis

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// instantClock never waits: each Sleep moves its time forward instead.
type instantClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *instantClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *instantClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	c.mu.Unlock()
	return nil
}

// step is one scripted measurement: a value or an error.
type step struct {
	result any
	err    error
}

// script is a Provider giving each metric its scripted measurements in
// turn; past the end of a script it blocks until the run ends.
type script struct {
	mu    sync.Mutex
	steps map[string][]step
	calls map[string]int
}

func (s *script) Measure(ctx context.Context, req Request) (Value, error) {
	s.mu.Lock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	i := s.calls[req.Metric.Name]
	s.calls[req.Metric.Name]++
	steps := s.steps[req.Metric.Name]
	s.mu.Unlock()
	if i >= len(steps) {
		<-ctx.Done()
		return Value{}, ctx.Err()
	}
	return Value{Result: steps[i].result}, steps[i].err
}

func ios(n int) *model.IntOrString { return &model.IntOrString{IntVal: int64(n)} }

func metric(name string, mod func(*model.Metric)) model.Metric {
	m := model.Metric{Name: name, Provider: model.MetricProvider{Web: &model.WebMetric{URL: "http://x"}}}
	if mod != nil {
		mod(&m)
	}
	return m
}

func TestRun(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	tests := []struct {
		name      string
		metrics   []model.Metric
		dryRun    []model.DryRun
		steps     map[string][]step
		want      Phase
		wantMsg   string
		wantCount map[string]int // measurements taken per metric
	}{
		{
			name:    "no conditions: one successful measurement",
			metrics: []model.Metric{metric("m", nil)},
			steps:   map[string][]step{"m": {{result: 1.0}}},
			want:    PhaseSuccessful, wantCount: map[string]int{"m": 1},
		},
		{
			name:    "vector result passes",
			metrics: []model.Metric{metric("m", func(m *model.Metric) { m.SuccessCondition = "result[0] >= 0.95" })},
			steps:   map[string][]step{"m": {{result: []float64{0.97}}}},
			want:    PhaseSuccessful,
		},
		{
			name:    "success condition false with failureLimit 0 fails",
			metrics: []model.Metric{metric("m", func(m *model.Metric) { m.SuccessCondition = "result == true" })},
			steps:   map[string][]step{"m": {{result: false}}},
			want:    PhaseFailed, wantMsg: "failed (1) > failureLimit (0)",
		},
		{
			name: "failures within failureLimit over count succeed",
			metrics: []model.Metric{metric("m", func(m *model.Metric) {
				m.SuccessCondition, m.Count, m.Interval, m.FailureLimit = "result == 'ok'", ios(3), "1s", ios(1)
			})},
			steps: map[string][]step{"m": {{result: "ok"}, {result: "bad"}, {result: "ok"}}},
			want:  PhaseSuccessful, wantCount: map[string]int{"m": 3},
		},
		{
			name: "failures past failureLimit fail early",
			metrics: []model.Metric{metric("m", func(m *model.Metric) {
				m.SuccessCondition, m.Count, m.Interval, m.FailureLimit = "result == 'ok'", ios(5), "1s", ios(1)
			})},
			steps: map[string][]step{"m": {{result: "bad"}, {result: "bad"}, {result: "ok"}}},
			want:  PhaseFailed, wantCount: map[string]int{"m": 2},
		},
		{
			name: "failureCondition alone",
			metrics: []model.Metric{metric("m", func(m *model.Metric) {
				m.FailureCondition, m.Count, m.Interval = "result >= 10", ios(2), "1s"
			})},
			steps: map[string][]step{"m": {{result: 3.0}, {result: 12.0}}},
			want:  PhaseFailed,
		},
		{
			name: "neither condition holds: inconclusive",
			metrics: []model.Metric{metric("m", func(m *model.Metric) {
				m.SuccessCondition, m.FailureCondition = "result >= 0.9", "result < 0.5"
			})},
			steps: map[string][]step{"m": {{result: 0.7}}},
			want:  PhaseInconclusive, wantMsg: "inconclusive (1) > inconclusiveLimit (0)",
		},
		{
			name: "inconclusive within inconclusiveLimit",
			metrics: []model.Metric{metric("m", func(m *model.Metric) {
				m.SuccessCondition, m.FailureCondition = "result >= 0.9", "result < 0.5"
				m.Count, m.Interval, m.InconclusiveLimit = ios(2), "1s", ios(1)
			})},
			steps: map[string][]step{"m": {{result: 0.7}, {result: 0.95}}},
			want:  PhaseSuccessful,
		},
		{
			name: "consecutive errors past the limit: Error naming template, metric and measurement",
			metrics: []model.Metric{metric("m", func(m *model.Metric) {
				m.ConsecutiveErrorLimit = ios(2)
			})},
			steps:   map[string][]step{"m": {{err: boom}, {err: boom}, {err: boom}}},
			want:    PhaseError,
			wantMsg: `consecutiveErrors (3) > consecutiveErrorLimit (2): template "t", metric "m", measurement 3: boom`,
		},
		{
			name:      "errors do not count: retried until a real measurement",
			metrics:   []model.Metric{metric("m", nil)},
			steps:     map[string][]step{"m": {{err: boom}, {err: boom}, {result: 1.0}}},
			want:      PhaseSuccessful,
			wantCount: map[string]int{"m": 3},
		},
		{
			name: "condition that is not a bool is an error",
			metrics: []model.Metric{metric("m", func(m *model.Metric) {
				m.SuccessCondition, m.ConsecutiveErrorLimit = "result + 1", ios(0)
			})},
			steps:   map[string][]step{"m": {{result: 1.0}}},
			want:    PhaseError,
			wantMsg: "expected bool",
		},
		{
			name: "consecutiveSuccessLimit ends the metric early",
			metrics: []model.Metric{metric("m", func(m *model.Metric) {
				m.SuccessCondition, m.Count, m.Interval = "result", ios(6), "1s"
				m.FailureLimit, m.ConsecutiveSuccessLimit = ios(3), ios(2)
			})},
			steps: map[string][]step{"m": {{result: true}, {result: false}, {result: true}, {result: true}}},
			want:  PhaseSuccessful, wantCount: map[string]int{"m": 4},
		},
		{
			name: "consecutiveSuccessLimit not reached by count, no failureLimit: Failed",
			metrics: []model.Metric{metric("m", func(m *model.Metric) {
				m.SuccessCondition, m.Count, m.Interval = "result", ios(3), "1s"
				m.FailureLimit, m.ConsecutiveSuccessLimit = ios(-1), ios(3)
			})},
			steps: map[string][]step{"m": {{result: true}, {result: false}, {result: true}}},
			want:  PhaseFailed,
		},
		{
			name: "consecutiveSuccessLimit not reached, failureLimit not exceeded: Inconclusive",
			metrics: []model.Metric{metric("m", func(m *model.Metric) {
				m.SuccessCondition, m.Count, m.Interval = "result", ios(3), "1s"
				m.FailureLimit, m.ConsecutiveSuccessLimit = ios(2), ios(3)
			})},
			steps: map[string][]step{"m": {{result: true}, {result: false}, {result: true}}},
			want:  PhaseInconclusive,
		},
		{
			name: "failing dry-run metric does not fail the run",
			metrics: []model.Metric{
				metric("real", nil),
				metric("trial", func(m *model.Metric) { m.SuccessCondition = "false" }),
			},
			dryRun:  []model.DryRun{{MetricName: "tri.*"}},
			steps:   map[string][]step{"real": {{result: 1.0}}, "trial": {{result: 1.0}}},
			want:    PhaseSuccessful,
			wantMsg: `dry-run metric "trial" assessed Failed`,
		},
		{
			name: "a failed metric terminates an endless one, which counts as successful",
			metrics: []model.Metric{
				metric("endless", func(m *model.Metric) { m.Interval = "1s" }),
				metric("bad", func(m *model.Metric) { m.SuccessCondition, m.InitialDelay = "false", "5s" }),
			},
			steps: map[string][]step{"endless": {{result: 1.0}, {result: 1.0}}, "bad": {{result: 1.0}}},
			want:  PhaseFailed, wantMsg: `metric "bad" assessed Failed`,
		},
		{
			name: "args-free helpers: default, len, isNaN, asFloat",
			metrics: []model.Metric{
				metric("a", func(m *model.Metric) { m.SuccessCondition = "default(result, 0) == 0" }),
				metric("b", func(m *model.Metric) { m.SuccessCondition = "len(result) == 2 && result[1] > 1" }),
				metric("c", func(m *model.Metric) { m.SuccessCondition = "isNaN(result)" }),
				metric("d", func(m *model.Metric) { m.SuccessCondition = "asFloat(result) > 0.5 && asInt('3') == 3" }),
				metric("e", func(m *model.Metric) { m.SuccessCondition = "result.ok && result.rate >= 0.9" }),
			},
			steps: map[string][]step{
				"a": {{result: nil}}, "b": {{result: []float64{1, 2}}}, "c": {{result: math.NaN()}},
				"d": {{result: "0.75"}}, "e": {{result: map[string]any{"ok": true, "rate": 0.95}}},
			},
			want: PhaseSuccessful,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, err := Build(context.Background(), []Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: tt.metrics, DryRun: tt.dryRun}}}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			p := &script{steps: tt.steps}
			e := &Engine{Providers: map[string]Provider{"web": p}, Clock: &instantClock{now: time.Unix(0, 0)}}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := e.Run(ctx, RunInfo{Name: "r"}, spec)
			if err != nil {
				t.Fatal(err)
			}
			if res.Phase != tt.want {
				t.Fatalf("phase %s, want %s (%s; %s)", res.Phase, tt.want, res.Message, res.Summary())
			}
			if !strings.Contains(res.Message, tt.wantMsg) {
				t.Errorf("message %q does not contain %q", res.Message, tt.wantMsg)
			}
			for name, n := range tt.wantCount {
				if p.calls[name] != n {
					t.Errorf("metric %s: %d measurements, want %d", name, p.calls[name], n)
				}
			}
		})
	}
}

func TestRunInitialDelayAndInterval(t *testing.T) {
	t.Parallel()
	m := metric("m", func(m *model.Metric) { m.InitialDelay, m.Interval, m.Count = "30s", "10s", ios(3) })
	spec, err := Build(context.Background(), []Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{m}}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1000, 0)
	e := &Engine{Providers: map[string]Provider{"web": &script{steps: map[string][]step{"m": {{result: 1}, {result: 1}, {result: 1}}}}}, Clock: &instantClock{now: start}}
	res, err := e.Run(context.Background(), RunInfo{}, spec)
	if err != nil {
		t.Fatal(err)
	}
	var got []time.Duration
	for _, meas := range res.Metrics[0].Measurements {
		got = append(got, meas.ScheduledAt.Sub(start))
	}
	want := []time.Duration{30 * time.Second, 40 * time.Second, 50 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("scheduled at %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("scheduled at %v, want %v", got, want)
		}
	}
}

func TestRunAbort(t *testing.T) {
	t.Parallel()
	spec, err := Build(context.Background(), []Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{metric("m", nil)}}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &script{} // blocks on its first measurement
	e := &Engine{Providers: map[string]Provider{"web": p}, Clock: &instantClock{}}
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(10*time.Millisecond, func() { cancel(ErrAborted) })
	res, err := e.Run(ctx, RunInfo{}, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Phase != PhaseAborted {
		t.Fatalf("phase %s, want Aborted", res.Phase)
	}

	// Any other cancellation is not a result.
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel2)
	if _, err := e.Run(ctx2, RunInfo{}, spec); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestRunUnsupportedProvider(t *testing.T) {
	t.Parallel()
	m := model.Metric{Name: "dd", Provider: model.MetricProvider{Datadog: map[string]any{"query": "x"}}}
	spec, err := Build(context.Background(), []Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{m}}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := (&Engine{Providers: map[string]Provider{}}).Run(context.Background(), RunInfo{}, spec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Phase != PhaseError || !strings.Contains(res.Message, `provider "datadog" is not supported`) {
		t.Fatalf("got %s %q", res.Phase, res.Message)
	}
}

func TestBuildArgs(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	web := func(url string) model.MetricProvider {
		return model.MetricProvider{Web: &model.WebMetric{URL: url, Headers: []model.WebMetricHeader{{Key: "Authorization", Value: "Bearer {{ args.token }}"}}}}
	}
	secrets := func(_ context.Context, name, key string) (string, error) {
		if name == "creds" && key == "token" {
			return `s3cr"et`, nil
		}
		return "", errors.New("no such secret")
	}
	tmpl := func(args ...model.Argument) model.AnalysisTemplateSpec {
		return model.AnalysisTemplateSpec{
			Args: args,
			Metrics: []model.Metric{{
				Name: "m", Count: &model.IntOrString{IsString: true, StrVal: "{{args.count}}"}, Interval: "1s",
				Provider: web("{{args.url}}/health"),
			}},
		}
	}
	secretArg := model.Argument{Name: "token", ValueFrom: &model.ValueFrom{SecretKeyRef: &model.SecretKeyRef{Name: "creds", Key: "token"}}}
	tests := []struct {
		name    string
		spec    model.AnalysisTemplateSpec
		args    map[string]string
		wantErr string
		check   func(*testing.T, Metric)
	}{
		{
			name: "defaults, overrides and secrets",
			spec: tmpl(model.Argument{Name: "url", Value: str("http://default")}, model.Argument{Name: "count", Value: str("2")}, secretArg),
			args: map[string]string{"url": "http://app.qa", "undeclared": "x"},
			check: func(t *testing.T, m Metric) {
				if m.Provider != "web" || m.Metric.Provider.Web.URL != "http://app.qa/health" || m.Count != 2 {
					t.Errorf("got provider %s url %q count %d", m.Provider, m.Metric.Provider.Web.URL, m.Count)
				}
				if h := m.Metric.Provider.Web.Headers[0].Value; h != `Bearer s3cr"et` {
					t.Errorf("header %q", h)
				}
			},
		},
		{
			name:    "argument without value",
			spec:    tmpl(model.Argument{Name: "url"}, model.Argument{Name: "count", Value: str("2")}, secretArg),
			wantErr: `argument "url" has no value`,
		},
		{
			name:    "missing secret",
			spec:    tmpl(model.Argument{Name: "url", Value: str("u")}, model.Argument{Name: "count", Value: str("2")}, model.Argument{Name: "token", ValueFrom: &model.ValueFrom{SecretKeyRef: &model.SecretKeyRef{Name: "nope", Key: "k"}}}),
			wantErr: `argument "token" from secret "nope" key "k"`,
		},
		{
			name:    "placeholder for an undeclared argument",
			spec:    tmpl(model.Argument{Name: "count", Value: str("2")}, secretArg),
			wantErr: "unresolved arguments: args.url",
		},
		{
			name:    "count that is not a number",
			spec:    tmpl(model.Argument{Name: "url", Value: str("u")}, model.Argument{Name: "count", Value: str("many")}, secretArg),
			wantErr: `count: "many" is not an integer`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, err := Build(context.Background(), []Template{{Name: "t", Spec: tt.spec}}, tt.args, secrets)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, spec.Metrics[0])
		})
	}
}

func TestBuildMergesTemplates(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	a := model.AnalysisTemplateSpec{Args: []model.Argument{{Name: "x", Value: str("1")}}, Metrics: []model.Metric{metric("m1", nil)}}
	b := model.AnalysisTemplateSpec{Args: []model.Argument{{Name: "x", Value: str("2")}}, Metrics: []model.Metric{metric("m2", nil)}}
	b2 := model.AnalysisTemplateSpec{Args: []model.Argument{{Name: "x", Value: str("1")}}, Metrics: []model.Metric{metric("m2", nil)}}
	c := model.AnalysisTemplateSpec{Metrics: []model.Metric{metric("m1", nil)}}
	if _, err := Build(context.Background(), []Template{{Name: "a", Spec: a}, {Name: "b", Spec: b}}, nil, nil); err == nil || !strings.Contains(err.Error(), "different values") {
		t.Errorf("conflicting args: %v", err)
	}
	if _, err := Build(context.Background(), []Template{{Name: "a", Spec: a}, {Name: "c", Spec: c}}, nil, nil); err == nil || !strings.Contains(err.Error(), `metric "m1" is in templates`) {
		t.Errorf("duplicate metric: %v", err)
	}
	spec, err := Build(context.Background(), []Template{{Name: "a", Spec: a}, {Name: "b", Spec: b2}}, map[string]string{"x": "3"}, nil)
	if err != nil || len(spec.Metrics) != 2 || spec.Metrics[1].Template != "b" {
		t.Fatalf("merge: %v %+v", err, spec)
	}
}

func TestEvaluate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		result           any
		success, failure string
		want             Phase
	}{
		{true, "result == true", "", PhaseSuccessful},
		{false, "result == true", "", PhaseFailed},
		{5.0, "", "result > 3", PhaseFailed},
		{1.0, "", "result > 3", PhaseSuccessful},
		{0.95, "result >= 0.9", "result < 0.5", PhaseSuccessful},
		{0.4, "result >= 0.9", "result < 0.5", PhaseFailed},
		{0.6, "result >= 0.9", "result < 0.5", PhaseInconclusive},
		{[]float64{}, "len(result) == 0 || result[0] < 1", "", PhaseSuccessful},
		{nil, "isNil(result)", "", PhaseSuccessful},
		{"12", "asInt(result) > 10", "", PhaseSuccessful},
		{math.Inf(1), "isInf(result)", "", PhaseSuccessful},
		{[]float64{}, "result[0] > 1", "", PhaseError},
		{1.0, "result >", "", PhaseError},
	}
	for _, tt := range tests {
		got, _ := Evaluate(tt.result, tt.success, tt.failure)
		if got != tt.want {
			t.Errorf("Evaluate(%v, %q, %q) = %s, want %s", tt.result, tt.success, tt.failure, got, tt.want)
		}
	}
}
