package model

// Target is a destination target-aware Stages promote to, with parameters
// their steps read. Caravan promotes every Stage in Kargo's classic mode
// (one implicit target), so it keeps Targets as applied and uses none.
type Target struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       TargetSpec     `json:"spec,omitzero" warn:"Caravan promotes every Stage in classic mode (one implicit target); Targets are stored only"`
	Status     map[string]any `json:"status,omitempty"`
}

// TargetSpec holds a Target's parameters (any JSON).
type TargetSpec struct {
	Params map[string]any `json:"params,omitempty"`
}

// PromotionRequest is Kargo's request to promote Freight to a set of a
// Stage's Targets. Caravan keeps it as applied and runs nothing for it:
// promote a classic Stage with a Promotion (or the promote action).
type PromotionRequest struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       PromotionRequestSpec   `json:"spec" warn:"PromotionRequests are stored only: Caravan promotes classic Stages through Promotions"`
	Status     PromotionRequestStatus `json:"status,omitzero"`
}

// PromotionRequestSpec names the Stage, the Freight and the Targets.
type PromotionRequestSpec struct {
	Stage   string                 `json:"stage"`
	Freight string                 `json:"freight"`
	Targets []LocalObjectReference `json:"targets"`
}

// PromotionRequestStatus is a PromotionRequest's observed state.
type PromotionRequestStatus struct {
	Conditions         []Condition                    `json:"conditions,omitempty"`
	ObservedGeneration int64                          `json:"observedGeneration,omitempty"`
	Phase              string                         `json:"phase,omitempty"`
	StartedAt          *Time                          `json:"startedAt,omitempty"`
	FinishedAt         *Time                          `json:"finishedAt,omitempty"`
	Summary            *PromotionRequestSummary       `json:"summary,omitempty"`
	Targets            []PromotionRequestTargetStatus `json:"targets,omitempty"`
}

// PromotionRequestSummary counts a PromotionRequest's Promotions by phase.
type PromotionRequestSummary struct {
	Pending   int32 `json:"pending,omitempty"`
	Running   int32 `json:"running,omitempty"`
	Succeeded int32 `json:"succeeded,omitempty"`
	Failed    int32 `json:"failed,omitempty"`
	Errored   int32 `json:"errored,omitempty"`
	Aborted   int32 `json:"aborted,omitempty"`
}

// PromotionRequestTargetStatus is the Promotion of one Target.
type PromotionRequestTargetStatus struct {
	Name      string `json:"name"`
	Phase     string `json:"phase,omitempty"`
	Promotion string `json:"promotion,omitempty"`
}
