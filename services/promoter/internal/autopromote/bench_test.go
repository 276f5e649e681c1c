package autopromote

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/stageindex"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// indexed1000 is the time of an indexed evaluation with 1,000 freight,
// the base of the 10,000-freight run's growth ratio.
var indexed1000 time.Duration

// BenchmarkEvaluate measures one auto-promotion evaluation of a stage
// downstream of dev, in a project of 1,000 and of 10,000 freight all
// verified in dev, with the freight index (the promoter's way) beside the
// full scan it replaced (every freight read from KV), in the same run:
// time per evaluation (ms/eval-*), NATS requests per evaluation
// (requests/eval-*: KV gets, key lists, stream info), their ratio, and
// for 10,000 freight the indexed time's ratio to 1,000's (target: about 1,
// the work does not grow with the freight).
func BenchmarkEvaluate(b *testing.B) {
	env, ixEnv := benchEnvs(b)
	nc := env.Conn
	ctx := context.Background()
	ix := freightindex.New(ixEnv.Store.KV(state.Freight), nil)
	ictx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel)
	ready := make(chan struct{})
	go ix.Run(ictx, ready, time.Second)
	<-ready

	stored := map[int]bool{} // a sub-benchmark runs once per b.N tried
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("freight=%d", n), func(b *testing.B) {
			project := fmt.Sprintf("p%d", n)
			if !stored[n] {
				benchProject(b, env.Store, project, n)
				stored[n] = true
			}
			log := slog.New(slog.DiscardHandler)
			scan := New(Options{Store: env.Store, Bus: env.Bus, Logger: log})
			indexed := New(Options{Store: env.Store, Bus: env.Bus, Logger: log, Freight: ix})
			measure := func(a *AutoPromoter) (time.Duration, uint64) {
				before := nc.Stats().OutMsgs
				start := time.Now()
				if err := a.Evaluate(ctx, project, "staging"); err != nil {
					b.Fatal(err)
				}
				return time.Since(start), nc.Stats().OutMsgs - before
			}
			// The first evaluation auto-promotes the newest freight; the
			// next ones find it decided: the steady state.
			measure(indexed)
			measure(scan)
			var tScan, tIndex time.Duration
			var rScan, rIndex uint64
			// An indexed evaluation is short: several per full scan make
			// its average steady when b.N is 1.
			const perScan = 20
			b.ResetTimer()
			for range b.N {
				d, r := measure(scan)
				tScan, rScan = tScan+d, rScan+r
				for range perScan {
					d, r = measure(indexed)
					tIndex, rIndex = tIndex+d, rIndex+r
				}
			}
			b.StopTimer()
			scanPer, indexPer := tScan/time.Duration(b.N), tIndex/time.Duration(b.N*perScan)
			b.ReportMetric(float64(scanPer.Microseconds())/1000, "ms/eval-fullscan")
			b.ReportMetric(float64(indexPer.Microseconds())/1000, "ms/eval-index")
			b.ReportMetric(float64(indexPer)/float64(scanPer), "ratio-index-to-fullscan")
			b.ReportMetric(float64(rScan)/float64(b.N), "requests/eval-fullscan")
			b.ReportMetric(float64(rIndex)/float64(b.N*perScan), "requests/eval-index")
			if n == 1000 {
				indexed1000 = indexPer
			} else if indexed1000 > 0 {
				b.ReportMetric(float64(indexPer)/float64(indexed1000), "ratio-index-to-1000-freight")
			}
		})
	}
}

// benchProject stores a project with auto-promotion enabled for staging,
// which takes freight verified in dev, and n freight verified in dev.
func benchProject(b *testing.B, store *state.Store, project string, n int) {
	b.Helper()
	ctx := context.Background()
	kargo := func(kind string) model.TypeMeta { return model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: kind} }
	origin := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}
	objs := []model.Object{
		&model.ProjectConfig{TypeMeta: kargo(model.KindProjectConfig), ObjectMeta: model.ObjectMeta{Name: project, Namespace: project},
			Spec: model.ProjectConfigSpec{PromotionPolicies: []model.PromotionPolicy{{StageSelector: &model.PromotionPolicySelector{Name: "staging"}, AutoPromotionEnabled: true}}}},
		&model.Stage{TypeMeta: kargo(model.KindStage), ObjectMeta: model.ObjectMeta{Name: "staging", Namespace: project},
			Spec: model.StageSpec{
				RequestedFreight:  []model.FreightRequest{{Origin: origin, Sources: model.FreightSources{Stages: []string{"dev"}}}},
				PromotionTemplate: &model.PromotionTemplate{Spec: model.PromotionTemplateSpec{Steps: []model.PromotionStep{{Uses: "fake"}}}},
			}},
	}
	now := time.Now()
	for i := range n {
		f := &model.Freight{TypeMeta: kargo(model.KindFreight), ObjectMeta: model.ObjectMeta{Namespace: project, CreationTimestamp: model.NewTime(now.Add(time.Duration(i-n) * time.Second))},
			Origin: origin, Alias: fmt.Sprintf("f-%05d", i),
			Images: []model.Image{{RepoURL: "ghcr.io/example/app", Tag: fmt.Sprintf("1.0.%d", i), Digest: fmt.Sprintf("sha256:%064d", i)}}}
		f.Name = f.GenerateID()
		f.Status.VerifiedIn = map[string]model.VerifiedStage{"dev": {VerifiedAt: model.NewTime(now)}}
		objs = append(objs, f)
	}
	for _, o := range objs {
		if _, err := store.PutObject(ctx, o, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFreightDiscovered measures handling one FreightDiscovered
// (Requesting: finding the stages that request its origin and evaluating
// each) in a project of 1,000 stages over 100 warehouses, 10 stages per
// warehouse, auto-promotion enabled for all: with the stage index (the
// promoter's way) beside listing the project's stages from KV (the way it
// replaced, still the fallback when the index is not current), in the
// same run. Both read freight from the freight index. Reported: time per
// event (ms/event-*), NATS requests per event (requests/event-*: KV gets,
// key lists, stream info, the indexes' included) and their ratios.
func BenchmarkFreightDiscovered(b *testing.B) {
	const stages, warehouses = 1000, 100
	env, ixEnv := benchEnvs(b)
	nc, ixConn := env.Conn, ixEnv.Conn
	ctx := context.Background()
	const project = "big"
	origin := func(i int) model.FreightOrigin {
		return model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: fmt.Sprintf("wh-%03d", i%warehouses)}
	}
	kargo := func(kind string) model.TypeMeta { return model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: kind} }
	objs := []model.Object{&model.ProjectConfig{TypeMeta: kargo(model.KindProjectConfig), ObjectMeta: model.ObjectMeta{Name: project, Namespace: project},
		Spec: model.ProjectConfigSpec{PromotionPolicies: []model.PromotionPolicy{{StageSelector: &model.PromotionPolicySelector{}, AutoPromotionEnabled: true}}}}}
	for i := range stages {
		objs = append(objs, &model.Stage{TypeMeta: kargo(model.KindStage), ObjectMeta: model.ObjectMeta{Name: fmt.Sprintf("stage-%04d", i), Namespace: project},
			Spec: model.StageSpec{
				RequestedFreight:  []model.FreightRequest{{Origin: origin(i), Sources: model.FreightSources{Direct: true}}},
				PromotionTemplate: &model.PromotionTemplate{Spec: model.PromotionTemplateSpec{Steps: []model.PromotionStep{{Uses: "fake"}}}},
			}})
	}
	now := time.Now()
	for i := range warehouses {
		f := &model.Freight{TypeMeta: kargo(model.KindFreight), ObjectMeta: model.ObjectMeta{Namespace: project, CreationTimestamp: model.NewTime(now)},
			Origin: origin(i), Images: []model.Image{{RepoURL: "ghcr.io/example/app", Tag: "1.0.0", Digest: fmt.Sprintf("sha256:%064d", i)}}}
		f.Name = f.GenerateID()
		objs = append(objs, f)
	}
	for _, o := range objs {
		if _, err := env.Store.PutObject(ctx, o, 0); err != nil {
			b.Fatal(err)
		}
	}
	ictx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel)
	freight, stageIx := freightindex.New(ixEnv.Store.KV(state.Freight), nil), stageindex.New(ixEnv.Store.KV(state.Resources))
	freightReady, stagesReady := make(chan struct{}), make(chan struct{})
	go freight.Run(ictx, freightReady, time.Second)
	go stageIx.Run(ictx, stagesReady, time.Second)
	<-freightReady
	<-stagesReady

	log := slog.New(slog.DiscardHandler)
	listed := New(Options{Store: env.Store, Bus: env.Bus, Logger: log, Freight: freight})
	indexed := New(Options{Store: env.Store, Bus: env.Bus, Logger: log, Freight: freight, Stages: stageIx})
	wh := origin(7)
	// Requests: the evaluations' and the indexes' stream-info requests
	// (Sync), which go through the indexes' connection.
	sent := func() uint64 { return nc.Stats().OutMsgs + ixConn.Stats().OutMsgs }
	measure := func(a *AutoPromoter) (time.Duration, uint64) {
		before := sent()
		start := time.Now()
		if err := a.Requesting(ctx, project, wh); err != nil {
			b.Fatal(err)
		}
		return time.Since(start), sent() - before
	}
	// The first event auto-promotes the warehouse's 10 stages; the next
	// ones find them decided: the steady state.
	testenv.CompareIndexed(b, "event", 5,
		func() (time.Duration, uint64) { return measure(listed) },
		func() (time.Duration, uint64) { return measure(indexed) })
}

// benchEnvs provisions a service on an embedded NATS server, and a second
// one on a connection of its own for the indexes, so that their traffic is
// not counted as the measured work's.
func benchEnvs(b *testing.B) (env, ixEnv *service.Env) {
	b.Helper()
	srv := testenv.NATS(b)
	common := service.Common{DataDir: b.TempDir(), StreamConfig: events.DefaultStreamConfig()}
	env, err := service.Provision(context.Background(), srv.Conn(b), "bench", common, nil)
	if err != nil {
		b.Fatal(err)
	}
	ixEnv, err = service.Provision(context.Background(), srv.Conn(b), "bench-index", common, nil)
	if err != nil {
		b.Fatal(err)
	}
	return env, ixEnv
}
