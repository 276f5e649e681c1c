package dispatch

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
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

var (
	app   = model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}
	other = model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "other"}
	epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

func kargo(kind string) model.TypeMeta {
	return model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: kind}
}

// testFreight returns freight of origin o in project, created age minutes
// before epoch, verified in the stages given.
func testFreight(project, tag string, o model.FreightOrigin, age int, verified ...string) *model.Freight {
	f := &model.Freight{TypeMeta: kargo(model.KindFreight),
		ObjectMeta: model.ObjectMeta{Namespace: project, CreationTimestamp: model.NewTime(epoch.Add(-time.Duration(age) * time.Minute))},
		Origin:     o, Images: []model.Image{{RepoURL: "ghcr.io/example/" + o.Name, Tag: tag, Digest: fmt.Sprintf("sha256:%064x", len(tag)*1000+age)}}}
	f.Name = f.GenerateID()
	for _, s := range verified {
		if f.Status.VerifiedIn == nil {
			f.Status.VerifiedIn = map[string]model.VerifiedStage{}
		}
		f.Status.VerifiedIn[s] = model.VerifiedStage{VerifiedAt: model.NewTime(epoch)}
	}
	return f
}

// holdEnv is a NATS server with the buckets, and a freight index of them
// kept current by its own connection.
type holdEnv struct {
	store *state.Store
	ix    *freightindex.Index
}

func newHoldEnv(t testing.TB) holdEnv {
	t.Helper()
	srv := testenv.NATS(t)
	common := service.Common{DataDir: t.TempDir(), StreamConfig: events.DefaultStreamConfig()}
	ctx := context.Background()
	env, err := service.Provision(ctx, srv.Conn(t), "test", common, nil)
	if err != nil {
		t.Fatal(err)
	}
	ixEnv, err := service.Provision(ctx, srv.Conn(t), "test-index", common, nil)
	if err != nil {
		t.Fatal(err)
	}
	ix := freightindex.New(ixEnv.Store.KV(state.Freight), nil)
	ictx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	ready := make(chan struct{})
	go ix.Run(ictx, ready, time.Second)
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("freight index not loaded")
	}
	return holdEnv{store: env.Store, ix: ix}
}

// TestNewerAvailable checks the auto-promotion hold check of a hand-made
// promotion: is freight newer than the promoted one available to the
// stage? Each case is answered three ways that must agree: from the
// freight index (the promoter's way), from all of the project's freight in
// KV (no index, the way it replaced), and with an index that is not
// current (never run: the fallback to KV).
func TestNewerAvailable(t *testing.T) {
	t.Parallel()
	env := newHoldEnv(t)
	fromDev := model.FreightRequest{Origin: app, Sources: model.FreightSources{Stages: []string{"dev"}}}
	direct := model.FreightRequest{Origin: app, Sources: model.FreightSources{Direct: true}}
	approved := func(f *model.Freight, stage string) *model.Freight {
		f.Status.ApprovedFor = map[string]model.ApprovedStage{stage: {ApprovedAt: model.NewTime(epoch)}}
		return f
	}
	tests := []struct {
		name     string
		req      model.FreightRequest
		freight  func(project string) []*model.Freight // the first is promoted by hand
		wantNext int                                   // index in freight of the newer available one; -1: none (no hold)
	}{
		{"the newest available is promoted", fromDev, func(p string) []*model.Freight {
			return []*model.Freight{testFreight(p, "2", app, 1, "dev"), testFreight(p, "1", app, 2, "dev")}
		}, -1},
		{"older freight is promoted", fromDev, func(p string) []*model.Freight {
			return []*model.Freight{testFreight(p, "1", app, 3, "dev"), testFreight(p, "2", app, 2, "dev"), testFreight(p, "3", app, 1, "dev")}
		}, 2},
		{"newer freight not verified upstream", fromDev, func(p string) []*model.Freight {
			return []*model.Freight{testFreight(p, "1", app, 3, "dev"), testFreight(p, "2", app, 2), testFreight(p, "3", app, 1, "qa")}
		}, -1},
		{"newer freight approved for the stage", fromDev, func(p string) []*model.Freight {
			return []*model.Freight{testFreight(p, "1", app, 3, "dev"), approved(testFreight(p, "2", app, 2), "staging"), testFreight(p, "3", app, 1)}
		}, 1},
		{"newer freight approved for another stage", fromDev, func(p string) []*model.Freight {
			return []*model.Freight{testFreight(p, "1", app, 3, "dev"), approved(testFreight(p, "2", app, 2), "prod")}
		}, -1},
		{"direct: any newer freight of the origin", direct, func(p string) []*model.Freight {
			return []*model.Freight{testFreight(p, "1", app, 3), testFreight(p, "2", app, 2), testFreight(p, "3", app, 1)}
		}, 2},
		{"direct: newer freight of another origin only", direct, func(p string) []*model.Freight {
			return []*model.Freight{testFreight(p, "1", app, 3), testFreight(p, "2", other, 1)}
		}, -1},
		{"an origin the stage does not request", model.FreightRequest{Origin: other, Sources: model.FreightSources{Direct: true}}, func(p string) []*model.Freight {
			return []*model.Freight{testFreight(p, "1", app, 3), testFreight(p, "2", app, 1)}
		}, -1},
	}
	log := slog.New(slog.DiscardHandler)
	// The index way must answer from the index: it logs when it reads KV.
	var indexLog testenv.SyncBuffer
	ways := []struct {
		name string
		d    *Dispatcher
	}{
		{"index", New(Options{Store: env.store, Logger: slog.New(slog.NewTextHandler(&indexLog, nil)), Freight: env.ix})},
		{"kv", New(Options{Store: env.store, Logger: log})},
		{"index not current", New(Options{Store: env.store, Logger: log, Freight: freightindex.New(env.store.KV(state.Freight), nil)})},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			project := fmt.Sprintf("p%d", i)
			fs := tt.freight(project)
			for _, f := range fs {
				if _, err := env.store.PutObject(ctx, f, 0); err != nil {
					t.Fatal(err)
				}
			}
			stage := &model.Stage{TypeMeta: kargo(model.KindStage), ObjectMeta: model.ObjectMeta{Name: "staging", Namespace: project},
				Spec: model.StageSpec{RequestedFreight: []model.FreightRequest{tt.req}}}
			want := ""
			if tt.wantNext >= 0 {
				want = fs[tt.wantNext].Name
			}
			for _, w := range ways {
				got, err := w.d.newerAvailable(ctx, project, stage, fs[0], epoch)
				if err != nil {
					t.Fatalf("%s: %v", w.name, err)
				}
				if name := nameOf(got); name != want {
					t.Errorf("%s: newer available freight %q, want %q", w.name, name, want)
				}
			}
			if out := indexLog.String(); out != "" {
				t.Errorf("the index way read KV: %s", out)
			}
		})
	}
}

func nameOf(f *model.Freight) string {
	if f == nil {
		return ""
	}
	return f.Name
}
