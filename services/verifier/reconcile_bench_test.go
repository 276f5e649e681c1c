package verifier

import (
	"fmt"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/reconcile"
)

// BenchmarkLostPromotionSucceeded measures, with the default
// CARAVAN_RECONCILE_INTERVAL, how long after a promotion succeeded a stage
// is verified when its PromotionSucceeded was lost (the verifier's
// reconciler starts the verification), beside the baseline: the event
// delivered. Target: at most one interval + 1 s. Each iteration loses one
// event at a random point of the reconciler's cycle.
func BenchmarkLostPromotionSucceeded(b *testing.B) {
	h := newHarness(b)
	app := newMetricServer(b, "ok")
	h.apply(smokeSecret(), smokeTemplate(1, ""))
	h.freight("f1")
	h.startWith("v1", nil) // the default interval
	waiter := newVerifiedWaiter(b, h.srv.Conn(b))
	bound := reconcile.DefaultInterval + time.Second
	var lost, baseline, worst time.Duration
	b.ResetTimer()
	for i := range b.N {
		// Baseline: the event arrives.
		s := fmt.Sprintf("base-%d", i)
		h.apply(stage(s, nil, "", smokeVerification(app.URL)))
		ch := waiter.expect(s + "-p")
		t0 := time.Now()
		h.succeeded(s, "f1", s+"-p")
		h.publish(s, events.PromotionSucceeded{Promotion: s + "-p", Stage: s, Freight: "f1"})
		select {
		case <-ch:
		case <-time.After(time.Minute):
			b.Fatal("baseline not verified")
		}
		baseline += time.Since(t0)

		// Lost: nothing arrives, at some point of the reconciler's cycle.
		time.Sleep(time.Duration(i%3) * reconcile.DefaultInterval / 3)
		s = fmt.Sprintf("lost-%d", i)
		h.apply(stage(s, nil, "", smokeVerification(app.URL)))
		ch = waiter.expect(s + "-p")
		t0 = time.Now()
		h.succeeded(s, "f1", s+"-p")
		select {
		case <-ch:
		case <-time.After(3 * reconcile.DefaultInterval):
			b.Fatal("the lost event was never repaired")
		}
		d := time.Since(t0)
		lost += d
		worst = max(worst, d)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(lost.Seconds()/n, "lost-s/op")
	b.ReportMetric(worst.Seconds(), "lost-worst-s")
	b.ReportMetric(float64(baseline.Milliseconds())/n, "baseline-ms/op")
	b.ReportMetric(worst.Seconds()/bound.Seconds(), "worst/(interval+1s)")
	b.ReportMetric(float64(lost)/float64(baseline), "lost/baseline")
}
