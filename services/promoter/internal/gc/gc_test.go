package gc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

func TestCollect(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	ctx := context.Background()
	env, err := service.Provision(ctx, srv.Conn(t), "gc", service.Common{DataDir: t.TempDir(), StreamConfig: events.DefaultStreamConfig()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old := now.Add(-20 * 24 * time.Hour)
	put := func(obj model.Object) {
		t.Helper()
		if _, err := env.Store.PutObject(ctx, obj, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Stage dev: 30 old finished promotions, an even older pending one,
	// 5 young finished ones. Stage qa: 3 old ones.
	promotion := func(stage string, i int, created time.Time, phase model.PromotionPhase) {
		put(&model.Promotion{
			TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion},
			ObjectMeta: model.ObjectMeta{Name: fmt.Sprintf("%s.%03d", stage, i), Namespace: "p", CreationTimestamp: model.NewTime(created)},
			Spec:       model.PromotionSpec{Stage: stage, Freight: "f"},
			Status:     model.PromotionStatus{Phase: phase},
		})
	}
	promotion("dev", 0, old.Add(-time.Hour), model.PromotionPhasePending)
	for i := 1; i <= 30; i++ {
		promotion("dev", i, old.Add(time.Duration(i)*time.Minute), model.PromotionPhaseSucceeded)
	}
	for i := 31; i <= 35; i++ {
		promotion("dev", i, now.Add(-time.Duration(40-i)*time.Hour), model.PromotionPhaseFailed)
	}
	for i := range 3 {
		promotion("qa", i, old, model.PromotionPhaseSucceeded)
	}
	// Warehouse app: 30 old freight, of which the 3 oldest are in use.
	for i := range 30 {
		f := &model.Freight{
			TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
			ObjectMeta: model.ObjectMeta{Name: fmt.Sprintf("f%03d", i), Namespace: "p", CreationTimestamp: model.NewTime(old.Add(time.Duration(i) * time.Minute))},
			Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		}
		if i < 3 {
			f.Status.CurrentlyIn = map[string]model.CurrentStage{"prod": {}}
		}
		put(f)
	}
	res, err := Collect(ctx, env.Store, Policy{KeepPromotions: 20, KeepFreight: 20, MinAge: 14 * 24 * time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	// dev keeps its 5 young and 15 newest old ones; 15 old finished go,
	// the pending one stays. qa keeps all. Freight: 30-20 beyond the
	// newest, minus 3 in use.
	if res.Promotions != 15 || res.Freight != 7 {
		t.Fatalf("collected %+v, want 15 promotions and 7 freight", res)
	}
	if _, _, err := state.GetAs[*model.Promotion](ctx, env.Store, "p", model.KindPromotion, "dev.000"); err != nil {
		t.Fatalf("pending promotion collected: %v", err)
	}
	if _, _, err := state.GetAs[*model.Freight](ctx, env.Store, "p", model.KindFreight, "f000"); err != nil {
		t.Fatalf("freight in use collected: %v", err)
	}
	res, err = Collect(ctx, env.Store, Policy{KeepPromotions: 20, KeepFreight: 20, MinAge: 14 * 24 * time.Hour}, now)
	if err != nil || res.Promotions+res.Freight != 0 {
		t.Fatalf("second collection: %+v %v", res, err)
	}
}
