package api

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// TestPageOrdered pages through 1,000 objects (some without a creation
// time, many sharing one) in every order and page size: the pages join
// into the full sort, each object once.
func TestPageOrdered(t *testing.T) {
	t.Parallel()
	base := time.Unix(1_700_000_000, 0)
	var all []model.Object
	for i := range 1000 {
		f := &model.Freight{ObjectMeta: model.ObjectMeta{Name: fmt.Sprintf("f%04d", i)}}
		if i%10 != 0 {
			f.CreationTimestamp = model.NewTime(base.Add(time.Duration(rand.IntN(50)) * time.Second))
		}
		all = append(all, f)
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for _, order := range sortOrders {
		want := slices.Clone(all)
		slices.SortStableFunc(want, comparer(order))
		for _, limit := range []int{0, 1, 7, 100, 249, 250, 999, 1000, 5000} {
			var got []model.Object
			after := ""
			for range 2000 {
				page, next, ok := pageOrdered(slices.Clone(all), order, limit, after)
				if !ok {
					t.Fatalf("%s limit %d: cursor %q refused", order, limit, after)
				}
				got = append(got, page...)
				if next == "" {
					break
				}
				b, err := base64.RawURLEncoding.DecodeString(next)
				if err != nil {
					t.Fatal(err)
				}
				after = string(b)
			}
			if len(got) != len(want) {
				t.Fatalf("%s limit %d: %d objects, want %d", order, limit, len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%s limit %d: object %d is %s, want %s", order, limit, i, got[i].GetObjectMeta().Name, want[i].GetObjectMeta().Name)
				}
			}
		}
	}
	if _, _, ok := pageOrdered(all, sortNewest, 10, "demo.Freight.f0001"); ok {
		t.Error("a store key accepted as a cursor")
	}
}
