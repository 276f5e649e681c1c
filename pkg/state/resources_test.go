package state_test

import (
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

func TestObjectsRoundTrip(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	for _, name := range []string{"b", "a"} {
		f := &model.Freight{
			TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
			ObjectMeta: model.ObjectMeta{Name: name, Namespace: "demo"},
			Alias:      "alias-" + name,
		}
		if _, err := s.PutObject(ctx, f, 0); err != nil {
			t.Fatal(err)
		}
	}
	got, err := state.ListAll[*model.Freight](ctx, s, "demo", model.KindFreight)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "a" || got[1].Alias != "alias-b" || got[0].ResourceVersion == "" {
		t.Fatalf("ListAll = %+v", got)
	}
	one, rev, err := state.GetAs[*model.Freight](ctx, s, "demo", model.KindFreight, "b")
	if err != nil || one.Alias != "alias-b" || rev == 0 {
		t.Fatalf("GetAs = %+v, %d, %v", one, rev, err)
	}
	none, err := state.ListAll[*model.Freight](ctx, s, "other", model.KindFreight)
	if err != nil || len(none) != 0 {
		t.Fatalf("other project: %v, %v", none, err)
	}
}
