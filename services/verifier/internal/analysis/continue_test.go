package analysis

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// A run interrupted after two of four measurements goes on with the third
// when continued from its saved progress: it ends with all four, and
// every measurement was reported as it was taken.
func TestContinueFromSavedProgress(t *testing.T) {
	t.Parallel()
	m := metric("m", func(m *model.Metric) {
		m.Count, m.Interval = ios(4), "10s"
		m.SuccessCondition = "result == 1"
	})
	spec, err := Build(context.Background(), []Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{m}}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := &instantClock{now: time.Unix(1000, 0)}
	var mu sync.Mutex
	var saved []*Result
	record := func(r *Result) {
		mu.Lock()
		saved = append(saved, r)
		mu.Unlock()
	}
	// The first run: two measurements, then the process stops.
	first := &script{steps: map[string][]step{"m": {{result: 1}, {result: 1}}}}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{Providers: map[string]Provider{"web": first}, Clock: clock}
	go func() {
		for {
			mu.Lock()
			n := len(saved)
			mu.Unlock()
			if n == 2 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, err := e.Continue(ctx, RunInfo{Name: "r"}, spec, nil, record); err == nil {
		t.Fatal("an interrupted run returned no error")
	}
	mu.Lock()
	progress := saved[len(saved)-1]
	mu.Unlock()
	if progress.Metrics[0].Taken != 2 || progress.Metrics[0].Count != 2 || len(progress.Metrics[0].Measurements) != 2 {
		t.Fatalf("saved progress %+v", progress.Metrics[0])
	}
	// A new owner continues: two more measurements, not four.
	second := &script{steps: map[string][]step{"m": {{result: 1}, {result: 1}}}}
	e = &Engine{Providers: map[string]Provider{"web": second}, Clock: clock}
	res, err := e.Continue(context.Background(), RunInfo{Name: "r"}, spec, progress, record)
	if err != nil {
		t.Fatal(err)
	}
	mr := res.Metrics[0]
	if res.Phase != PhaseSuccessful || mr.Count != 4 || mr.Taken != 4 || len(mr.Measurements) != 4 || second.calls["m"] != 2 {
		t.Fatalf("phase %s, metric %+v, calls %d", res.Phase, mr, second.calls["m"])
	}
	if !res.StartedAt.Equal(progress.StartedAt) {
		t.Fatalf("started %s, first run %s", res.StartedAt, progress.StartedAt)
	}
	// A completed metric is not measured again.
	third := &script{}
	e = &Engine{Providers: map[string]Provider{"web": third}, Clock: clock}
	if res, err := e.Continue(context.Background(), RunInfo{Name: "r"}, spec, res, nil); err != nil || res.Phase != PhaseSuccessful || len(third.calls) != 0 {
		t.Fatalf("continuing a finished run: %v %+v %v", err, res, third.calls)
	}
}
