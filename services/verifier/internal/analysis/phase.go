// Package analysis runs Argo Rollouts AnalysisTemplates the way an
// AnalysisRun does: each metric is measured count times, interval apart,
// after its initialDelay; every measurement is judged by successCondition
// and failureCondition (expr-lang over result); a metric ends Failed,
// Inconclusive or Error once failureLimit, inconclusiveLimit or
// consecutiveErrorLimit is exceeded, and Successful when its count is
// reached (or consecutiveSuccessLimit is); the run takes the worst phase of
// its metrics, dryRun metrics aside.
//
// Measurements come from Providers (web, prometheus, job …), registered by
// provider name. The package does no I/O of its own.
package analysis

// Phase is the phase of a measurement, a metric or a run (Argo's
// AnalysisPhase, plus Aborted).
type Phase string

// Phases.
const (
	PhasePending      Phase = "Pending"
	PhaseRunning      Phase = "Running"
	PhaseSuccessful   Phase = "Successful"
	PhaseFailed       Phase = "Failed"
	PhaseError        Phase = "Error"
	PhaseInconclusive Phase = "Inconclusive"
	PhaseAborted      Phase = "Aborted"
)

// Completed reports whether the phase is final.
func (p Phase) Completed() bool {
	switch p {
	case PhaseSuccessful, PhaseFailed, PhaseError, PhaseInconclusive, PhaseAborted:
		return true
	}
	return false
}

// rank orders phases from best to worst, as Argo does when it reduces the
// phases of a run's metrics to the run's phase.
func (p Phase) rank() int {
	switch p {
	case PhasePending:
		return 0
	case PhaseRunning:
		return 1
	case PhaseSuccessful:
		return 2
	case PhaseInconclusive:
		return 3
	case PhaseError:
		return 4
	case PhaseFailed:
		return 5
	case PhaseAborted:
		return 6
	}
	return 0
}

// worse reports whether p is worse than q.
func (p Phase) worse(q Phase) bool { return p.rank() > q.rank() }
