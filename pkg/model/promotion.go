package model

// PromotionPhase is where a Promotion is in its lifecycle.
type PromotionPhase string

// Promotion phases.
const (
	PromotionPhasePending   PromotionPhase = "Pending"
	PromotionPhaseRunning   PromotionPhase = "Running"
	PromotionPhaseSucceeded PromotionPhase = "Succeeded"
	PromotionPhaseFailed    PromotionPhase = "Failed"
	PromotionPhaseErrored   PromotionPhase = "Errored"
	PromotionPhaseAborted   PromotionPhase = "Aborted"
)

// IsTerminal reports whether the phase is final.
func (p PromotionPhase) IsTerminal() bool {
	switch p {
	case PromotionPhaseSucceeded, PromotionPhaseFailed, PromotionPhaseErrored, PromotionPhaseAborted:
		return true
	}
	return false
}

// PromotionStepStatus is the outcome of one step.
type PromotionStepStatus string

// Promotion step statuses.
const (
	PromotionStepStatusRunning   PromotionStepStatus = "Running"
	PromotionStepStatusSucceeded PromotionStepStatus = "Succeeded"
	PromotionStepStatusFailed    PromotionStepStatus = "Failed"
	PromotionStepStatusErrored   PromotionStepStatus = "Errored"
	PromotionStepStatusSkipped   PromotionStepStatus = "Skipped"
	PromotionStepStatusAborted   PromotionStepStatus = "Aborted"
)

// Promotion asks to move a Stage to a piece of Freight.
type Promotion struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       PromotionSpec   `json:"spec"`
	Status     PromotionStatus `json:"status,omitzero"`
}

// PromotionSpec names the Stage, the Freight and the steps to run.
type PromotionSpec struct {
	Stage   string              `json:"stage"`
	Freight string              `json:"freight"`
	Vars    []PromotionVariable `json:"vars,omitempty"`
	Steps   []PromotionStep     `json:"steps,omitempty"`
	// Origin is the origin of the Freight, set by Kargo's admission;
	// Caravan reads the Freight's own origin.
	Origin *FreightOrigin `json:"origin,omitempty"`
	// Target names the Target a target-aware Stage promotes to.
	Target string `json:"target,omitempty" warn:"Caravan promotes in classic mode only: a Promotion's target is stored, not used"`
}

// PromotionVariable is a variable steps may reference as ${{ vars.name }}.
type PromotionVariable struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// PromotionStep is one directive of a Promotion: either a step runner
// (uses) or a PromotionTask to expand (task).
type PromotionStep struct {
	Uses            string              `json:"uses,omitempty"`
	Task            *PromotionTaskRef   `json:"task,omitempty"`
	As              string              `json:"as,omitempty"`
	If              string              `json:"if,omitempty"`
	ContinueOnError bool                `json:"continueOnError,omitempty"`
	Retry           *PromotionStepRetry `json:"retry,omitempty"`
	Vars            []PromotionVariable `json:"vars,omitempty"`
	// Config is the step's free-form configuration; strings may hold
	// ${{ }} expressions, kept as written.
	Config map[string]any `json:"config,omitempty"`
}

// PromotionTaskRef names a PromotionTask (kind empty or PromotionTask) or a
// ClusterPromotionTask.
type PromotionTaskRef struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

// PromotionStepRetry is a step's retry policy.
type PromotionStepRetry struct {
	Timeout        *Duration `json:"timeout,omitempty"`
	ErrorThreshold uint32    `json:"errorThreshold,omitempty"`
}

// PromotionStatus is a Promotion's observed state.
type PromotionStatus struct {
	LastHandledRefresh    string                  `json:"lastHandledRefresh,omitempty"`
	Phase                 PromotionPhase          `json:"phase,omitempty"`
	Message               string                  `json:"message,omitempty"`
	Freight               *FreightReference       `json:"freight,omitempty"`
	FreightCollection     *FreightCollection      `json:"freightCollection,omitempty"`
	HealthChecks          []HealthCheckStep       `json:"healthChecks,omitempty"`
	StartedAt             *Time                   `json:"startedAt,omitempty"`
	FinishedAt            *Time                   `json:"finishedAt,omitempty"`
	CurrentStep           int64                   `json:"currentStep,omitempty"`
	StepExecutionMetadata []StepExecutionMetadata `json:"stepExecutionMetadata,omitempty"`
	// State holds the steps' outputs, keyed by step alias.
	State map[string]any `json:"state,omitempty"`
	// Fence is the stage-lease token of the promoter replica that last
	// wrote this status (Caravan addition): a replica whose lease passed
	// on cannot write it any more, so it cannot record "about to run step
	// N" and run the step's effects.
	Fence uint64 `json:"fence,omitempty"`
	// AutoPromotionHold is the hold this promotion placed on its stage's
	// auto-promotion (a manual promotion of freight older than the newest
	// available), until `caravan resume stage` lifts it (Caravan addition).
	AutoPromotionHold *AutoPromotionHold `json:"autoPromotionHold,omitempty"`
	// Approvals are the people who approved the promotion, for a Stage
	// an approval policy gates (Caravan addition).
	Approvals []PromotionApproval `json:"approvals,omitempty"`
}

// StepExecutionMetadata records how one step ran.
type StepExecutionMetadata struct {
	Alias string `json:"alias,omitempty"`
	// Uses is the step's kind (the runner it uses), tasks inflated
	// (Caravan addition: Kargo shows it from the spec's steps).
	Uses       string              `json:"uses,omitempty"`
	StartedAt  *Time               `json:"startedAt,omitempty"`
	FinishedAt *Time               `json:"finishedAt,omitempty"`
	ErrorCount uint32              `json:"errorCount,omitempty"`
	Status     PromotionStepStatus `json:"status,omitempty"`
	Message    string              `json:"message,omitempty"`
	// ContinueOnError records the step's continueOnError.
	ContinueOnError bool `json:"continueOnError,omitempty"`
}

// HealthCheckStep is a health check a Promotion left for its Stage.
type HealthCheckStep struct {
	Uses   string         `json:"uses"`
	Config map[string]any `json:"config,omitempty"`
}

// PromotionTask is a reusable list of steps within a project.
type PromotionTask struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       PromotionTaskSpec `json:"spec"`
}

// ClusterPromotionTask is a PromotionTask available to every project.
type ClusterPromotionTask struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       PromotionTaskSpec `json:"spec"`
}

// PromotionTaskSpec holds a task's inputs (vars) and steps.
type PromotionTaskSpec struct {
	Vars  []PromotionVariable `json:"vars,omitempty"`
	Steps []PromotionStep     `json:"steps"`
}
