package autopromote

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/stageindex"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// The stages an event concerns are the same found in the stage index as
// listed from KV (the way before the index, and its fallback), and they
// follow Stage creates, updates and deletes.
func TestStagesFromIndexAsFromKV(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	env, err := service.Provision(ctx, srv.Conn(t), "test", service.Common{DataDir: t.TempDir(), StreamConfig: events.DefaultStreamConfig()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	app := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}
	lib := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "lib"}
	steps := &model.PromotionTemplate{Spec: model.PromotionTemplateSpec{Steps: []model.PromotionStep{{Uses: "fake"}}}}
	stage := func(project, name string, tmpl *model.PromotionTemplate, reqs ...model.FreightRequest) *model.Stage {
		return &model.Stage{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindStage},
			ObjectMeta: model.ObjectMeta{Name: name, Namespace: project}, Spec: model.StageSpec{RequestedFreight: reqs, PromotionTemplate: tmpl}}
	}
	direct := model.FreightSources{Direct: true}
	from := func(up ...string) model.FreightSources { return model.FreightSources{Stages: up} }
	save := func(s *model.Stage) {
		t.Helper()
		_, rev, err := env.Store.GetObject(ctx, s.Namespace, model.KindStage, s.Name)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			t.Fatal(err)
		}
		if _, err := env.Store.PutObject(ctx, s, rev); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*model.Stage{
		stage("demo", "dev", steps, model.FreightRequest{Origin: app, Sources: direct}),
		stage("demo", "gate", nil, model.FreightRequest{Origin: app, Sources: from("dev")}),
		stage("demo", "staging", steps, model.FreightRequest{Origin: app, Sources: from("gate")}),
		stage("demo", "prod", steps, model.FreightRequest{Origin: app, Sources: from("staging", "dev")}, model.FreightRequest{Origin: lib, Sources: direct}),
		stage("other", "dev", steps, model.FreightRequest{Origin: app, Sources: direct}),
	} {
		save(s)
	}
	ix := stageindex.New(env.Store.KV(state.Resources))
	ready := make(chan struct{})
	go ix.Run(ctx, ready, 10*time.Millisecond)
	<-ready
	var logged testenv.SyncBuffer // the indexed one must not fall back to KV
	indexed := New(Options{Store: env.Store, Bus: env.Bus, Logger: slog.New(slog.NewTextHandler(&logged, nil)), Stages: ix})
	listed := New(Options{Store: env.Store, Bus: env.Bus, Logger: slog.New(slog.DiscardHandler)})

	type query struct {
		name string
		run  func(*AutoPromoter) ([]string, error)
	}
	queries := []query{
		{"requesting app", func(a *AutoPromoter) ([]string, error) { return a.requesting(ctx, "demo", app) }},
		{"requesting lib", func(a *AutoPromoter) ([]string, error) { return a.requesting(ctx, "demo", lib) }},
		{"downstream of dev", func(a *AutoPromoter) ([]string, error) { return a.downstream(ctx, "demo", "dev") }},
		{"downstream of staging", func(a *AutoPromoter) ([]string, error) { return a.downstream(ctx, "demo", "staging") }},
		{"every stage", func(a *AutoPromoter) ([]string, error) { return a.matching(ctx, "demo", nil) }},
		{"control-flow stages", func(a *AutoPromoter) ([]string, error) {
			return a.matching(ctx, "demo", func(s *stageindex.Stage) bool { return s.ControlFlow })
		}},
		{"projects", func(a *AutoPromoter) ([]string, error) { return a.stageProjects(ctx) }},
	}
	steps1 := []struct {
		name  string
		write func()
		want  map[string][]string // by query
	}{
		{"as stored", func() {}, map[string][]string{
			"requesting app": {"dev", "gate", "prod", "staging"}, "requesting lib": {"prod"},
			"downstream of dev": {"gate", "prod"}, "downstream of staging": {"prod"},
			"every stage": {"dev", "gate", "prod", "staging"}, "control-flow stages": {"gate"}, "projects": {"demo", "other"},
		}},
		{"prod updated, qa created", func() {
			save(stage("demo", "prod", steps, model.FreightRequest{Origin: lib, Sources: from("qa")}))
			save(stage("demo", "qa", steps, model.FreightRequest{Origin: lib, Sources: direct}))
		}, map[string][]string{
			"requesting app": {"dev", "gate", "staging"}, "requesting lib": {"prod", "qa"},
			"downstream of dev": {"gate"}, "downstream of staging": nil,
			"every stage": {"dev", "gate", "prod", "qa", "staging"}, "control-flow stages": {"gate"}, "projects": {"demo", "other"},
		}},
		{"gate and other's dev deleted", func() {
			for _, s := range [][2]string{{"demo", "gate"}, {"other", "dev"}} {
				if err := env.Store.DeleteObject(ctx, s[0], model.KindStage, s[1]); err != nil {
					t.Fatal(err)
				}
			}
		}, map[string][]string{
			"requesting app": {"dev", "staging"}, "requesting lib": {"prod", "qa"},
			"downstream of dev": nil, "downstream of staging": nil,
			"every stage": {"dev", "prod", "qa", "staging"}, "control-flow stages": nil, "projects": {"demo"},
		}},
	}
	for _, st := range steps1 {
		st.write()
		for _, q := range queries {
			got, err := q.run(indexed)
			if err != nil {
				t.Fatalf("%s, %s, indexed: %v", st.name, q.name, err)
			}
			fromKV, err := q.run(listed)
			if err != nil {
				t.Fatalf("%s, %s, from KV: %v", st.name, q.name, err)
			}
			if !slices.Equal(got, st.want[q.name]) || !slices.Equal(fromKV, st.want[q.name]) {
				t.Errorf("%s, %s: indexed %v, from KV %v, want %v", st.name, q.name, got, fromKV, st.want[q.name])
			}
		}
	}
	if out := logged.String(); out != "" {
		t.Errorf("the indexed evaluations logged (fell back to KV?):\n%s", out)
	}
}
