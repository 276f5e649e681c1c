package model

// PromotionDryRun is what a dry-run promotion found: the steps it ran in a scratch
// work tree, their outputs, where it stopped (the first step with effects
// outside the work tree: a push, a pull request, an http call, an Argo CD
// update, …) and the unified diff each git repository it checked out
// would receive. Nothing of it is stored; secret values are redacted.
type PromotionDryRun struct {
	Stage   string `json:"stage"`
	Freight string `json:"freight"`
	// Phase is Succeeded when every step before StoppedAt succeeded (or
	// was skipped), else the phase the promotion would have ended in.
	Phase   PromotionPhase `json:"phase"`
	Message string         `json:"message,omitempty"`
	// Steps are the inflated steps, each with the status the dry run left
	// it in (steps from StoppedAt on have none).
	Steps []StepExecutionMetadata `json:"steps"`
	// Outputs are the outputs of the steps that ran, by alias.
	Outputs map[string]any `json:"outputs,omitempty"`
	// StoppedAt names the step the dry run stopped before, when it did.
	StoppedAt *DryRunStop `json:"stoppedAt,omitempty"`
	// Diffs are the git repositories the steps checked out, in the order
	// of their paths in the work dir.
	Diffs []DryRunDiff `json:"diffs"`
}

// DryRunStop is the step a dry run stopped before.
type DryRunStop struct {
	Index  int    `json:"index"`
	Alias  string `json:"alias"`
	Uses   string `json:"uses"`
	Reason string `json:"reason"`
}

// DryRunDiff is what one git work tree of a dry run would push: the
// commits its steps made, as one unified diff against the commit the
// work tree was checked out at.
type DryRunDiff struct {
	RepoURL string `json:"repoURL"`
	// Path is the work tree's path in the work dir.
	Path   string `json:"path"`
	Branch string `json:"branch,omitempty"`
	// Base is the commit checked out (empty on a new branch).
	Base string `json:"base,omitempty"`
	// Files are the changed files, with their added and deleted lines.
	Files []DryRunFile `json:"files,omitempty"`
	// Patch is the unified diff (git's format), cut at 256 KiB (Truncated
	// says so).
	Patch     string `json:"patch"`
	Truncated bool   `json:"truncated,omitempty"`
	// Uncommitted is set when the work tree has changes no step committed:
	// they are not in Patch, as a push would not carry them.
	Uncommitted bool `json:"uncommitted,omitempty"`
}

// DryRunFile is one changed file of a DryRunDiff.
type DryRunFile struct {
	Path      string `json:"path"`
	Additions int    `json:"additions"`
	Deletions int    `json:"deletions"`
}
