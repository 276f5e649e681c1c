package autopromote

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/stageindex"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// The periodic passes work projects side by side: while the reconcile
// pass (Pass) or the control-flow pass (ControlFlow) is stuck in one
// project's work, the next project's is done. The project stuck is "a",
// the first of both passes' lists, so a pass that worked projects one
// after another would not reach "b" until "a" is released. Where a pass
// acts is seen through its log (the records "auto-promotion" and
// "control-flow stage passed freight"), whose handler holds "a"'s.
func TestPassesWorkProjectsSideBySide(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		act  string // the log record of the pass's action
		pass func(*AutoPromoter, context.Context) error
	}{
		{"reconcile pass", "auto-promotion", (*AutoPromoter).Pass},
		{"control-flow pass", "control-flow stage passed freight", (*AutoPromoter).ControlFlow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := testenv.NATS(t)
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			env, err := service.Provision(ctx, srv.Conn(t), "test", service.Common{DataDir: t.TempDir(), StreamConfig: events.DefaultStreamConfig()}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, project := range []string{"a", "b"} {
				passProject(t, env.Store, project)
			}
			ix := stageindex.New(env.Store.KV(state.Resources))
			ready := make(chan struct{})
			go ix.Run(ctx, ready, 10*time.Millisecond)
			<-ready

			h := &holdingHandler{act: tt.act, hold: "a", release: make(chan struct{}), acted: map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}}
			a := New(Options{Store: env.Store, Bus: env.Bus, Logger: slog.New(h), Stages: ix, PassWorkers: 2})
			done := make(chan error, 1)
			go func() { done <- tt.pass(a, ctx) }()
			wait := func(project string) {
				t.Helper()
				select {
				case <-h.acted[project]:
				case err := <-done:
					t.Fatalf("the pass ended (%v) before acting in project %s", err, project)
				case <-time.After(60 * time.Second):
					h.releaseOnce()
					t.Fatalf("project %s was not worked while project %s was held", project, h.hold)
				}
			}
			wait("a") // held from here on
			wait("b")
			h.releaseOnce()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the pass did not end once released")
			}
		})
	}
}

// passProject stores a project in which both passes act: auto-promotion
// is enabled for dev, gate is a control-flow stage, both take app's
// freight directly, and there is one freight.
func passProject(t *testing.T, store *state.Store, project string) {
	t.Helper()
	ctx := context.Background()
	kargo := func(kind string) model.TypeMeta { return model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: kind} }
	app := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}
	direct := []model.FreightRequest{{Origin: app, Sources: model.FreightSources{Direct: true}}}
	f := &model.Freight{TypeMeta: kargo(model.KindFreight), ObjectMeta: model.ObjectMeta{Namespace: project, CreationTimestamp: model.NewTime(time.Now())},
		Origin: app, Images: []model.Image{{RepoURL: "ghcr.io/example/app", Tag: "1.0.0", Digest: "sha256:0000000000000000000000000000000000000000000000000000000000000001"}}}
	f.Name = f.GenerateID()
	for _, o := range []model.Object{
		&model.Project{TypeMeta: kargo(model.KindProject), ObjectMeta: model.ObjectMeta{Name: project}},
		&model.ProjectConfig{TypeMeta: kargo(model.KindProjectConfig), ObjectMeta: model.ObjectMeta{Name: project, Namespace: project},
			Spec: model.ProjectConfigSpec{PromotionPolicies: []model.PromotionPolicy{{StageSelector: &model.PromotionPolicySelector{Name: "dev"}, AutoPromotionEnabled: true}}}},
		&model.Stage{TypeMeta: kargo(model.KindStage), ObjectMeta: model.ObjectMeta{Name: "dev", Namespace: project},
			Spec: model.StageSpec{RequestedFreight: direct, PromotionTemplate: &model.PromotionTemplate{Spec: model.PromotionTemplateSpec{Steps: []model.PromotionStep{{Uses: "fake"}}}}}},
		&model.Stage{TypeMeta: kargo(model.KindStage), ObjectMeta: model.ObjectMeta{Name: "gate", Namespace: project}, Spec: model.StageSpec{RequestedFreight: direct}},
		f,
	} {
		if _, err := store.PutObject(ctx, o, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// holdingHandler is a slog handler that tells when a pass acted in a
// project (a record whose message is act) and holds the pass there in
// project hold until released.
type holdingHandler struct {
	act, hold string
	release   chan struct{}
	once      sync.Once
	acted     map[string]chan struct{} // by project, closed at its first act
	mu        sync.Mutex
}

func (h *holdingHandler) releaseOnce() { h.once.Do(func() { close(h.release) }) }

func (h *holdingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *holdingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *holdingHandler) WithGroup(string) slog.Handler            { return h }

func (h *holdingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != h.act {
		return nil
	}
	project := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "project" {
			project = a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	if ch, ok := h.acted[project]; ok {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
	h.mu.Unlock()
	if project == h.hold {
		select {
		case <-h.release:
		case <-ctx.Done():
		}
	}
	return nil
}
