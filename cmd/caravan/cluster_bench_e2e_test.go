//go:build e2e

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// Sizes of the cluster benchmarks (make bench-e2e; each runs once).
const (
	// benchSamples is how many pushes each setup's latency is measured on.
	benchSamples = 30
	// benchStages is how many stages each throughput round promotes into.
	benchStages = 40
)

// benchSecret is the bench project's registry webhook receiver's secret.
const benchSecret = "bench-webhook-secret"

// benchHead is the bench project: a registry webhook receiver, dev
// promoting itself.
var benchHead = webhookProject("bench", benchSecret, "dev")

// benchManifests: one warehouse (only webhooks make it discover during the
// run) and dev, whose promotion commits the tag to its repository.
func benchManifests(registry, repoURL string) string {
	image := registry + "/bench/app"
	return warehouseYAML("bench", "app", "10m", image, ">=1.0.0", 5) +
		stageYAML("bench", "dev", "direct: true", setTagSteps(repoURL, image), false)
}

// BenchmarkE2EPushToCommit measures push → dev commit (a push to the
// Debian docker-registry, its webhook to a gateway, discovery, the
// auto-promotion's commit on the stage's repository) on the cluster (3
// nats-server processes, two replicas of each service) against the
// all-in-one `caravan server`, measured in the same run, and reports each
// percentile as a ratio cluster / all-in-one.
func BenchmarkE2EPushToCommit(b *testing.B) {
	c := startCluster(b, clusterOptions{logDir: os.Getenv("CARAVAN_CLUSTER_LOGS")})
	onCluster := pushToCommit(b, c.procs, c.api, benchSamples)
	c.stop() // the all-in-one gets the cores to itself
	aio := startAllInOne(b, c.procs, c.bins)
	allInOne := pushToCommit(b, c.procs, aio, benchSamples)

	cp50, cp99 := percentile(onCluster, 50), percentile(onCluster, 99)
	ap50, ap99 := percentile(allInOne, 50), percentile(allInOne, 99)
	b.ReportMetric(ms(cp50), "cluster-p50-ms")
	b.ReportMetric(ms(cp99), "cluster-p99-ms")
	b.ReportMetric(ms(ap50), "allinone-p50-ms")
	b.ReportMetric(ms(ap99), "allinone-p99-ms")
	b.ReportMetric(ms(cp50)/ms(ap50), "p50-cluster/allinone")
	b.ReportMetric(ms(cp99)/ms(ap99), "p99-cluster/allinone")
	fmt.Printf("push → dev commit over %d pushes: cluster p50 %s p99 %s; all-in-one p50 %s p99 %s; ratio p50 %.2f, p99 %.2f\n",
		benchSamples, cp50.Round(time.Millisecond), cp99.Round(time.Millisecond), ap50.Round(time.Millisecond), ap99.Round(time.Millisecond),
		ms(cp50)/ms(ap50), ms(cp99)/ms(ap99))
}

// BenchmarkE2EPromoterReplicas measures promotions per second on the
// cluster with one promoter replica, then with two: freight promoted by
// hand into benchStages stages (each promotion a clone, a commit and a
// push, then verified), timed from the first request to the last success.
// It reports the ratio two / one.
func BenchmarkE2EPromoterReplicas(b *testing.B) {
	c := startCluster(b, clusterOptions{promoters: 1, logDir: os.Getenv("CARAVAN_CLUSTER_LOGS")})
	reg := testenv.Registry(b)
	git := testenv.GitServer(b)
	appURL := healthApp(b)
	stages := make([]string, benchStages)
	for i := range stages {
		stages[i] = fmt.Sprintf("manual-%02d", i)
	}
	seedRepos(b, git, stages...)
	c.api.apply(chaosManifests(reg.Repo("chaos/app"), git, stages, appURL))
	round := func(tag string) float64 {
		reg.PushImage(b, "chaos/app", tag)
		f := waitFreight(b, c.env, "chaos", "app", tag)
		start := time.Now()
		for _, s := range stages {
			c.api.promote("chaos", s, f)
		}
		waitFor(b, 5*time.Minute, "every promotion of "+tag+" succeeded", func() (struct{}, bool) {
			n := 0
			for _, p := range promotionsOf(b, c.env, "chaos") {
				if p.Spec.Freight == f && p.Status.Phase == model.PromotionPhaseSucceeded {
					n++
				}
			}
			return struct{}{}, n == len(stages)
		})
		return float64(len(stages)) / time.Since(start).Seconds()
	}
	one := round("1.0.1")
	c.add("promoter")
	c.waitReady()
	two := round("1.0.2")
	b.ReportMetric(one, "promotions/s-1-promoter")
	b.ReportMetric(two, "promotions/s-2-promoters")
	b.ReportMetric(two/one, "2/1-promoters")
	fmt.Printf("promotions/s over %d stages: 1 promoter %.2f, 2 promoters %.2f; ratio %.2f\n", len(stages), one, two, two/one)
}

// pushToCommit sets up the bench project on the API behind api (its
// first gateway receiving the registry's webhooks), then pushes n tags one
// after another and returns how long each took from the push to dev's
// commit of it.
func pushToCommit(b *testing.B, procs *processes, api *apiClient, n int) []time.Duration {
	b.Helper()
	git := testenv.GitServer(b)
	seedRepos(b, git, "bench-dev")
	reg := registryWebhook(b, procs, api, "bench", benchHead, benchSecret)
	defer reg.Stop() // with the API it notifies, not at the benchmark's end
	registry := reg.Host()
	pushRandom(b, registry, "bench/app", "0.1.0")
	api.apply(benchHead + benchManifests(registry, git.URL("bench-dev")))
	commits := func() int {
		v, _ := strconv.Atoi(strings.TrimSpace(git.Run(b, git.Path("bench-dev"), "rev-list", "--count", "main")))
		return v
	}
	// A first push, not measured, warms every part up.
	var out []time.Duration
	for i := range n + 1 {
		before := commits()
		start := time.Now()
		pushRandom(b, registry, "bench/app", fmt.Sprintf("1.0.%d", i))
		waitFor(b, 2*time.Minute, "dev's commit of push "+strconv.Itoa(i), func() (struct{}, bool) {
			return struct{}{}, commits() > before
		})
		if i > 0 {
			out = append(out, time.Since(start))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return out
}

// startAllInOne runs `caravan server` (from bins) with its embedded NATS
// and returns its API; it is stopped by PID when the test ends.
func startAllInOne(t testing.TB, procs *processes, bins string) *apiClient {
	t.Helper()
	addr := freePort(t)
	p := procs.add("caravan-server", filepath.Join(bins, "caravan"), []string{"server"},
		append(append(os.Environ(), "CARAVAN_HTTP_ADDR="+addr, "CARAVAN_DATA_DIR="+t.TempDir(), "CARAVAN_ADMIN_TOKEN="+clusterAdminToken), baseSettings...))
	p.start(t)
	api := &apiClient{t: t, urls: []string{"http://" + addr}, token: clusterAdminToken}
	api.waitReady()
	return api
}

// percentile is the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
