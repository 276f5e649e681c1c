package discovery

import (
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// Two Freight discovered within one second keep their order once stored,
// whatever their names (hashes): auto-promotion selects the later one.
func TestSameSecondFreightOrder(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	env := provision(t, srv)
	second := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := []time.Time{second.Add(100 * time.Millisecond), second.Add(101 * time.Millisecond)}
	d := &discoverer{store: env.Store, bus: env.Bus, now: func() time.Time {
		now := clock[0]
		clock = clock[1:]
		return now
	}}
	origin := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "w"}
	freight := func(tag string) *model.Freight {
		f := &model.Freight{
			TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
			ObjectMeta: model.ObjectMeta{Namespace: "demo"},
			Origin:     origin,
			Images:     []model.Image{{RepoURL: "example/app", Tag: tag, Digest: "sha256:" + tag}},
		}
		f.Name = f.GenerateID()
		return f
	}
	// The later Freight gets the smaller name, so ordering by name within
	// the second would pick the earlier one.
	older, newer := freight("v1"), freight("v2")
	if newer.Name > older.Name {
		older, newer = newer, older
	}
	for _, f := range []*model.Freight{older, newer} {
		if _, _, err := d.createFreight(t.Context(), f); err != nil {
			t.Fatal(err)
		}
	}
	var stored []*model.Freight
	for _, f := range []*model.Freight{older, newer} {
		got, _, err := state.Get[model.Freight](t.Context(), env.Store.KV(state.Freight), state.Key("demo", f.Name))
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, &got)
	}
	stage := &model.Stage{
		ObjectMeta: model.ObjectMeta{Name: "dev", Namespace: "demo"},
		Spec:       model.StageSpec{RequestedFreight: []model.FreightRequest{{Origin: origin, Sources: model.FreightSources{Direct: true}}}},
	}
	got, why := model.SelectAutoPromotion(stored, stage, origin, second.Add(time.Minute))
	if got == nil || got.Name != newer.Name {
		t.Fatalf("auto-promotion selects %v (%s), want the later %s (stored times %v, %v)",
			got, why, newer.Name, stored[0].CreationTimestamp.Time, stored[1].CreationTimestamp.Time)
	}
}
