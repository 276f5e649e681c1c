// Package gc deletes old promotions and freight as Kargo's garbage
// collector does: per stage it keeps the newest promotions, per warehouse
// the newest freight, and beyond those deletes what is finished (a
// promotion in a terminal phase; freight no stage uses) and older than a
// minimum age.
package gc

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Policy says what to keep.
type Policy struct {
	KeepPromotions int
	KeepFreight    int
	MinAge         time.Duration
}

// Result counts what a collection deleted.
type Result struct {
	Promotions int
	Freight    int
}

// Collect deletes, across all projects, the promotions and freight policy
// does not keep, as of now. Deletes are conditional on the revision read,
// so an object that changed meanwhile (freight just promoted) stays.
func Collect(ctx context.Context, store *state.Store, policy Policy, now time.Time) (Result, error) {
	var res Result
	pkv := store.KV(state.Promotions)
	promotions, _, err := state.List[model.Promotion](ctx, pkv, ">", 0, "")
	if err != nil {
		return res, err
	}
	byStage := map[string][]state.Item[model.Promotion]{}
	for _, it := range promotions {
		k := it.Value.Namespace + "/" + it.Value.Spec.Stage
		byStage[k] = append(byStage[k], it)
	}
	var errs []error
	for _, items := range byStage {
		slices.SortFunc(items, func(a, b state.Item[model.Promotion]) int {
			return newestFirst(a.Value.CreationTimestamp, b.Value.CreationTimestamp, a.Value.Name, b.Value.Name)
		})
		for _, it := range items[min(policy.KeepPromotions, len(items)):] {
			p := it.Value
			if !p.Status.Phase.IsTerminal() || !old(p.CreationTimestamp, now, policy.MinAge) {
				continue
			}
			if err := state.Delete(ctx, pkv, it.Key, it.Revision); err != nil {
				errs = append(errs, err)
				continue
			}
			res.Promotions++
		}
	}

	fkv := store.KV(state.Freight)
	freight, _, err := state.List[model.Freight](ctx, fkv, ">", 0, "")
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	byOrigin := map[string][]state.Item[model.Freight]{}
	for _, it := range freight {
		k := it.Value.Namespace + "/" + it.Value.Origin.String()
		byOrigin[k] = append(byOrigin[k], it)
	}
	gone := map[string]bool{} // <project token>.<freight> deleted now
	for _, items := range byOrigin {
		slices.SortFunc(items, func(a, b state.Item[model.Freight]) int {
			return newestFirst(a.Value.CreationTimestamp, b.Value.CreationTimestamp, a.Value.Name, b.Value.Name)
		})
		for _, it := range items[min(policy.KeepFreight, len(items)):] {
			f := it.Value
			if len(f.Status.CurrentlyIn) > 0 || !old(f.CreationTimestamp, now, policy.MinAge) {
				continue
			}
			if err := state.Delete(ctx, fkv, it.Key, it.Revision); err != nil {
				errs = append(errs, err)
				continue
			}
			gone[it.Key] = true
			res.Freight++
		}
	}
	// Auto-promotion decisions (auto.<project>.<stage>.<freight>) of freight
	// collected now go with it.
	if len(gone) > 0 {
		akv := store.KV(state.Promoter)
		keys, err := state.Keys(ctx, akv, "auto.>")
		if err != nil {
			errs = append(errs, err)
		}
		for _, k := range keys {
			tokens := strings.Split(k, ".")
			if len(tokens) == 4 && gone[tokens[1]+"."+tokens[3]] {
				errs = append(errs, state.Delete(ctx, akv, k, 0))
			}
		}
	}
	return res, errors.Join(errs...)
}

func newestFirst(a, b *model.Time, an, bn string) int {
	var ta, tb time.Time
	if a != nil {
		ta = a.Time
	}
	if b != nil {
		tb = b.Time
	}
	if c := tb.Compare(ta); c != 0 {
		return c
	}
	return cmp.Compare(bn, an)
}

func old(created *model.Time, now time.Time, minAge time.Duration) bool {
	return created == nil || now.Sub(created.Time) >= minAge
}
