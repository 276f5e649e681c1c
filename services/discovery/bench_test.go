package discovery_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery/internal/images"
)

// tags10k is a realistic mix of 10,000 tags: versions with and without a
// "v", pre-releases, and a tenth that are not versions at all.
func tags10k() []string {
	r := rand.New(rand.NewPCG(1, 2))
	tags := make([]string, 0, 10000)
	for len(tags) < 10000 {
		major, minor, patch := r.IntN(20), r.IntN(50), r.IntN(100)
		switch r.IntN(10) {
		case 0:
			tags = append(tags, fmt.Sprintf("sha-%08x", r.Uint32()))
		case 1:
			tags = append(tags, fmt.Sprintf("%d.%d.%d-rc.%d", major, minor, patch, r.IntN(5)))
		case 2, 3, 4:
			tags = append(tags, fmt.Sprintf("%d.%d.%d", major, minor, patch))
		default:
			tags = append(tags, fmt.Sprintf("v%d.%d.%d", major, minor, patch))
		}
	}
	return tags
}

// BenchmarkSemVerSelection10k selects with the SemVer strategy (filters,
// constraint, ordering) over 10,000 tags; the baseline is a plain string
// sort of the same tags measured in the same run (target: ≤ 20 ms).
func BenchmarkSemVerSelection10k(b *testing.B) {
	tags := tags10k()
	f, err := images.NewTagFilter("", nil, nil, []string{`-rc`}, ">=1.0.0", true, true)
	if err != nil {
		b.Fatal(err)
	}
	const rounds = 20
	start := time.Now()
	for range rounds {
		s := slices.Clone(tags)
		slices.Sort(s)
	}
	baseline := time.Since(start) / rounds
	var picked int
	b.ResetTimer()
	for b.Loop() {
		picked = len(images.SelectTags(tags, f, model.ImageSelectionStrategySemVer))
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(per.Microseconds())/1000, "ms/select")
	b.ReportMetric(float64(baseline.Microseconds())/1000, "ms/plain-sort")
	b.ReportMetric(float64(per)/float64(baseline), "x-plain-sort")
	b.ReportMetric(float64(picked), "selected")
}

// BenchmarkHintToFreightDiscovered measures the time from publishing a
// WarehouseRefreshRequested with an image hint (tag, no digest) to
// receiving its FreightDiscovered, over loopback NATS and registry, and the
// registry requests each hinted refresh makes. The baseline is a raw
// JetStream publish → consume round trip measured in the same run
// (targets: p99 ≤ 100 ms, ≤ 2 requests).
func BenchmarkHintToFreightDiscovered(b *testing.B) {
	srv := testenv.NATS(b)
	reg := testenv.Registry(b)
	reg.PushImage(b, "bench/app", "v1.0.0")
	gw := newGateway(b, srv)
	startReplica(b, srv, "bench", nil)
	gw.put(b, imageWarehouse("bench", model.ImageSubscription{RepoURL: reg.Repo("bench/app")}))

	nc := srv.Conn(b)
	got := make(chan string, 16)
	sub, err := nc.Subscribe(events.Filter(project, events.TypeFreightDiscovered, events.Any), func(m *nats.Msg) { got <- m.Subject })
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	select {
	case <-got: // the first full discovery
	case <-time.After(waitTimeout):
		b.Fatal("no first freight")
	}
	baseline := rawJetStream(b, gw.env.JS, 200)

	var lat []time.Duration
	requests := 0
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		tag := fmt.Sprintf("v1.%d.0", i)
		reg.PushImage(b, "bench/app", tag)
		reg.ResetRequests()
		b.StartTimer()
		start := time.Now()
		gw.refresh(b, "bench", &events.ArtifactHint{RepoURL: reg.Repo("bench/app"), Tag: tag})
		select {
		case <-got:
		case <-time.After(waitTimeout):
			b.Fatalf("no FreightDiscovered for %s", tag)
		}
		lat = append(lat, time.Since(start))
		requests += len(reg.Requests())
	}
	p50, p99 := percentile(lat, 50), percentile(lat, 99)
	b.ReportMetric(ms(p50), "p50-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	b.ReportMetric(ms(percentile(baseline, 50)), "js-p50-ms")
	b.ReportMetric(ms(percentile(baseline, 99)), "js-p99-ms")
	b.ReportMetric(float64(p50)/float64(percentile(baseline, 50)), "x-js-p50")
	b.ReportMetric(float64(requests)/float64(len(lat)), "registry-reqs/hint")
}

// rawJetStream measures n publish → consume round trips on a stream of its
// own.
func rawJetStream(b *testing.B, js jetstream.JetStream, n int) []time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}}); err != nil {
		b.Fatal(err)
	}
	cons, err := js.CreateConsumer(ctx, "BENCH", jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan struct{}, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack(); got <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	out := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		if _, err := js.Publish(ctx, "bench.x", []byte(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
			b.Fatal(err)
		}
		<-got
		out = append(out, time.Since(start))
	}
	return out
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, (len(s)*p+99)/100-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
