package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway"
	"github.com/caravan-cd/caravan/services/gateway/internal/webhook"
)

// bigProject writes a project of 1,000 stages and 10,000 freight straight
// to the store.
func bigProject(b *testing.B, h *harness) {
	b.Helper()
	h.mustApply(readFile(b, "testdata/pipeline.yaml"))
	ctx := context.Background()
	kargo := func(kind string) model.TypeMeta { return model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: kind} }
	origin := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}
	for i := range 1000 {
		st := &model.Stage{TypeMeta: kargo(model.KindStage), ObjectMeta: model.ObjectMeta{Name: fmt.Sprintf("s%04d", i), Namespace: "demo"},
			Spec: model.StageSpec{RequestedFreight: []model.FreightRequest{{Origin: origin, Sources: model.FreightSources{Direct: true}}}}}
		if _, err := h.env.Store.PutObject(ctx, st, 0); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now()
	for i := range 10000 {
		f := &model.Freight{TypeMeta: kargo(model.KindFreight), ObjectMeta: model.ObjectMeta{Namespace: "demo", CreationTimestamp: model.NewTime(now.Add(time.Duration(i) * time.Second))},
			Origin: origin, Alias: fmt.Sprintf("f-%05d", i),
			Images: []model.Image{{RepoURL: "ghcr.io/example/app", Tag: fmt.Sprintf("1.0.%d", i), Digest: fmt.Sprintf("sha256:%064d", i)}}}
		f.Name = f.GenerateID()
		if _, err := h.env.Store.PutObject(ctx, f, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func p99(ds []time.Duration) time.Duration { return quantile(ds, 99) }

func quantile(ds []time.Duration, q int) time.Duration {
	slices.Sort(ds)
	return ds[(len(ds)*q)/100]
}

// BenchmarkList measures the p99 of listing 100 of 10,000 freight (and of
// 1,000 stages, and the freight available to a stage) through the HTTP
// API, with the in-memory index and with KV key scans, beside a raw KV get
// of one key in the same run (metric *-p99-ms and ratio-to-kv-get).
func BenchmarkList(b *testing.B) {
	for _, indexed := range []bool{true, false} {
		b.Run(fmt.Sprintf("index=%v", indexed), func(b *testing.B) {
			h := newHarness(b, func(d *gateway.Deps) { d.Config.ListIndex = indexed })
			bigProject(b, h)
			kv := h.env.Store.KV(state.Freight)
			keys, err := state.Keys(context.Background(), kv, state.Prefix("demo"))
			if err != nil || len(keys) != 10000 {
				b.Fatalf("keys: %d %v", len(keys), err)
			}
			paths := map[string]string{
				"freight":   "/v1/projects/demo/freight?limit=100&continue=",
				"stages":    "/v1/projects/demo/stages?limit=100",
				"available": "/v1/projects/demo/freight?stage=s0500&limit=100",
			}
			// warm up (and, for the index, load it)
			for _, p := range paths {
				if st, body, _ := h.do("GET", p, token, "", nil); st != http.StatusOK {
					b.Fatalf("%s: %d %.200s", p, st, body)
				}
			}
			times := map[string][]time.Duration{}
			var gets []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for name, p := range paths {
					start := time.Now()
					st, body, _ := h.do("GET", p, token, "", nil)
					times[name] = append(times[name], time.Since(start))
					if st != http.StatusOK || !strings.Contains(string(body), `"items":[{`) {
						b.Fatalf("%s: %d", p, st)
					}
				}
				start := time.Now()
				if _, err := kv.Get(context.Background(), keys[i%len(keys)]); err != nil {
					b.Fatal(err)
				}
				gets = append(gets, time.Since(start))
			}
			b.StopTimer()
			base := p99(gets)
			b.ReportMetric(float64(base.Microseconds())/1000, "kvget-p99-ms")
			for name, ds := range times {
				b.ReportMetric(float64(quantile(ds, 50).Microseconds())/1000, name+"-p50-ms")
				q := p99(ds)
				b.ReportMetric(float64(q.Microseconds())/1000, name+"-p99-ms")
				b.ReportMetric(float64(q)/float64(base), name+"-ratio-to-kv-get")
			}
		})
	}
}

// BenchmarkWebhookToPublish measures a registry delivery until its
// WarehouseRefreshRequested arrives on NATS, beside a direct publish and
// receive of the same event (ratio-to-publish).
func BenchmarkWebhookToPublish(b *testing.B) {
	h := newHarness(b, func(d *gateway.Deps) { d.Config.WebhookRate = 1e9; d.Config.WebhookBurst = 1 << 30 })
	h.mustApply(readFile(b, "testdata/pipeline.yaml"))
	h.mustApply(readFile(b, "testdata/webhooks.yaml"))
	path := webhook.Path("demo", "reg", hookSecret)
	sub, err := h.nc.SubscribeSync(events.Filter("demo", events.TypeWarehouseRefreshRequested, ""))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := h.nc.Flush(); err != nil {
		b.Fatal(err)
	}
	body := string(readFile(b, "testdata/webhooks/registry.json"))
	var hook, answer, direct []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		payload := strings.Replace(body, "320678d8", fmt.Sprintf("%08x", i), 1)
		start := time.Now()
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(payload))
		req.Header.Set("Authorization", "Bearer "+hookSecret)
		resp, err := h.srv.Client().Do(req)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			b.Fatalf("deliver: %v %v", err, resp.StatusCode)
		}
		_ = resp.Body.Close()
		answer = append(answer, time.Since(start))
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			b.Fatal(err)
		}
		hook = append(hook, time.Since(start))

		start = time.Now()
		if _, err := h.env.Bus.Publish(context.Background(), "demo", events.Ref{Kind: model.KindWarehouse, Name: "reg"}, events.WarehouseRefreshRequested{Warehouse: "reg"}); err != nil {
			b.Fatal(err)
		}
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			b.Fatal(err)
		}
		direct = append(direct, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(p99(hook).Microseconds())/1000, "webhook-p99-ms")
	b.ReportMetric(float64(p99(answer).Microseconds())/1000, "answer-p99-ms")
	b.ReportMetric(float64(quantile(answer, 50).Microseconds())/1000, "answer-p50-ms")
	b.ReportMetric(float64(p99(direct).Microseconds())/1000, "publish-p99-ms")
	b.ReportMetric(float64(p99(hook))/float64(p99(direct)), "ratio-to-publish")
}
