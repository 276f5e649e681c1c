package model

import (
	"fmt"
	"slices"
	"time"
)

// ApprovalPolicy makes the promotions into the Stages it selects (by name
// or selector, as a PromotionPolicy) wait until enough distinct people
// approved them (Caravan addition: Kargo approves Freight for a Stage, not
// Promotions).
type ApprovalPolicy struct {
	Stage         string                   `json:"stage,omitempty"`
	StageSelector *PromotionPolicySelector `json:"stageSelector,omitempty"`
	// Approvers is how many distinct people must approve (default 1).
	Approvers int `json:"approvers,omitempty"`
	// Groups, when set, counts only approvers in one of these groups (the
	// OIDC groups claim; a token's group is its role: viewer, promoter,
	// admin).
	Groups []string `json:"groups,omitempty"`
	// Expiry is how long an approval counts (none: until the promotion
	// runs).
	Expiry *Duration `json:"expiry,omitempty"`
}

// PromotionApproval is one person's approval of a Promotion.
type PromotionApproval struct {
	Approver string   `json:"approver"`
	Groups   []string `json:"groups,omitempty"`
	Reason   string   `json:"reason"`
	At       *Time    `json:"at"`
}

// ApprovalPolicyFor returns the first policy that selects stage, or nil.
func ApprovalPolicyFor(policies []ApprovalPolicy, stage *Stage) *ApprovalPolicy {
	for i, p := range policies {
		if p.StageSelector != nil && SelectorMatches(p.StageSelector, stage) || p.Stage != "" && p.Stage == stage.Name {
			return &policies[i]
		}
	}
	return nil
}

// Required is how many approvers the policy needs.
func (p *ApprovalPolicy) Required() int { return max(p.Approvers, 1) }

// Counts reports whether an approval counts at now: from one of the
// policy's groups (when it names any) and not expired.
func (p *ApprovalPolicy) Counts(a PromotionApproval, now time.Time) bool {
	if len(p.Groups) > 0 && !slices.ContainsFunc(a.Groups, func(g string) bool { return slices.Contains(p.Groups, g) }) {
		return false
	}
	if p.Expiry != nil && p.Expiry.Duration > 0 && a.At != nil && !now.Before(a.At.Add(p.Expiry.Duration)) {
		return false
	}
	return true
}

// ApprovalState is where a promotion stands with its stage's policy.
type ApprovalState struct {
	Required int `json:"required"`
	// Approvers are the people whose approval counts now.
	Approvers []string `json:"approvers,omitempty"`
	// Missing is how many more approvals the promotion needs.
	Missing int `json:"missing"`
	// Groups are the groups an approver must be in (any of them).
	Groups []string `json:"groups,omitempty"`
	// ExpiresAt is when the first counting approval stops counting.
	ExpiresAt *Time `json:"expiresAt,omitempty"`
	// Requester may not approve: the person who asked for the promotion.
	Requester string `json:"requester,omitempty"`
}

// Approved says whether no approval is missing.
func (s ApprovalState) Approved() bool { return s.Missing == 0 }

// Approval returns where p stands with pol at now: who approved it (each
// person once), how many more it needs and until when the approvals it
// has count.
func Approval(pol *ApprovalPolicy, p *Promotion, now time.Time) ApprovalState {
	st := ApprovalState{Required: pol.Required(), Groups: pol.Groups, Requester: p.Annotations[AnnotationPromotionCreatedBy]}
	for _, a := range p.Status.Approvals {
		if !pol.Counts(a, now) || slices.Contains(st.Approvers, a.Approver) || a.Approver == st.Requester {
			continue
		}
		st.Approvers = append(st.Approvers, a.Approver)
		if pol.Expiry != nil && pol.Expiry.Duration > 0 && a.At != nil {
			if end := a.At.Add(pol.Expiry.Duration); st.ExpiresAt == nil || end.Before(st.ExpiresAt.Time) {
				st.ExpiresAt = NewTime(end)
			}
		}
	}
	st.Missing = max(st.Required-len(st.Approvers), 0)
	return st
}

func (v *validator) approvalPolicies(ps []ApprovalPolicy) {
	for i, p := range ps {
		f := fmt.Sprintf("spec.approvalPolicies[%d]", i)
		if (p.Stage == "") == (p.StageSelector == nil) {
			v.add(f, "exactly one of stage or stageSelector must be set")
		}
		if p.StageSelector != nil {
			v.pattern(f+".stageSelector.name", p.StageSelector.Name, true)
		}
		if p.Approvers < 0 || p.Approvers > 20 {
			v.add(f+".approvers", "must be between 1 and 20, got %d", p.Approvers)
		}
		if p.Expiry != nil && p.Expiry.Duration < 0 {
			v.add(f+".expiry", "must not be negative")
		}
	}
}

func (v *validator) autoRollback(f string, r *AutoRollback) {
	if r == nil {
		return
	}
	for i, ph := range r.OnPromotion {
		if ph != PromotionPhaseFailed && ph != PromotionPhaseErrored {
			v.add(fmt.Sprintf("%s.onPromotion[%d]", f, i), "must be Failed or Errored, got %q", ph)
		}
	}
	for i, ph := range r.OnVerification {
		if ph != VerificationPhaseFailed && ph != VerificationPhaseError {
			v.add(fmt.Sprintf("%s.onVerification[%d]", f, i), "must be Failed or Error, got %q", ph)
		}
	}
}

// AutoRollbackFor returns the auto-rollback of the first promotion policy
// that selects stage (the policy auto-promotion also follows), or nil.
func AutoRollbackFor(policies []PromotionPolicy, stage *Stage) *AutoRollback {
	for _, p := range policies {
		if policyMatches(p, stage) {
			return p.AutoRollback
		}
	}
	return nil
}

// OnPromotionPhase says whether a promotion ending in phase rolls back.
func (r *AutoRollback) OnPromotionPhase(phase PromotionPhase) bool {
	return r != nil && slices.Contains(r.OnPromotion, phase)
}

// OnVerificationPhase says whether a verification ending in phase rolls
// back (with no phases listed: Failed, as in Kargo).
func (r *AutoRollback) OnVerificationPhase(phase VerificationPhase) bool {
	if r == nil {
		return false
	}
	if len(r.OnVerification) == 0 {
		return phase == VerificationPhaseFailed
	}
	return slices.Contains(r.OnVerification, phase)
}
