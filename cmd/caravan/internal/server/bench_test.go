package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// pushToProdPipeline is three stages, each promoted automatically from the
// one before (dev from the warehouse), each promotion one step that does
// nothing outside the work dir and each verification one web metric
// measured once against a local endpoint that answers at once.
const pushToProdPipeline = `apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: bench
---
apiVersion: v1
kind: Secret
metadata: {name: hook, namespace: bench, labels: {kargo.akuity.io/cred-type: generic}}
stringData: {secret: %[3]s}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata:
  name: bench
  namespace: bench
spec:
  promotionPolicies:
  - stage: dev
    autoPromotionEnabled: true
  - stage: staging
    autoPromotionEnabled: true
  - stage: prod
    autoPromotionEnabled: true
  webhookReceivers:
  - {name: reg, registry: {secretRef: {name: hook}}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: app
  namespace: bench
spec:
  subscriptions:
  - image:
      repoURL: %[1]s
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: instant
  namespace: bench
spec:
  metrics:
  - name: healthy
    count: 1
    successCondition: result == "ok"
    provider:
      web:
        url: %[2]s
        jsonPath: "{$.status}"
        timeoutSeconds: 5
`

const benchStage = `---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: %s
  namespace: bench
spec:
  requestedFreight:
  - origin:
      kind: Warehouse
      name: app
    sources:
      %s
  promotionTemplate:
    spec:
      steps:
      - uses: compose-output
        as: out
        config:
          freight: ${{ ctx.targetFreight.name }}
  verification:
    analysisTemplates:
    - name: instant
`

// BenchmarkPushToProdVerified measures, on the all-in-one server in this
// process, the time from an image push to an in-process registry (its
// webhook delivered to the project's registry receiver as the push
// completes) until prod's StageVerified, through a three-stage pipeline
// that promotes itself, with promotions and verifications that take no
// time of their own (target ≤ 1 s).
//
// The baseline, measured in the same run on the same embedded NATS
// server, is the events the chain published (counted in each run) each
// costing one raw JetStream publish → consume hop: what the chain would
// cost if every service did its work in no time.
func BenchmarkPushToProdVerified(b *testing.B) {
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	b.Cleanup(health.Close)
	reg := testenv.Registry(b)
	r := start(b, b.TempDir(), func(c *server.Config) { c.Egress.Allow = "127.0.0.0/8" })
	b.Cleanup(func() { r.stop(b) })
	nc, err := r.info.ConnectNATS()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)

	const secret = "bench-hook-secret-0123456789"
	manifests := fmt.Sprintf(pushToProdPipeline, reg.Repo("bench/app"), health.URL+"/healthz", secret) +
		fmt.Sprintf(benchStage, "dev", "direct: true") +
		fmt.Sprintf(benchStage, "staging", "stages: [dev]") +
		fmt.Sprintf(benchStage, "prod", "stages: [staging]")
	if code, out := r.do(b, http.MethodPost, "/v1/resources", manifests); code != http.StatusOK {
		b.Fatalf("apply: %d %v", code, out)
	}
	hookURL := r.url + receiverPath(b, r)

	// Every event of the project, and prod's verifications.
	var published atomic.Int64
	all, err := nc.Subscribe(events.ProjectFilter("bench"), func(*nats.Msg) { published.Add(1) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = all.Unsubscribe() })
	verified := make(chan events.StageVerified, 16)
	sub, err := nc.Subscribe(events.Filter("bench", events.TypeStageVerified, ""), func(m *nats.Msg) {
		var ev events.StageVerified
		if env, err := events.OpenNATS(m); err == nil && env.Decode(&ev) == nil && ev.Stage == "prod" {
			verified <- ev
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}

	// The registry's webhook fires as a push completes.
	var pushed atomic.Pointer[time.Time]
	reg.OnPush(func(repo, tag, digest string) {
		now := time.Now()
		pushed.Store(&now)
		go deliverRegistryHook(b, hookURL, secret, reg.Host(), repo, tag, digest)
	})
	waitProd := func(tag string) time.Duration {
		b.Helper()
		for {
			select {
			case ev := <-verified:
				if ev.Phase != "Successful" {
					b.Fatalf("prod verification of %s: %+v", tag, ev)
				}
				return time.Since(*pushed.Load())
			case <-time.After(2 * time.Minute):
				b.Fatalf("prod never verified %s", tag)
			}
		}
	}
	reg.PushImage(b, "bench/app", "1.0.0") // the first freight warms every path
	waitProd("1.0.0")
	time.Sleep(200 * time.Millisecond) // late events of the warm-up settle
	raw := rawHops(b, nc, 200)

	var lat []time.Duration
	var hops int64
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// Freight creation times have second precision and freight
		// created in one second are ordered by name: a push lands in a
		// second of its own, or the newest freight may not be newest.
		b.StopTimer()
		now := time.Now()
		time.Sleep(now.Truncate(time.Second).Add(time.Second + 10*time.Millisecond).Sub(now))
		b.StartTimer()
		tag := fmt.Sprintf("1.1.%d", i)
		before := published.Load()
		reg.PushImage(b, "bench/app", tag)
		lat = append(lat, waitProd(tag))
		hops += published.Load() - before
	}
	b.StopTimer()
	p50 := quantile(lat, 50)
	hop := quantile(raw, 50)
	perRun := float64(hops) / float64(len(lat))
	baseline := time.Duration(perRun * float64(hop))
	b.ReportMetric(ms(p50), "push-to-prod-p50-ms")
	b.ReportMetric(ms(quantile(lat, 100)), "push-to-prod-max-ms")
	b.ReportMetric(perRun, "events/run")
	b.ReportMetric(ms(hop), "raw-hop-p50-ms")
	b.ReportMetric(ms(baseline), "raw-hops-ms")
	b.ReportMetric(float64(p50)/float64(baseline), "x-raw-hops")
}

// receiverPath is the path of the project's registry webhook receiver.
func receiverPath(b *testing.B, r *running) string {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		code, out := r.do(b, http.MethodGet, "/v1/projects/bench/projectconfig", "")
		if code == http.StatusOK {
			st, _ := out["status"].(map[string]any)
			rs, _ := st["webhookReceivers"].([]any)
			for _, x := range rs {
				if m, _ := x.(map[string]any); m["name"] == "reg" {
					if p, _ := m["path"].(string); p != "" {
						return p
					}
				}
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("no webhook receiver: %d %v", code, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deliverRegistryHook posts a Distribution registry notification of one
// push.
func deliverRegistryHook(b *testing.B, url, secret, host, repo, tag, digest string) {
	body := fmt.Sprintf(`{"events":[{"id":%q,"timestamp":%q,"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"repository":%q,"url":%q,"tag":%q},"request":{"host":%q,"method":"PUT"}}]}`,
		events.NewID(), time.Now().UTC().Format(time.RFC3339Nano), digest, repo, "http://"+host+"/v2/"+repo+"/manifests/"+digest, tag, host)
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		b.Error(err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Error(err)
		return
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b.Errorf("webhook: %s", resp.Status)
	}
}

// rawHops measures n raw JetStream publish → consume hops on a stream of
// their own.
func rawHops(b *testing.B, nc *nats.Conn, n int) []time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAWBENCH", Subjects: []string{"rawbench.>"}}); err != nil {
		b.Fatal(err)
	}
	cons, err := js.CreateConsumer(ctx, "RAWBENCH", jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
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
		if _, err := js.Publish(ctx, "rawbench.x", fmt.Appendf(nil, `{"i":%d}`, i), jetstream.WithMsgID(events.NewID())); err != nil {
			b.Fatal(err)
		}
		<-got
		out = append(out, time.Since(start))
	}
	return out
}

func quantile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, (len(s)*p+99)/100-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
