package discovery_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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

// BenchmarkRefreshCacheByTag measures an explicit refresh without a hint
// (list the tags, resolve the candidates) of a repository holding 30 or
// 5,000 tags, right after one new tag was pushed, interleaved in one run:
//
//   - cacheByTag: tags immutable, a tag resolved before costs no request
//     (targets: ≤ 40 ms, 2 requests);
//   - without: tags mutable, a running discovery asks only for what may
//     have changed (a tag's digest, one HEAD; metadata is cached by
//     digest);
//   - full: the baseline, a client that knows nothing (a new discovery:
//     token, every candidate resolved from scratch).
//
// It reports each one's time and registry requests per refresh, and the
// ratios to full (target without/full ≤ 0.2).
func BenchmarkRefreshCacheByTag(b *testing.B) {
	for _, n := range []int{30, 5000} {
		b.Run(fmt.Sprintf("tags=%d", n), func(b *testing.B) {
			reg := testenv.Registry(b)
			base := reg.PushImage(b, "bench/tags", "v0.0.0")
			ref, err := name.NewDigest(reg.Repo("bench/tags")+"@"+base.String(), name.Insecure)
			if err != nil {
				b.Fatal(err)
			}
			desc, err := remote.Get(ref)
			if err != nil {
				b.Fatal(err)
			}
			for i := 1; i < n; i++ {
				tag, _ := name.NewTag(fmt.Sprintf("%s:v0.%d.%d", reg.Repo("bench/tags"), i/100, i%100), name.Insecure)
				if err := remote.Tag(tag, desc); err != nil {
					b.Fatal(err)
				}
			}
			cached := model.ImageSubscription{RepoURL: reg.Repo("bench/tags"), CacheByTag: true}
			plain := model.ImageSubscription{RepoURL: reg.Repo("bench/tags")}
			// A client each: one's tag cache must not learn from the other.
			warmCached, warmPlain := images.New(images.Options{}), images.New(images.Options{})
			type mode struct {
				sub    model.ImageSubscription
				client func() *images.Client
				d      time.Duration
				reqs   int
			}
			with := &mode{sub: cached, client: func() *images.Client { return warmCached }}
			without := &mode{sub: plain, client: func() *images.Client { return warmPlain }}
			full := &mode{sub: plain, client: func() *images.Client { return images.New(images.Options{}) }}
			refresh := func(m *mode, want string) {
				c := m.client()
				reg.ResetRequests()
				start := time.Now()
				res, err := c.Discover(b.Context(), m.sub, nil)
				m.d += time.Since(start)
				m.reqs += len(reg.Requests())
				if err != nil || want != "" && res.References[0].Tag != want {
					b.Fatalf("refresh: %v, newest %+v, want %s", err, res.References, want)
				}
			}
			// What a running discovery knows already.
			refresh(&mode{sub: cached, client: with.client}, "")
			refresh(&mode{sub: plain, client: without.client}, "")
			modes := []*mode{with, without, full}
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				tag := fmt.Sprintf("v1.%d.0", i)
				reg.PushImage(b, "bench/tags", tag)
				b.StartTimer()
				for j := range modes { // each goes first in turn
					refresh(modes[(i+j)%len(modes)], tag)
				}
			}
			k := float64(b.N)
			b.ReportMetric(float64(with.d.Microseconds())/1000/k, "cacheByTag-ms")
			b.ReportMetric(float64(without.d.Microseconds())/1000/k, "without-ms")
			b.ReportMetric(float64(full.d.Microseconds())/1000/k, "full-ms")
			b.ReportMetric(float64(with.reqs)/k, "cacheByTag-reqs")
			b.ReportMetric(float64(without.reqs)/k, "without-reqs")
			b.ReportMetric(float64(full.reqs)/k, "full-reqs")
			b.ReportMetric(float64(with.d)/float64(full.d), "cacheByTag/full-time")
			b.ReportMetric(float64(without.d)/float64(full.d), "without/full-time")
			b.ReportMetric(float64(without.reqs)/float64(full.reqs), "without/full-reqs")
		})
	}
}
