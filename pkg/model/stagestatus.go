package model

import (
	"fmt"
	"slices"
	"time"
)

// Stage condition types, as Kargo names them.
const (
	ConditionReady     = "Ready"
	ConditionPromoting = "Promoting"
	ConditionHealthy   = "Healthy"
	ConditionVerified  = "Verified"
)

// NotApplicable is the freight summary of a control-flow Stage.
const NotApplicable = "N/A"

// FreightSummary summarises the Freight a Stage uses, as Kargo does: the
// Freight's name when the Stage requests one origin ("N/A" when it has
// none yet), otherwise "<n>/<m> Fulfilled"; "N/A" for a control-flow Stage.
func FreightSummary(stage *Stage, s *StageStatus) string {
	if stage.IsControlFlow() {
		return NotApplicable
	}
	var current map[string]FreightReference
	if len(s.FreightHistory) > 0 {
		current = s.FreightHistory[0].Freight
	}
	if len(stage.Spec.RequestedFreight) == 1 {
		if ref, ok := current[stage.Spec.RequestedFreight[0].Origin.String()]; ok {
			return ref.Name
		}
		return NotApplicable
	}
	n := 0
	for _, req := range stage.Spec.RequestedFreight {
		if _, ok := current[req.Origin.String()]; ok {
			n++
		}
	}
	return fmt.Sprintf("%d/%d Fulfilled", n, len(stage.Spec.RequestedFreight))
}

// SyncStageStatus brings the parts of a Stage's status that follow from
// the rest up to date: observedGeneration, freightSummary,
// autoPromotionEnabled (from the project's policies) and the conditions
// Promoting, Healthy, Verified and Ready. A condition's
// lastTransitionTime changes only when its status does. A control-flow
// Stage is NotApplicable, "N/A", never auto-promoted and Ready. It reports
// whether anything changed.
func SyncStageStatus(stage *Stage, s *StageStatus, autoPromotionEnabled bool, now time.Time) bool {
	before := s.clone()
	s.ObservedGeneration = stage.Generation
	s.FreightSummary = FreightSummary(stage, s)
	gen := stage.Generation
	if stage.IsControlFlow() {
		s.Phase = StagePhaseNotApplicable
		s.AutoPromotionEnabled = false
		s.CurrentPromotion = nil
		s.Health = nil
		s.Conditions = slices.DeleteFunc(s.Conditions, func(c Condition) bool { return c.Type != ConditionReady })
		setCondition(s, Condition{Type: ConditionReady, Status: ConditionTrue, Reason: "ControlFlow",
			Message: "a control-flow Stage passes the Freight available to it downstream", ObservedGeneration: gen}, now)
		return !before.equal(s)
	}
	s.AutoPromotionEnabled = autoPromotionEnabled
	if s.Phase == StagePhaseNotApplicable {
		s.Phase = StagePhaseSteady // it was a control-flow Stage
	}

	ready := Condition{Type: ConditionReady, Status: ConditionTrue, Reason: "Ready", ObservedGeneration: gen}
	notReady := func(reason, msg string) {
		if ready.Status == ConditionTrue {
			ready.Status, ready.Reason, ready.Message = ConditionFalse, reason, msg
		}
	}

	if p := s.CurrentPromotion; p != nil {
		setCondition(s, Condition{Type: ConditionPromoting, Status: ConditionTrue, Reason: "ActivePromotion",
			Message: "promotion " + p.Name + " is running", ObservedGeneration: gen}, now)
		notReady("Promoting", "promotion "+p.Name+" is running")
	} else {
		removeCondition(s, ConditionPromoting)
	}
	if s.Phase == StagePhaseFailed && s.LastPromotion != nil {
		msg := "promotion " + s.LastPromotion.Name + " failed"
		if st := s.LastPromotion.Status; st != nil && st.Message != "" {
			msg += ": " + st.Message
		}
		notReady("LastPromotionFailed", msg)
	}

	switch h := s.Health; {
	case h == nil:
		removeCondition(s, ConditionHealthy)
	case h.Status == HealthStateHealthy:
		setCondition(s, Condition{Type: ConditionHealthy, Status: ConditionTrue, Reason: string(h.Status), ObservedGeneration: gen}, now)
	case h.Status == HealthStateUnhealthy:
		msg := joinIssues(h.Issues)
		setCondition(s, Condition{Type: ConditionHealthy, Status: ConditionFalse, Reason: string(h.Status), Message: msg, ObservedGeneration: gen}, now)
		notReady("Unhealthy", msg)
	default:
		setCondition(s, Condition{Type: ConditionHealthy, Status: ConditionUnknown, Reason: string(h.Status), Message: joinIssues(h.Issues), ObservedGeneration: gen}, now)
	}

	verified := false
	if len(s.FreightHistory) > 0 && len(s.FreightHistory[0].VerificationHistory) > 0 {
		v := s.FreightHistory[0].VerificationHistory[0]
		c := Condition{Type: ConditionVerified, Reason: string(v.Phase), Message: v.Message, ObservedGeneration: gen}
		switch {
		case v.Phase == VerificationPhaseSuccessful:
			c.Status = ConditionTrue
		case v.Phase.IsTerminal():
			c.Status = ConditionFalse
			notReady("VerificationFailed", fmt.Sprintf("verification %s: %s", v.Phase, v.Message))
		default:
			c.Status = ConditionUnknown
			notReady("Verifying", "verification "+v.ID+" is running")
		}
		setCondition(s, c, now)
		verified = true
	}
	if !verified {
		removeCondition(s, ConditionVerified)
	}
	setCondition(s, ready, now)
	return !before.equal(s)
}

func joinIssues(issues []string) string {
	out := ""
	for i, is := range issues {
		if i > 0 {
			out += "; "
		}
		out += is
	}
	return out
}

// setCondition sets c, keeping the lastTransitionTime of an earlier
// condition of its type with the same status.
func setCondition(s *StageStatus, c Condition, now time.Time) {
	c.LastTransitionTime = Time{Time: now.UTC().Truncate(time.Second)}
	for i, old := range s.Conditions {
		if old.Type != c.Type {
			continue
		}
		if old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		s.Conditions[i] = c
		return
	}
	s.Conditions = append(s.Conditions, c)
}

func removeCondition(s *StageStatus, typ string) {
	s.Conditions = slices.DeleteFunc(s.Conditions, func(c Condition) bool { return c.Type == typ })
}

// Condition returns the condition of type typ.
func (s *StageStatus) Condition(typ string) (Condition, bool) {
	for _, c := range s.Conditions {
		if c.Type == typ {
			return c, true
		}
	}
	return Condition{}, false
}

// syncedView is the part of a StageStatus SyncStageStatus writes.
type syncedView struct {
	gen        int64
	summary    string
	auto       bool
	phase      StagePhase
	promotion  bool
	health     bool
	conditions []Condition
}

func (s *StageStatus) clone() syncedView {
	return syncedView{s.ObservedGeneration, s.FreightSummary, s.AutoPromotionEnabled, s.Phase,
		s.CurrentPromotion != nil, s.Health != nil, slices.Clone(s.Conditions)}
}

func (v syncedView) equal(s *StageStatus) bool {
	return v.gen == s.ObservedGeneration && v.summary == s.FreightSummary && v.auto == s.AutoPromotionEnabled &&
		v.phase == s.Phase && v.promotion == (s.CurrentPromotion != nil) && v.health == (s.Health != nil) &&
		slices.EqualFunc(v.conditions, s.Conditions, func(a, b Condition) bool {
			return a.Type == b.Type && a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message &&
				a.ObservedGeneration == b.ObservedGeneration && a.LastTransitionTime.Equal(b.LastTransitionTime.Time)
		})
}
