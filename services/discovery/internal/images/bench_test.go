package images_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery/internal/images"
)

// BenchmarkRefreshCacheByTag measures an explicit refresh without a hint
// (list the tags, resolve the candidates) of a repository holding 30 or
// 5,000 tags, right after one new tag was pushed, for the SemVer strategy
// (the default) and NewestBuild (which needs each image's build date), the
// modes interleaved in one run, each with a client of its own that has
// discovered the repository before, at the service's parallelism:
//
//   - cacheByTag: tags immutable, a tag resolved before costs no request
//     (targets: ≤ 40 ms, 2 requests);
//   - without: tags mutable, so every candidate the strategy may pick is
//     asked again, with the cheapest request that can tell a moved tag (a
//     HEAD); metadata is cached by digest, so an unchanged tag costs no
//     manifest body or config blob;
//   - old: the baseline, the same client as discovery had before it
//     remembered tags (NewBaseline, built only into this package's
//     tests: a manifest GET per candidate when metadata is needed,
//     cacheByTag ignored);
//   - fresh: a client that knows nothing (token, ping, every candidate
//     resolved from scratch), for reference;
//   - listed: without cacheByTag, from a registry that sends each tag's
//     digest with the tag list, as Google's Artifact Registry and
//     Container Registry do (testenv's ListDigests stands in for them: they
//     cannot run here), so no tag is asked again.
//
// It reports each one's time and registry requests per refresh, and the
// ratios to old (target without/old ≤ 0.2). A HEAD per candidate is the
// floor without cacheByTag on a registry that speaks only the
// distribution API: it has no request that tells several tags' digests,
// and any tag may have moved; listed/old shows what a registry that tells
// them saves.
func BenchmarkRefreshCacheByTag(b *testing.B) {
	for _, bc := range []struct {
		strategy model.ImageSelectionStrategy
		tags     int
	}{
		{model.ImageSelectionStrategySemVer, 30},
		{model.ImageSelectionStrategySemVer, 5000},
		{model.ImageSelectionStrategyNewestBuild, 30},
		{model.ImageSelectionStrategyNewestBuild, 500},
	} {
		b.Run(fmt.Sprintf("%s/tags=%d", bc.strategy, bc.tags), func(b *testing.B) {
			n := bc.tags
			reg := testenv.Registry(b)
			base := reg.PushImage(b, "bench/tags", "v0.0.0", testenv.Created(time.Now().Add(-time.Hour)))
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
			plain := model.ImageSubscription{RepoURL: reg.Repo("bench/tags"), ImageSelectionStrategy: bc.strategy}
			cached := plain
			cached.CacheByTag = true
			type mode struct {
				sub    model.ImageSubscription
				client func() *images.Client
				listed bool // the registry sends digests with the tag list
				d      time.Duration
				reqs   int
			}
			// A client each: one's caches must not learn from another's.
			warm := func(c *images.Client) func() *images.Client {
				return func() *images.Client { return c }
			}
			with := &mode{sub: cached, client: warm(images.New(images.Options{}))}
			without := &mode{sub: plain, client: warm(images.New(images.Options{}))}
			old := &mode{sub: plain, client: warm(images.NewBaseline(images.Options{}))}
			fresh := &mode{sub: plain, client: func() *images.Client { return images.New(images.Options{}) }}
			listed := &mode{sub: plain, client: warm(images.New(images.Options{})), listed: true}
			refresh := func(m *mode, want string) {
				c := m.client()
				reg.ListDigests(m.listed)
				reg.ResetRequests()
				start := time.Now()
				res, err := c.Discover(b.Context(), m.sub, nil)
				m.d += time.Since(start)
				m.reqs += len(reg.Requests())
				if err != nil || want != "" && res.References[0].Tag != want {
					b.Fatalf("refresh: %v, newest %+v, want %s", err, res.References, want)
				}
			}
			modes := []*mode{with, without, old, listed, fresh}
			// What a running discovery knows already.
			for _, m := range modes[:4] {
				refresh(&mode{sub: m.sub, client: m.client, listed: m.listed}, "")
			}
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				tag := fmt.Sprintf("v1.%d.0", i)
				reg.PushImage(b, "bench/tags", tag, testenv.Created(time.Now())) // the newest build too
				b.StartTimer()
				for j := range modes { // each goes first in turn
					refresh(modes[(i+j)%len(modes)], tag)
				}
			}
			k := float64(b.N)
			for _, m := range []struct {
				name string
				m    *mode
			}{{"cacheByTag", with}, {"without", without}, {"old", old}, {"listed", listed}, {"fresh", fresh}} {
				b.ReportMetric(float64(m.m.d.Microseconds())/1000/k, m.name+"-ms")
				b.ReportMetric(float64(m.m.reqs)/k, m.name+"-reqs")
			}
			b.ReportMetric(float64(with.d)/float64(old.d), "cacheByTag/old-time")
			b.ReportMetric(float64(with.reqs)/float64(old.reqs), "cacheByTag/old-reqs")
			b.ReportMetric(float64(without.d)/float64(old.d), "without/old-time")
			b.ReportMetric(float64(without.reqs)/float64(old.reqs), "without/old-reqs")
			b.ReportMetric(float64(listed.d)/float64(old.d), "listed/old-time")
			b.ReportMetric(float64(listed.reqs)/float64(old.reqs), "listed/old-reqs")
		})
	}
}
