package verification

import (
	"time"

	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/state"

	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// Key prefixes in the caravan-verifications bucket.
const (
	recordPrefix = "run"
	stagePrefix  = "stage"
)

// Key is the key of a verification's Record: run.<project>.<stage>.<id>.
func Key(project, stage, id string) string { return state.Key(recordPrefix, project, stage, id) }

// stageKey is the key of a stage's current verification:
// stage.<project>.<stage>.
func stageKey(project, stage string) string { return state.Key(stagePrefix, project, stage) }

// current names a stage's current verification (the newest of its
// current freight): the one an abort request aborts, the one the next
// verification supersedes.
type current struct {
	ID string `json:"id"`
}

// Record is one verification as kept in the caravan-verifications bucket
// under Key. Exactly one replica owns it at a time, under its Lease
// (pkg/lease): the owner renews it; when it lapses another replica claims
// it (a new token: the old owner's writes are refused) and continues the
// analysis from Result, the progress saved after every measurement. Only
// the owner may finish it, so its outcome is recorded once; Applied says
// the outcome's effects (freight, stage history, StageVerified) are done.
type Record struct {
	Project   string `json:"project"`
	Stage     string `json:"stage"`
	ID        string `json:"id"`
	Promotion string `json:"promotion,omitempty"`
	// Freight is what the verification qualifies: the stage's current
	// freight collection.
	Freight []string `json:"freight"`
	Actor   string   `json:"actor,omitempty"`
	// TraceParent is the trace context of the event that began it (W3C
	// traceparent), so that its run continues that trace.
	TraceParent string `json:"traceparent,omitempty"`

	Phase      analysis.Phase `json:"phase"`
	Message    string         `json:"message,omitempty"`
	Summary    string         `json:"summary,omitempty"`
	CreatedAt  time.Time      `json:"createdAt"`
	StartedAt  *time.Time     `json:"startedAt,omitempty"`
	FinishedAt *time.Time     `json:"finishedAt,omitempty"`

	// Lease is the owner's: Holder is the owning replica.
	lease.Lease
	// Attempts counts the replicas that owned it.
	Attempts int `json:"attempts"`

	AbortRequested bool   `json:"abortRequested,omitempty"`
	AbortReason    string `json:"abortReason,omitempty"`

	Applied bool `json:"applied,omitempty"`
	// Result is the analysis: its progress, saved as measurements are
	// taken, then its outcome.
	Result *analysis.Result `json:"result,omitempty"`
}

// done reports whether the verification has its outcome.
func (r *Record) done() bool { return r.Phase.Completed() }
