package testenv

import (
	"testing"
	"time"
)

// CompareIndexed benchmarks a lookup answered from an in-memory index
// beside the same lookup answered by listing KV, in the same run and
// interleaved: each iteration measures listed once and indexed perListed
// times (the listed way is the slow one, so b.N = 1 still averages the
// indexed one). Each measure returns its duration and the NATS requests it
// sent. Both run once before the timer (caches warm, first decisions
// taken). It reports ms/<unit>-listed, ms/<unit>-index and their ratio,
// and requests/<unit>-listed, requests/<unit>-index and their ratio.
func CompareIndexed(b *testing.B, unit string, perListed int, listed, indexed func() (time.Duration, uint64)) {
	b.Helper()
	indexed()
	listed()
	var tListed, tIndexed time.Duration
	var rListed, rIndexed uint64
	b.ResetTimer()
	for range b.N {
		d, r := listed()
		tListed, rListed = tListed+d, rListed+r
		for range perListed {
			d, r = indexed()
			tIndexed, rIndexed = tIndexed+d, rIndexed+r
		}
	}
	b.StopTimer()
	listedPer, indexedPer := tListed/time.Duration(b.N), tIndexed/time.Duration(b.N*perListed)
	rl, ri := float64(rListed)/float64(b.N), float64(rIndexed)/float64(b.N*perListed)
	b.ReportMetric(float64(listedPer.Microseconds())/1000, "ms/"+unit+"-listed")
	b.ReportMetric(float64(indexedPer.Microseconds())/1000, "ms/"+unit+"-index")
	b.ReportMetric(float64(indexedPer)/float64(listedPer), "ratio-index-to-listed")
	b.ReportMetric(rl, "requests/"+unit+"-listed")
	b.ReportMetric(ri, "requests/"+unit+"-index")
	b.ReportMetric(ri/rl, "ratio-requests-index-to-listed")
}
