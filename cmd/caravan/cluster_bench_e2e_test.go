//go:build e2e

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// Sizes of the cluster benchmarks (make bench-e2e; each runs once).
const (
	// benchSamples is how many pushes each setup's latency is measured on.
	benchSamples = 30
	// benchStages is how many stages each throughput round promotes into.
	benchStages = 40
)

// benchHead is the bench project: a registry webhook receiver, dev
// promoting itself.
const benchHead = `apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: bench
---
apiVersion: v1
kind: Secret
metadata:
  name: registry-webhook
  namespace: bench
  labels:
    kargo.akuity.io/cred-type: generic
stringData:
  secret: bench-webhook-secret
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata:
  name: bench
  namespace: bench
spec:
  webhookReceivers:
  - name: registry
    registry:
      secretRef:
        name: registry-webhook
  promotionPolicies:
  - stage: dev
    autoPromotionEnabled: true
`

// benchManifests: one warehouse (only webhooks make it discover during the
// run) and dev, whose promotion commits the tag to its repository.
const benchManifests = `---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: app
  namespace: bench
spec:
  interval: 10m
  subscriptions:
  - image:
      repoURL: %[1]s/bench/app
      imageSelectionStrategy: SemVer
      constraint: ">=1.0.0"
      discoveryLimit: 5
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: dev
  namespace: bench
spec:
  requestedFreight:
  - origin:
      kind: Warehouse
      name: app
    sources:
      direct: true
  promotionTemplate:
    spec:
      steps:
      - uses: git-clone
        config:
          repoURL: %[2]s
          checkout:
          - branch: main
            path: ./src
      - uses: yaml-update
        config:
          path: ./src/values.yaml
          updates:
          - key: image.tag
            value: ${{ imageFrom("%[1]s/bench/app").Tag }}
      - uses: git-commit
        config:
          path: ./src
          message: promote ${{ ctx.promotion }}
      - uses: git-push
        config:
          path: ./src
`

// BenchmarkE2EPushToCommit measures push → dev commit (a push to the
// Debian docker-registry, its webhook to a gateway, discovery, the
// auto-promotion's commit on the stage's repository) on the cluster (3
// nats-server processes, two replicas of each service) against the
// all-in-one `caravan server`, measured in the same run, and reports each
// percentile as a ratio cluster / all-in-one.
func BenchmarkE2EPushToCommit(b *testing.B) {
	c := startCluster(b, clusterOptions{logDir: os.Getenv("CARAVAN_CLUSTER_LOGS")})
	onCluster := pushToCommit(b, c.api, benchSamples)
	c.stop() // the all-in-one gets the cores to itself
	aio := startAllInOne(b, c.bins)
	allInOne := pushToCommit(b, aio, benchSamples)

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
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	b.Cleanup(app.Close)
	stages := make([]string, benchStages)
	for i := range stages {
		stages[i] = fmt.Sprintf("manual-%02d", i)
		git.CreateRepo(b, stages[i])
		git.Seed(b, stages[i], map[string]string{"values.yaml": "image:\n  tag: none\n"}, "seed")
	}
	c.api.apply(chaosManifests(reg.Repo("chaos/app"), git, stages, app.URL))
	round := func(tag string) float64 {
		reg.PushImage(b, "chaos/app", tag)
		f := waitFor(b, 3*time.Minute, "freight of "+tag, func() (string, bool) {
			items, _, err := state.List[model.Freight](b.Context(), c.env.Store.KV(state.Freight), state.Prefix("chaos"), 0, "")
			if err != nil {
				return "", false
			}
			for _, it := range items {
				if len(it.Value.Images) == 1 && it.Value.Images[0].Tag == tag {
					return it.Value.Name, true
				}
			}
			return "", false
		})
		start := time.Now()
		for _, s := range stages {
			c.api.promote(s, f)
		}
		waitFor(b, 5*time.Minute, "every promotion of "+tag+" succeeded", func() (struct{}, bool) {
			n := 0
			for _, p := range chaosPromotions(b, c.env) {
				if p.Spec.Freight == f && p.Status.Phase == model.PromotionPhaseSucceeded {
					n++
				}
			}
			return struct{}{}, n == len(stages)
		})
		return float64(len(stages)) / time.Since(start).Seconds()
	}
	one := round("1.0.1")
	c.addReplica("promoter")
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
func pushToCommit(b *testing.B, api *chaosAPI, n int) []time.Duration {
	b.Helper()
	git := testenv.GitServer(b)
	git.CreateRepo(b, "bench-dev")
	git.Seed(b, "bench-dev", map[string]string{"values.yaml": "image:\n  tag: none\n"}, "seed")
	api.apply(benchHead)
	st, body := api.do(http.MethodGet, "/v1/projects/bench/projectconfig", "", "", nil)
	var pc model.ProjectConfig
	if err := json.Unmarshal(body, &pc); st != http.StatusOK || err != nil || len(pc.Status.WebhookReceivers) != 1 || pc.Status.WebhookReceivers[0].Path == "" {
		b.Fatalf("projectconfig: %d %s (%v)", st, body, err)
	}
	registry := freePort(b)
	startDockerRegistry(b, registry, api.urls[0]+pc.Status.WebhookReceivers[0].Path, "bench-webhook-secret")
	pushRandom(b, registry, "bench/app", "0.1.0")
	api.apply(benchHead + fmt.Sprintf(benchManifests, registry, git.URL("bench-dev")))
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
// and returns its API; it is stopped by PID when the benchmark ends.
func startAllInOne(b *testing.B, bins string) *chaosAPI {
	b.Helper()
	addr := freePort(b)
	p := &chaosProc{name: "caravan-server", bin: filepath.Join(bins, "caravan"), args: []string{"server"}, log: &chaosLog{},
		env: append(os.Environ(), "CARAVAN_HTTP_ADDR="+addr, "CARAVAN_DATA_DIR="+b.TempDir(), "CARAVAN_ADMIN_TOKEN="+clusterAdminToken,
			"CARAVAN_EGRESS_ALLOW=127.0.0.0/8", "CARAVAN_RECONCILE_INTERVAL=5s", "CARAVAN_LOG_LEVEL=info")}
	p.start(b)
	b.Cleanup(func() {
		p.stop()
		if b.Failed() {
			b.Logf("--- caravan server (last lines)\n%s", p.log.tail(30))
		}
	})
	api := &chaosAPI{t: b, urls: []string{"http://" + addr}, token: clusterAdminToken}
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
