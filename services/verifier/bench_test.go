package verifier

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/verification"
)

// verifiedWaiter hands out the StageVerified events of a project by
// verification ID, from a core NATS subscription.
type verifiedWaiter struct {
	mu      sync.Mutex
	waiting map[string]chan events.StageVerified
	early   map[string]events.StageVerified
}

func newVerifiedWaiter(tb testing.TB, nc *nats.Conn) *verifiedWaiter {
	w := &verifiedWaiter{waiting: map[string]chan events.StageVerified{}, early: map[string]events.StageVerified{}}
	sub, err := nc.Subscribe(events.Filter(project, events.TypeStageVerified, model.KindStage), func(msg *nats.Msg) {
		var ev events.StageVerified
		if env, err := events.OpenNATS(msg); err != nil || env.Decode(&ev) != nil {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if ch, ok := w.waiting[ev.Verification]; ok {
			delete(w.waiting, ev.Verification)
			ch <- ev
			return
		}
		w.early[ev.Verification] = ev
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

func (w *verifiedWaiter) expect(id string) <-chan events.StageVerified {
	ch := make(chan events.StageVerified, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if ev, ok := w.early[id]; ok {
		delete(w.early, id)
		ch <- ev
		return ch
	}
	w.waiting[id] = ch
	return ch
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkPromotionToVerified measures PromotionSucceeded → StageVerified
// for a healthy stage without verification, through a running verifier on
// a loopback NATS server, beside a raw JetStream publish → consume hop on
// the same server, interleaved. It reports both p99 latencies and their
// ratio (target: p99 ≤ 50 ms).
func BenchmarkPromotionToVerified(b *testing.B) {
	h := newHarness(b)
	h.apply(stage("dev", nil, "", nil))
	h.freight("f1")
	h.promoted("dev", "f1", model.HealthStateHealthy)
	h.startWith("v1", func(c *Config) { *c = Config{Common: c.Common} }) // production defaults
	waiter := newVerifiedWaiter(b, h.srv.Conn(b))
	ctx := context.Background()

	js := h.env.JS
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}}); err != nil {
		b.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "RAW", jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	rawDone := make(chan struct{}, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		rawDone <- struct{}{}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	rawPayload := []byte(`{"promotion":"p","stage":"dev","freight":"f1"}`)

	var hop, raw []time.Duration
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		if _, err := js.Publish(ctx, "raw.dev", rawPayload); err != nil {
			b.Fatal(err)
		}
		<-rawDone
		raw = append(raw, time.Since(start))

		id := fmt.Sprintf("bench-%d", i)
		done := waiter.expect(id)
		start = time.Now()
		if _, err := h.env.Bus.Publish(ctx, project, events.Ref{Kind: model.KindStage, Name: "dev"}, events.PromotionSucceeded{Promotion: id, Stage: "dev", Freight: "f1"}); err != nil {
			b.Fatal(err)
		}
		select {
		case ev := <-done:
			if ev.Phase != string(analysis.PhaseSuccessful) {
				b.Fatalf("verification %s: %+v", id, ev)
			}
		case <-time.After(wait):
			b.Fatalf("no StageVerified for %s", id)
		}
		hop = append(hop, time.Since(start))
	}
	b.ReportMetric(ms(percentile(hop, 0.5)), "p50-ms")
	b.ReportMetric(ms(percentile(hop, 0.99)), "p99-ms")
	b.ReportMetric(ms(percentile(raw, 0.5)), "raw-p50-ms")
	b.ReportMetric(ms(percentile(raw, 0.99)), "raw-p99-ms")
	b.ReportMetric(float64(percentile(hop, 0.99))/float64(max(percentile(raw, 0.99), 1)), "p99-ratio")
}

// BenchmarkConcurrentWebVerifications runs 1,000 verifications at once,
// one per stage, each a web metric of 4 measurements 250 ms apart against
// a local HTTP server, and reports how late measurements start against
// their schedule (first measurement + k × interval), beside the same
// schedule (same start times) kept by 1,000 bare goroutines with a timer
// and an HTTP client in the same run.
func BenchmarkConcurrentWebVerifications(b *testing.B) {
	const (
		n        = 1000
		count    = 4
		interval = 250 * time.Millisecond
	)
	h := newHarness(b)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	b.Cleanup(app.Close)
	tmpl := &model.AnalysisTemplate{
		TypeMeta:   model.TypeMeta{APIVersion: model.ArgoAPIVersion, Kind: model.KindAnalysisTemplate},
		ObjectMeta: model.ObjectMeta{Name: "load", Namespace: project},
		Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{{
			Name: "up", SuccessCondition: `result == "ok"`, Interval: interval.String(), Count: &model.IntOrString{IntVal: count},
			Provider: model.MetricProvider{Web: &model.WebMetric{URL: app.URL + "/status", JSONPath: "{$.status}"}},
		}}},
	}
	h.apply(tmpl)
	for i := range n {
		name := fmt.Sprintf("s%d", i)
		h.apply(stage(name, nil, "", &model.Verification{AnalysisTemplates: []model.AnalysisTemplateReference{{Name: "load"}}}))
		h.freight("f" + name)
		h.promoted(name, "f"+name, model.HealthStateHealthy)
	}
	h.startWith("v1", func(c *Config) { *c = Config{Common: c.Common, MaxConcurrent: 2 * n} }) // production defaults
	waiter := newVerifiedWaiter(b, h.srv.Conn(b))
	ctx := context.Background()

	var late, baseLate []time.Duration
	failed := 0
	var wall, spread time.Duration
	for round := 0; b.Loop(); round++ {
		chans := make([]<-chan events.StageVerified, n)
		start := time.Now()
		for i := range n {
			id := fmt.Sprintf("r%d-%d", round, i)
			chans[i] = waiter.expect(id)
			stageName := fmt.Sprintf("s%d", i)
			if _, err := h.env.Bus.Publish(ctx, project, events.Ref{Kind: model.KindStage, Name: stageName}, events.PromotionSucceeded{Promotion: id, Stage: stageName, Freight: "f" + stageName}); err != nil {
				b.Fatal(err)
			}
		}
		for i, ch := range chans {
			select {
			case ev := <-ch:
				if ev.Phase != string(analysis.PhaseSuccessful) {
					failed++
				}
			case <-time.After(2 * time.Minute):
				b.Fatalf("verification %d of round %d did not end", i, round)
			}
		}
		wall += time.Since(start)
		b.StopTimer()
		var offsets []time.Duration
		for i := range n {
			id := fmt.Sprintf("r%d-%d", round, i)
			r, _, err := state.Get[verification.Record](ctx, h.env.Store.KV(state.Verifications), verification.Key(project, fmt.Sprintf("s%d", i), id))
			if err != nil || r.Result == nil {
				b.Fatalf("record %s: %v", id, err)
			}
			for _, m := range r.Result.Metrics {
				first := m.Measurements[0].ScheduledAt
				offsets = append(offsets, first.Sub(start))
				for k, meas := range m.Measurements {
					late = append(late, meas.StartedAt.Sub(first.Add(time.Duration(k)*interval)))
				}
			}
		}
		spread += slices.Max(offsets)
		baseLate = append(baseLate, bareSchedule(app.URL+"/status", offsets, count, interval)...)
		b.StartTimer()
	}
	b.ReportMetric(ms(percentile(late, 0.5)), "late-p50-ms")
	b.ReportMetric(ms(percentile(late, 0.99)), "late-p99-ms")
	b.ReportMetric(ms(percentile(late, 1)), "late-max-ms")
	b.ReportMetric(ms(percentile(baseLate, 0.5)), "bare-late-p50-ms")
	b.ReportMetric(ms(percentile(baseLate, 0.99)), "bare-late-p99-ms")
	b.ReportMetric(float64(percentile(late, 0.99))/float64(max(percentile(baseLate, 0.99), time.Millisecond)), "late-p99-ratio")
	b.ReportMetric(float64(failed), "failed")
	b.ReportMetric(ms(spread)/float64(b.N), "start-spread-ms")
	b.ReportMetric(ms(wall)/float64(b.N), "round-ms")
}

// bareSchedule is the baseline: a goroutine per offset, starting at that
// offset from now (the verifier's own start times), making count GETs on
// a fixed schedule interval apart, reporting how late each starts.
func bareSchedule(url string, offsets []time.Duration, count int, interval time.Duration) []time.Duration {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	var late []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for _, off := range offsets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := start.Add(off)
			for k := range count {
				due := first.Add(time.Duration(k) * interval)
				time.Sleep(time.Until(due))
				started := time.Now()
				resp, err := client.Get(url)
				if err == nil {
					var v map[string]any
					_ = json.NewDecoder(resp.Body).Decode(&v)
					_ = resp.Body.Close()
				}
				mu.Lock()
				late = append(late, started.Sub(due))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return late
}
