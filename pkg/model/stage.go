package model

import (
	"encoding/json"
	"fmt"
)

// StagePhase is where a Stage is in its lifecycle.
type StagePhase string

// Stage phases.
const (
	StagePhaseNotApplicable StagePhase = "NotApplicable"
	StagePhaseSteady        StagePhase = "Steady"
	StagePhasePromoting     StagePhase = "Promoting"
	StagePhaseVerifying     StagePhase = "Verifying"
	StagePhaseFailed        StagePhase = "Failed"
)

// VerificationPhase mirrors Argo Rollouts' AnalysisRun phases.
type VerificationPhase string

// Verification phases.
const (
	VerificationPhasePending      VerificationPhase = "Pending"
	VerificationPhaseRunning      VerificationPhase = "Running"
	VerificationPhaseSuccessful   VerificationPhase = "Successful"
	VerificationPhaseFailed       VerificationPhase = "Failed"
	VerificationPhaseError        VerificationPhase = "Error"
	VerificationPhaseAborted      VerificationPhase = "Aborted"
	VerificationPhaseInconclusive VerificationPhase = "Inconclusive"
)

// IsTerminal reports whether the phase is final.
func (p VerificationPhase) IsTerminal() bool {
	switch p {
	case VerificationPhaseSuccessful, VerificationPhaseFailed, VerificationPhaseError,
		VerificationPhaseAborted, VerificationPhaseInconclusive:
		return true
	}
	return false
}

// HealthState is a Stage's health.
type HealthState string

// Health states.
const (
	HealthStateHealthy       HealthState = "Healthy"
	HealthStateNotApplicable HealthState = "NotApplicable"
	HealthStateProgressing   HealthState = "Progressing"
	HealthStateUnknown       HealthState = "Unknown"
	HealthStateUnhealthy     HealthState = "Unhealthy"
)

// FreightOriginKind is the kind of resource Freight comes from.
type FreightOriginKind string

// FreightOriginKindWarehouse is the only origin kind.
const FreightOriginKindWarehouse FreightOriginKind = "Warehouse"

// AvailabilityStrategy says how many upstream Stages must have verified
// Freight before it is available downstream.
type AvailabilityStrategy string

// Availability strategies.
const (
	AvailabilityStrategyOneOf AvailabilityStrategy = "OneOf"
	AvailabilityStrategyAll   AvailabilityStrategy = "All"
)

// AutoPromotionSelectionPolicy says which Freight auto-promotion picks.
type AutoPromotionSelectionPolicy string

// Auto-promotion selection policies.
const (
	AutoPromotionSelectionPolicyNewestFreight AutoPromotionSelectionPolicy = "NewestFreight"
	AutoPromotionSelectionPolicyMatchUpstream AutoPromotionSelectionPolicy = "MatchUpstream"
)

// Stage is a promotion target.
type Stage struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       StageSpec   `json:"spec"`
	Status     StageStatus `json:"status,omitzero"`
}

// StageSpec says which Freight a Stage takes and how it is promoted and
// verified.
type StageSpec struct {
	Shard             string              `json:"shard,omitempty" caravan:"ignored"`
	Vars              []PromotionVariable `json:"vars,omitempty"`
	RequestedFreight  []FreightRequest    `json:"requestedFreight"`
	PromotionTemplate *PromotionTemplate  `json:"promotionTemplate,omitempty"`
	Verification      *Verification       `json:"verification,omitempty"`
	// Targets makes the Stage target-aware in Kargo (it promotes to each
	// selected Target through PromotionRequests). Caravan promotes every
	// Stage in Kargo's classic mode, to its one implicit target.
	Targets *StageTargets `json:"targets,omitempty" warn:"Caravan promotes every Stage in classic mode (one implicit target); Targets and PromotionRequests are stored only"`
}

// StageTargets selects the Targets a Stage governs.
type StageTargets struct {
	Selectors []LabelSelector `json:"selectors,omitempty"`
}

// LabelSelector is a Kubernetes label selector.
type LabelSelector struct {
	MatchLabels      map[string]string          `json:"matchLabels,omitempty"`
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// FreightRequest asks for Freight of one origin from some sources.
type FreightRequest struct {
	Origin  FreightOrigin  `json:"origin"`
	Sources FreightSources `json:"sources"`
}

// FreightOrigin names where Freight comes from.
type FreightOrigin struct {
	Kind FreightOriginKind `json:"kind"`
	Name string            `json:"name"`
}

// String returns "<Kind>/<Name>", as Kargo formats it.
func (o FreightOrigin) String() string {
	return fmt.Sprintf("%s/%s", o.Kind, o.Name)
}

// FreightSources says where requested Freight may come from: directly from
// its Warehouse, or from upstream Stages.
type FreightSources struct {
	Direct               bool                  `json:"direct,omitempty"`
	Stages               []string              `json:"stages,omitempty"`
	RequiredSoakTime     *Duration             `json:"requiredSoakTime,omitempty"`
	AvailabilityStrategy AvailabilityStrategy  `json:"availabilityStrategy,omitempty"`
	AutoPromotionOptions *AutoPromotionOptions `json:"autoPromotionOptions,omitempty"`
}

// AutoPromotionOptions tune auto-promotion for one request.
type AutoPromotionOptions struct {
	SelectionPolicy AutoPromotionSelectionPolicy `json:"selectionPolicy,omitempty"`
}

// PromotionTemplate is the Promotion a Stage creates.
type PromotionTemplate struct {
	Spec PromotionTemplateSpec `json:"spec"`
}

// PromotionTemplateSpec holds a template's variables and steps.
type PromotionTemplateSpec struct {
	Vars  []PromotionVariable `json:"vars,omitempty"`
	Steps []PromotionStep     `json:"steps,omitempty"`
}

// Verification says how a Stage's Freight is verified.
type Verification struct {
	AnalysisTemplates   []AnalysisTemplateReference `json:"analysisTemplates,omitempty"`
	AnalysisRunMetadata *AnalysisRunMetadata        `json:"analysisRunMetadata,omitempty"`
	Args                []AnalysisRunArgument       `json:"args,omitempty"`
}

// AnalysisTemplateReference names an AnalysisTemplate (kind empty or
// AnalysisTemplate) or a ClusterAnalysisTemplate.
type AnalysisTemplateReference struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

// AnalysisRunMetadata is added to the analysis runs of a verification.
type AnalysisRunMetadata struct {
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// AnalysisRunArgument is an argument passed to analysis templates.
type AnalysisRunArgument struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// StageStatus is a Stage's observed state.
type StageStatus struct {
	Conditions           []Condition         `json:"conditions,omitempty"`
	LastHandledRefresh   string              `json:"lastHandledRefresh,omitempty"`
	Phase                StagePhase          `json:"phase,omitempty"`
	FreightHistory       []FreightCollection `json:"freightHistory,omitempty"`
	FreightSummary       string              `json:"freightSummary,omitempty"`
	Health               *Health             `json:"health,omitempty"`
	Message              string              `json:"message,omitempty"`
	ObservedGeneration   int64               `json:"observedGeneration,omitempty"`
	CurrentPromotion     *PromotionReference `json:"currentPromotion,omitempty"`
	LastPromotion        *PromotionReference `json:"lastPromotion,omitempty"`
	AutoPromotionEnabled bool                `json:"autoPromotionEnabled,omitempty"`
	// AutoPromotionHolds are the origins whose auto-promotion is paused,
	// keyed by origin ("Warehouse/<name>"): someone promoted Freight other
	// than auto-promotion's candidate by hand.
	AutoPromotionHolds AutoPromotionHolds `json:"autoPromotionHolds,omitempty"`
	// EffectiveAutoPromotionHolds are the holds in force, pending
	// promotions' intents included (Caravan writes AutoPromotionHolds
	// only: its holds take effect when a promotion starts).
	EffectiveAutoPromotionHolds AutoPromotionHolds `json:"effectiveAutoPromotionHolds,omitempty"`
	// CurrentPromotionRequest and LastPromotionRequest are Kargo's
	// target-aware promotions, which Caravan does not run.
	CurrentPromotionRequest *PromotionRequestReference `json:"currentPromotionRequest,omitempty"`
	LastPromotionRequest    *PromotionRequestReference `json:"lastPromotionRequest,omitempty"`
	// PromotionWindowStatus is Kargo Enterprise's promotion window state.
	PromotionWindowStatus *PromotionWindowStatus `json:"promotionWindowStatus,omitempty"`
	// Metadata is what set-metadata steps stored for the Stage, read by
	// the stageMetadata() expression function.
	Metadata map[string]any `json:"metadata,omitempty"`
	// Fence is the stage-lease token of the promoter replica that last
	// recorded a promotion here (Caravan addition): a replica whose lease
	// passed on cannot record one any more.
	Fence uint64 `json:"fence,omitempty"`
}

// AutoPromotionHold pauses auto-promotion of one origin into a Stage until
// it is lifted: by a promotion of the candidate, by a promotion annotated
// kargo.akuity.io/auto-promotion-resume, or by the resume action.
type AutoPromotionHold struct {
	Origin        FreightOrigin `json:"origin"`
	FreightName   string        `json:"freightName,omitempty"`
	PromotionName string        `json:"promotionName,omitempty"`
	Actor         string        `json:"actor,omitempty"`
	CreatedAt     *Time         `json:"createdAt,omitempty"`
	// Reason says why the hold was placed, for people (Caravan addition).
	Reason string `json:"reason,omitempty"`
}

// AutoPromotionHolds are holds keyed by origin ("Warehouse/<name>").
type AutoPromotionHolds map[string]AutoPromotionHold

// UnmarshalJSON reads Kargo's map and, from status stored by earlier
// Caravan versions, a list of {origin, freight, promotion, since}.
func (h *AutoPromotionHolds) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '[' {
		var old []struct {
			Origin    FreightOrigin `json:"origin"`
			Freight   string        `json:"freight"`
			Promotion string        `json:"promotion"`
			Since     *Time         `json:"since"`
		}
		if err := json.Unmarshal(b, &old); err != nil {
			return err
		}
		*h = AutoPromotionHolds{}
		for _, o := range old {
			(*h)[o.Origin.String()] = AutoPromotionHold{Origin: o.Origin, FreightName: o.Freight, PromotionName: o.Promotion, CreatedAt: o.Since}
		}
		return nil
	}
	var m map[string]AutoPromotionHold
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*h = m
	return nil
}

// PromotionRequestReference summarises a PromotionRequest of a Stage.
type PromotionRequestReference struct {
	Name       string                   `json:"name"`
	Phase      string                   `json:"phase,omitempty"`
	Freight    *PromotionRequestFreight `json:"freight,omitempty"`
	FinishedAt *Time                    `json:"finishedAt,omitempty"`
}

// PromotionRequestFreight names the Freight of a PromotionRequest.
type PromotionRequestFreight struct {
	Name string `json:"name"`
}

// PromotionWindowStatus says whether promotion windows let a Stage promote
// now and when that changes.
type PromotionWindowStatus struct {
	Closed          bool   `json:"closed,omitempty"`
	Reason          string `json:"reason,omitempty"`
	NextOpen        *Time  `json:"nextOpen,omitempty"`
	NextClose       *Time  `json:"nextClose,omitempty"`
	NextCloseReason string `json:"nextCloseReason,omitempty"`
}

// FreightReference is a summary of one piece of Freight.
type FreightReference struct {
	Name      string              `json:"name,omitempty"`
	Origin    FreightOrigin       `json:"origin,omitzero"`
	Commits   []GitCommit         `json:"commits,omitempty"`
	Images    []Image             `json:"images,omitempty"`
	Charts    []Chart             `json:"charts,omitempty"`
	Artifacts []ArtifactReference `json:"artifacts,omitempty"`
}

// FreightCollection is the Freight (one per origin) deployed to a Stage
// together, with its verification history.
type FreightCollection struct {
	ID                  string                      `json:"id"`
	Freight             map[string]FreightReference `json:"items,omitempty"`
	VerificationHistory []VerificationInfo          `json:"verificationHistory,omitempty"`
}

// VerificationInfo is one verification of a FreightCollection.
type VerificationInfo struct {
	ID          string                `json:"id,omitempty"`
	Actor       string                `json:"actor,omitempty"`
	StartTime   *Time                 `json:"startTime,omitempty"`
	Phase       VerificationPhase     `json:"phase,omitempty"`
	Message     string                `json:"message,omitempty"`
	AnalysisRun *AnalysisRunReference `json:"analysisRun,omitempty"`
	FinishTime  *Time                 `json:"finishTime,omitempty"`
}

// AnalysisRunReference points at the run behind a verification.
type AnalysisRunReference struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Phase     string `json:"phase"`
}

// Health is a Stage's assessed health.
type Health struct {
	Status HealthState    `json:"status,omitempty"`
	Issues []string       `json:"issues,omitempty"`
	Config map[string]any `json:"config,omitempty"`
	Output map[string]any `json:"output,omitempty"`
}

// PromotionReference summarises a Promotion of a Stage.
type PromotionReference struct {
	Name       string            `json:"name"`
	Freight    *FreightReference `json:"freight,omitempty"`
	Status     *PromotionStatus  `json:"status,omitempty"`
	FinishedAt *Time             `json:"finishedAt,omitempty"`
}

// Default applies Kargo's defaults: availabilityStrategy OneOf for requests
// from upstream Stages and selectionPolicy NewestFreight.
func (s *Stage) Default() {
	for i := range s.Spec.RequestedFreight {
		src := &s.Spec.RequestedFreight[i].Sources
		if src.AvailabilityStrategy == "" && len(src.Stages) > 0 {
			src.AvailabilityStrategy = AvailabilityStrategyOneOf
		}
		if o := src.AutoPromotionOptions; o != nil && o.SelectionPolicy == "" {
			o.SelectionPolicy = AutoPromotionSelectionPolicyNewestFreight
		}
	}
}

// UpstreamStages returns the upstream Stage names of all requests, each once,
// in the order they first appear.
func (s *Stage) UpstreamStages() []string {
	var out []string
	seen := map[string]bool{}
	for _, req := range s.Spec.RequestedFreight {
		for _, up := range req.Sources.Stages {
			if !seen[up] {
				seen[up] = true
				out = append(out, up)
			}
		}
	}
	return out
}

// RequestsOrigin reports whether the Stage requests Freight of origin o.
func (s *Stage) RequestsOrigin(o FreightOrigin) bool {
	return s.request(o) != nil
}

func (s *Stage) request(o FreightOrigin) *FreightRequest {
	for i := range s.Spec.RequestedFreight {
		if s.Spec.RequestedFreight[i].Origin == o {
			return &s.Spec.RequestedFreight[i]
		}
	}
	return nil
}

// IsControlFlow reports whether the Stage has no promotion steps, so that it
// only gates Freight on its way downstream.
func (s *Stage) IsControlFlow() bool {
	return s.Spec.PromotionTemplate == nil || len(s.Spec.PromotionTemplate.Spec.Steps) == 0
}
