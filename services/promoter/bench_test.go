package promoter

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// BenchmarkPromotions100Stages runs one promotion on each of 100 stages
// with a fast runner (one step of 10ms or 50ms; Kargo's git promotions
// take ~0.4s), first on a replica running up to 100 promotions at once,
// then the same on a replica running one at a time (the baseline, in the
// same run). It reports both rates and their ratio (target ≥ 2).
func BenchmarkPromotions100Stages(b *testing.B) {
	for _, step := range []time.Duration{10 * time.Millisecond, 50 * time.Millisecond} {
		b.Run("step="+step.String(), func(b *testing.B) { benchmarkStages(b, step) })
	}
}

func benchmarkStages(b *testing.B, step time.Duration) {
	const stages = 100
	h := newHarness(b)
	var ss []*model.Stage
	var fs []*model.Freight
	for i := range stages {
		ss = append(ss, h.stage(fmt.Sprintf("s%03d", i), nil))
		fs = append(fs, h.freight(fmt.Sprintf("v%03d", i), time.Now()))
	}
	runner := newFakeRunner(1)
	runner.Delay = step

	done := 0
	round := func(concurrency int) time.Duration {
		r := h.start(fmt.Sprintf("c%d", concurrency), runner, func(c *Config) { c.MaxConcurrent = concurrency })
		ps := make([]*model.Promotion, stages)
		for i, s := range ss {
			ps[i] = h.newPromotion(s, fs[i], "bench")
			h.put(ps[i])
		}
		start := time.Now()
		var wg sync.WaitGroup
		for _, p := range ps {
			wg.Go(func() { h.request(p) })
		}
		wg.Wait()
		done += stages
		eventually(b, 120*time.Second, func() bool {
			return len(h.events.of(events.TypePromotionSucceeded, "")) >= done
		}, func() string { return "promotions done" })
		d := time.Since(start)
		r.stop(b)
		return d
	}
	round(100) // warm up: consumers, buckets, stage records
	var parallel, serial time.Duration
	n := 0
	for b.Loop() {
		parallel += round(100)
		serial += round(1)
		n++
	}
	pps := float64(n*stages) / parallel.Seconds()
	sps := float64(n*stages) / serial.Seconds()
	b.ReportMetric(pps, "promotions/s")
	b.ReportMetric(sps, "serial-promotions/s")
	b.ReportMetric(pps/sps, "x-vs-serial")
}
