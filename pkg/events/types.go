package events

import "time"

// Event types. A type name is part of every subject and of durable consumer
// filters: renaming one is a breaking change.
const (
	TypeWarehouseRefreshRequested Type = "WarehouseRefreshRequested"
	TypeFreightDiscovered         Type = "FreightDiscovered"
	TypeFreightApproved           Type = "FreightApproved"
	TypePromotionRequested        Type = "PromotionRequested"
	TypePromotionStarted          Type = "PromotionStarted"
	TypePromotionStepFinished     Type = "PromotionStepFinished"
	TypePromotionSucceeded        Type = "PromotionSucceeded"
	TypePromotionFailed           Type = "PromotionFailed"
	TypeVerificationStarted       Type = "VerificationStarted"
	TypeStageVerified             Type = "StageVerified"
	TypeResourceApplied           Type = "ResourceApplied"
	TypeResourceDeleted           Type = "ResourceDeleted"

	TypeFreightUpdated               Type = "FreightUpdated"
	TypePromotionAbortRequested      Type = "PromotionAbortRequested"
	TypeVerificationRequested        Type = "VerificationRequested"
	TypeVerificationAbortRequested   Type = "VerificationAbortRequested"
	TypeAutoPromotionResumeRequested Type = "AutoPromotionResumeRequested"
	TypeAutoPromotionHeld            Type = "AutoPromotionHeld"
	TypeStageHealthChanged           Type = "StageHealthChanged"
	TypePullRequestClosed            Type = "PullRequestClosed"
	TypePromotionApproved            Type = "PromotionApproved"
)

// versions holds the current payload version of each type. Bump a version
// when a payload changes incompatibly; consumers can branch on it.
var versions = map[Type]int{}

func versionOf(t Type) int {
	if v, ok := versions[t]; ok {
		return v
	}
	return 1
}

// ArtifactHint tells discovery which artifact changed, so a refresh can be
// evaluated without listing a whole repository.
type ArtifactHint struct {
	RepoURL string   `json:"repoURL"`
	Tag     string   `json:"tag,omitempty"`
	Digest  string   `json:"digest,omitempty"`
	Commit  string   `json:"commit,omitempty"`
	Branch  string   `json:"branch,omitempty"`
	Paths   []string `json:"paths,omitempty"`
}

// WarehouseRefreshRequested asks discovery to discover a Warehouse now.
type WarehouseRefreshRequested struct {
	Warehouse string        `json:"warehouse"`
	Hint      *ArtifactHint `json:"hint,omitempty"`
	Reason    string        `json:"reason,omitempty"`
}

// FreightOrigin names where freight came from (Kargo's FreightOrigin).
type FreightOrigin struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// FreightDiscovered is published once per new Freight.
type FreightDiscovered struct {
	Freight string        `json:"freight"`
	Alias   string        `json:"alias,omitempty"`
	Origin  FreightOrigin `json:"origin"`
}

// FreightApproved is published when a person approves freight for a stage.
type FreightApproved struct {
	Freight string `json:"freight"`
	Stage   string `json:"stage"`
}

// PromotionRequested asks the promoter to run a stored Promotion.
type PromotionRequested struct {
	Promotion string `json:"promotion"`
	Stage     string `json:"stage"`
	Freight   string `json:"freight"`
}

// PromotionStarted is published when a promotion begins running.
type PromotionStarted struct {
	Promotion string `json:"promotion"`
	Stage     string `json:"stage"`
	Freight   string `json:"freight"`
}

// PromotionStepFinished is published after each step of a promotion.
type PromotionStepFinished struct {
	Promotion  string    `json:"promotion"`
	Stage      string    `json:"stage"`
	Step       int       `json:"step"`
	Alias      string    `json:"alias"`
	Uses       string    `json:"uses,omitempty"`
	Status     string    `json:"status"`
	Message    string    `json:"message,omitempty"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
}

// PromotionSucceeded is published when every step of a promotion succeeded.
type PromotionSucceeded struct {
	Promotion string `json:"promotion"`
	Stage     string `json:"stage"`
	Freight   string `json:"freight"`
}

// PromotionFailed is published when a promotion ends in phase Failed,
// Errored or Aborted.
type PromotionFailed struct {
	Promotion string `json:"promotion"`
	Stage     string `json:"stage"`
	Freight   string `json:"freight"`
	Phase     string `json:"phase"`
	Message   string `json:"message,omitempty"`
}

// VerificationStarted is published when a stage's verification begins.
type VerificationStarted struct {
	Stage        string `json:"stage"`
	Freight      string `json:"freight"`
	Verification string `json:"verification"`
}

// StageVerified is published when a stage's verification ends.
// Phase is Successful, Failed, Error, Inconclusive or Aborted.
type StageVerified struct {
	Stage        string `json:"stage"`
	Freight      string `json:"freight"`
	Verification string `json:"verification"`
	Phase        string `json:"phase"`
	Message      string `json:"message,omitempty"`
	Summary      string `json:"summary,omitempty"`
}

// ResourceApplied is published after a resource was created or updated.
// Secrets are announced by kind and name only; no data ever travels.
type ResourceApplied struct {
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Action     string `json:"action"`
	Generation int64  `json:"generation,omitempty"`
}

// ResourceDeleted is published after a resource was deleted.
type ResourceDeleted struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// FreightUpdated is published when freight changes other than by
// discovery: a new alias, approval, verification, a stage taking it in.
type FreightUpdated struct {
	Freight string `json:"freight"`
	Alias   string `json:"alias,omitempty"`
	Change  string `json:"change"`
}

// PromotionAbortRequested asks the promoter to abort a promotion.
type PromotionAbortRequested struct {
	Promotion string `json:"promotion"`
	Stage     string `json:"stage"`
}

// VerificationRequested asks the verifier to (re-)verify a stage's current
// freight.
type VerificationRequested struct {
	Stage   string `json:"stage"`
	Freight string `json:"freight,omitempty"`
}

// VerificationAbortRequested asks the verifier to abort a stage's running
// verification.
type VerificationAbortRequested struct {
	Stage string `json:"stage"`
}

// PromotionApproved says a person approved a promotion that an approval
// policy holds; the promoter checks the stage's queue again.
type PromotionApproved struct {
	Promotion string `json:"promotion"`
	Stage     string `json:"stage"`
	Approver  string `json:"approver"`
	// Missing is how many approvals the promotion still needs.
	Missing int `json:"missing"`
}

// AutoPromotionResumeRequested lifts a stage's auto-promotion hold.
type AutoPromotionResumeRequested struct {
	Stage string `json:"stage"`
}

// AutoPromotionHeld is published by the promoter when a manual promotion
// of freight older than the newest available stops auto-promotion of its
// origin into the stage, until AutoPromotionResumeRequested lifts it.
type AutoPromotionHeld struct {
	Stage     string        `json:"stage"`
	Origin    FreightOrigin `json:"origin"`
	Freight   string        `json:"freight"`
	Promotion string        `json:"promotion"`
	Reason    string        `json:"reason,omitempty"`
}

// StageHealthChanged is published when the promoter's health check of a
// stage changes its verdict (Healthy, Unhealthy, Progressing, Unknown).
type StageHealthChanged struct {
	Stage    string `json:"stage"`
	Health   string `json:"health"`
	Previous string `json:"previous,omitempty"`
	Message  string `json:"message,omitempty"`
}

// PullRequestClosed is published by the gateway when a git host's webhook
// reports a pull (merge) request closed, merged or not, so promotions
// waiting in git-wait-for-pr can look again at once. Its subject is
// {Kind: "Repository", Name: RepoURL}.
type PullRequestClosed struct {
	// RepoURL is the repository as the payload names it (clone URL).
	RepoURL string `json:"repoURL"`
	// Number is the pull request's number (GitLab: its iid).
	Number int64 `json:"number"`
	// Merged says whether it was merged; MergeCommit is the commit then.
	Merged      bool   `json:"merged"`
	MergeCommit string `json:"mergeCommit,omitempty"`
	// Branch is the target (base) branch.
	Branch string `json:"branch,omitempty"`
	// Provider is the receiver type (github, gitlab, gitea, bitbucket).
	Provider string `json:"provider,omitempty"`
}

// EventType implementations.

func (WarehouseRefreshRequested) EventType() Type    { return TypeWarehouseRefreshRequested }
func (FreightDiscovered) EventType() Type            { return TypeFreightDiscovered }
func (FreightApproved) EventType() Type              { return TypeFreightApproved }
func (PromotionRequested) EventType() Type           { return TypePromotionRequested }
func (PromotionStarted) EventType() Type             { return TypePromotionStarted }
func (PromotionStepFinished) EventType() Type        { return TypePromotionStepFinished }
func (PromotionSucceeded) EventType() Type           { return TypePromotionSucceeded }
func (PromotionFailed) EventType() Type              { return TypePromotionFailed }
func (VerificationStarted) EventType() Type          { return TypeVerificationStarted }
func (StageVerified) EventType() Type                { return TypeStageVerified }
func (ResourceApplied) EventType() Type              { return TypeResourceApplied }
func (ResourceDeleted) EventType() Type              { return TypeResourceDeleted }
func (FreightUpdated) EventType() Type               { return TypeFreightUpdated }
func (PromotionAbortRequested) EventType() Type      { return TypePromotionAbortRequested }
func (VerificationRequested) EventType() Type        { return TypeVerificationRequested }
func (VerificationAbortRequested) EventType() Type   { return TypeVerificationAbortRequested }
func (AutoPromotionResumeRequested) EventType() Type { return TypeAutoPromotionResumeRequested }

// EventType implements Event.
func (PromotionApproved) EventType() Type  { return TypePromotionApproved }
func (AutoPromotionHeld) EventType() Type  { return TypeAutoPromotionHeld }
func (StageHealthChanged) EventType() Type { return TypeStageHealthChanged }
func (PullRequestClosed) EventType() Type  { return TypePullRequestClosed }
