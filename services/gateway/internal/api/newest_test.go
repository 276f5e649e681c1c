package api

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

func TestNewest(t *testing.T) {
	t.Parallel()
	base := time.Unix(1_700_000_000, 0)
	var all []*model.Freight
	for i := range 1000 {
		f := &model.Freight{ObjectMeta: model.ObjectMeta{Name: fmt.Sprintf("f%04d", rand.IntN(10000))}}
		if i%10 != 0 { // some without a creation time
			f.CreationTimestamp = model.NewTime(base.Add(time.Duration(rand.IntN(50)) * time.Second))
		}
		all = append(all, f)
	}
	want := slices.Clone(all)
	slices.SortFunc(want, newestFirst)
	for _, n := range []int{0, 1, 7, 100, 249, 250, 999, 1000, 5000} {
		got := newest(slices.Clone(all), n)
		w := want
		if n > 0 && n < len(w) {
			w = w[:n]
		}
		if len(got) != len(w) {
			t.Fatalf("n=%d: %d items, want %d", n, len(got), len(w))
		}
		for i := range got {
			if newestFirst(got[i], w[i]) != 0 {
				t.Fatalf("n=%d: item %d is %s, want %s", n, i, got[i].Name, w[i].Name)
			}
		}
	}
}
