package autopromote

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/stageindex"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/promoter/internal/partition"
)

// BenchmarkPassSmallProjects measures how long the reconcile pass keeps
// small projects waiting behind a big one: one project of 300
// auto-promoted stages (first in the pass's order) and 7 of one stage
// each, all decided already (the steady state), with both indexes. The
// pass as it runs (projects side by side, partition.Workers at once)
// beside the way it replaced (one project after another: one worker), in
// the same run. Reported: the time until the last small project's stages
// are evaluated (ms/small-*), the whole pass (ms/pass-*), and the ratios.
func BenchmarkPassSmallProjects(b *testing.B) {
	const bigStages, small = 300, 7
	srv := testenv.NATS(b)
	common := service.Common{DataDir: b.TempDir(), StreamConfig: events.DefaultStreamConfig()}
	ctx := context.Background()
	env, err := service.Provision(ctx, srv.Conn(b), "bench", common, nil)
	if err != nil {
		b.Fatal(err)
	}
	kargo := func(kind string) model.TypeMeta { return model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: kind} }
	app := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}
	steps := &model.PromotionTemplate{Spec: model.PromotionTemplateSpec{Steps: []model.PromotionStep{{Uses: "fake"}}}}
	store := func(project string, stages int) {
		objs := []model.Object{&model.ProjectConfig{TypeMeta: kargo(model.KindProjectConfig), ObjectMeta: model.ObjectMeta{Name: project, Namespace: project},
			Spec: model.ProjectConfigSpec{PromotionPolicies: []model.PromotionPolicy{{StageSelector: &model.PromotionPolicySelector{}, AutoPromotionEnabled: true}}}}}
		for i := range stages {
			objs = append(objs, &model.Stage{TypeMeta: kargo(model.KindStage), ObjectMeta: model.ObjectMeta{Name: fmt.Sprintf("stage-%03d", i), Namespace: project},
				Spec: model.StageSpec{RequestedFreight: []model.FreightRequest{{Origin: app, Sources: model.FreightSources{Direct: true}}}, PromotionTemplate: steps}})
		}
		f := &model.Freight{TypeMeta: kargo(model.KindFreight), ObjectMeta: model.ObjectMeta{Namespace: project, CreationTimestamp: model.NewTime(time.Now())},
			Origin: app, Images: []model.Image{{RepoURL: "ghcr.io/example/app", Tag: "1.0.0", Digest: "sha256:" + fmt.Sprintf("%064d", 1)}}}
		f.Name = f.GenerateID()
		objs = append(objs, f)
		for _, o := range objs {
			if _, err := env.Store.PutObject(ctx, o, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
	projects := []string{"a-big"}
	store("a-big", bigStages)
	for i := range small {
		p := fmt.Sprintf("small-%d", i)
		store(p, 1)
		projects = append(projects, p)
	}
	ictx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel)
	freight, stages := freightindex.New(env.Store.KV(state.Freight), nil), stageindex.New(env.Store.KV(state.Resources))
	fr, sr := make(chan struct{}), make(chan struct{})
	go freight.Run(ictx, fr, time.Second)
	go stages.Run(ictx, sr, time.Second)
	<-fr
	<-sr
	a := New(Options{Store: env.Store, Bus: env.Bus, Logger: slog.New(slog.DiscardHandler), Freight: freight, Stages: stages})
	// pass is Pass with the projects' end times recorded.
	pass := func(workers int) (smallDone, total time.Duration) {
		var mu sync.Mutex
		start := time.Now()
		if err := partition.Projects(ctx, projects, workers, func(ctx context.Context, p string) error {
			err := a.passProject(ctx, p)
			if p != "a-big" {
				mu.Lock()
				smallDone = max(smallDone, time.Since(start))
				mu.Unlock()
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
		return smallDone, time.Since(start)
	}
	pass(partition.Workers) // decides every stage: the next passes find them decided
	var sSeq, sPar, tSeq, tPar time.Duration
	b.ResetTimer()
	for range b.N {
		s, t := pass(1)
		sSeq, tSeq = sSeq+s, tSeq+t
		s, t = pass(partition.Workers)
		sPar, tPar = sPar+s, tPar+t
	}
	b.StopTimer()
	n := time.Duration(b.N)
	ms := func(d time.Duration) float64 { return float64((d / n).Microseconds()) / 1000 }
	b.ReportMetric(ms(sSeq), "ms/small-one-after-another")
	b.ReportMetric(ms(sPar), "ms/small-side-by-side")
	b.ReportMetric(float64(sPar)/float64(sSeq), "ratio-small-side-by-side-to-one-after-another")
	b.ReportMetric(ms(tSeq), "ms/pass-one-after-another")
	b.ReportMetric(ms(tPar), "ms/pass-side-by-side")
	b.ReportMetric(float64(tPar)/float64(tSeq), "ratio-pass-side-by-side-to-one-after-another")
}
