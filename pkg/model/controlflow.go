package model

import (
	"slices"
	"time"
)

// ControlFlowFreight returns the Freight a control-flow Stage (one without
// promotion steps, see IsControlFlow) passes on at now, oldest first: the
// Freight available to it — from its Warehouse directly, approved for it,
// or verified upstream under its availabilityStrategy (All: in every
// upstream Stage; OneOf: in any) with the required soak — that is not yet
// verified in it. Kargo promotes nothing into such a Stage: it marks that
// Freight verified in it at once, which makes it available downstream.
func ControlFlowFreight(freight []*Freight, stage *Stage, now time.Time) []*Freight {
	if !stage.IsControlFlow() {
		return nil
	}
	var out []*Freight
	for _, f := range freight {
		if f.IsVerifiedIn(stage.Name) {
			continue
		}
		if ok, _ := FreightAvailable(f, stage, now); ok {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b *Freight) int {
		if Newer(a, b) {
			return 1
		}
		return -1
	})
	return out
}

// MarkVerified records that f was verified in stage at at; false when it
// already was.
func (f *Freight) MarkVerified(stage string, at time.Time) bool {
	if f.IsVerifiedIn(stage) {
		return false
	}
	if f.Status.VerifiedIn == nil {
		f.Status.VerifiedIn = map[string]VerifiedStage{}
	}
	f.Status.VerifiedIn[stage] = VerifiedStage{VerifiedAt: NewTime(at.UTC().Truncate(time.Second))}
	return true
}
