package events

import (
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// DryRunSubject is the core NATS subject of dry-run promotions: the gateway
// sends a DryRunRequest as a request, one promoter replica (the queue
// group DryRunQueue) runs it and answers a DryRunReply. Core NATS, not
// JetStream: a dry run changes nothing, so a lost request is only an
// error the caller sees, never lost work.
const (
	DryRunSubject = "caravan.promoter.dryrun"
	DryRunQueue   = "promoter"
)

// DryRunRequest asks a promoter to run Promotion's steps without effects.
// The gateway builds the Promotion as it would for a real promotion
// (model.NewPromotion) and stores nothing.
type DryRunRequest struct {
	Promotion *model.Promotion `json:"promotion"`
	// Timeout bounds the run on the promoter (the caller stops waiting
	// a little after it).
	Timeout time.Duration `json:"timeout"`
}

// DryRunReply is the promoter's answer: Result, or Error when the dry run
// could not run at all.
type DryRunReply struct {
	Result *model.PromotionDryRun `json:"result,omitempty"`
	Error  string                 `json:"error,omitempty"`
}
