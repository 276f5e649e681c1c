package model

import "fmt"

// RollbackTrigger is a failure auto-rollback acts on: ID names it once
// (the failed promotion or verification), Freight is the freight that
// failed.
type RollbackTrigger struct {
	ID      string
	Freight string
	Reason  string
}

// RollbackTriggerOf returns the failure of a stage's newest freight that
// rb rolls back on, or nil: the last promotion ended in a phase
// onPromotion lists (lastFreight is that promotion's freight), else the
// newest verification of the current freight ended in a phase
// onVerification lists. lastRollback says the last promotion was itself a
// rollback: a rollback, or the freight it restored, is never rolled back
// again, so failures do not loop.
func RollbackTriggerOf(rb *AutoRollback, st *StageStatus, lastFreight string, lastRollback bool) *RollbackTrigger {
	if rb == nil || lastRollback {
		return nil
	}
	if last := st.LastPromotion; last != nil && last.Status != nil && last.Status.Phase != PromotionPhaseSucceeded {
		if rb.OnPromotionPhase(last.Status.Phase) && lastFreight != "" {
			return &RollbackTrigger{ID: "promotion/" + last.Name, Freight: lastFreight,
				Reason: fmt.Sprintf("promotion %s of freight %s %s", last.Name, lastFreight, last.Status.Phase)}
		}
		return nil
	}
	if len(st.FreightHistory) == 0 || len(st.FreightHistory[0].VerificationHistory) == 0 {
		return nil
	}
	v := st.FreightHistory[0].VerificationHistory[0]
	if !rb.OnVerificationPhase(v.Phase) || lastFreight == "" {
		return nil
	}
	return &RollbackTrigger{ID: "verification/" + v.ID, Freight: lastFreight,
		Reason: fmt.Sprintf("verification %s of freight %s %s", v.ID, lastFreight, v.Phase)}
}

// RollbackTarget returns the freight to roll the stage back to: the
// newest freight of bad's origin in the stage's history, other than bad,
// that was verified in the stage (nil when there is none).
func RollbackTarget(st *StageStatus, stage string, bad *Freight, freight map[string]*Freight) *Freight {
	for _, c := range st.FreightHistory {
		ref, ok := c.Freight[bad.Origin.String()]
		if !ok || ref.Name == bad.Name {
			continue
		}
		if f := freight[ref.Name]; f != nil && f.IsVerifiedIn(stage) {
			return f
		}
	}
	return nil
}
