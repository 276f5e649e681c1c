package model

import "encoding/json"

// Kargo's annotations that users script against, read when a document is
// applied (the gateway publishes the request each one stands for).
const (
	// AnnotationRefresh: a new value asks for the object to be worked
	// again at once (a Warehouse discovers; a Stage is re-evaluated).
	AnnotationRefresh = "kargo.akuity.io/refresh"
	// AnnotationReverify on a Stage: a new value re-verifies its current
	// Freight. The value is a verification ID or a JSON object with "id".
	AnnotationReverify = "kargo.akuity.io/reverify"
	// AnnotationAbort on a Stage aborts its running verification; on a
	// Promotion, aborts the promotion (any value): the promoter reads it at
	// every step boundary and on every reconcile pass, so an abort whose
	// event is lost still happens.
	AnnotationAbort = "kargo.akuity.io/abort"
	// AnnotationCreateActor records who created an object; set at
	// creation, never taken from the client.
	AnnotationCreateActor = "kargo.akuity.io/create-actor"
	// AnnotationAutoPromotionHold on a Promotion ("Warehouse/<name>"):
	// when it ends (not aborted), auto-promotion of that origin into its
	// Stage is held.
	AnnotationAutoPromotionHold = "kargo.akuity.io/auto-promotion-hold"
	// AnnotationAutoPromotionResume on a Promotion ("Warehouse/<name>"):
	// when it ends (not aborted), the hold on that origin is lifted.
	AnnotationAutoPromotionResume = "kargo.akuity.io/auto-promotion-resume"
)

// AnnotationChanged reports whether annotation key is set on next with a
// value other than on prev (nil: the object is new).
func AnnotationChanged(prev, next *ObjectMeta, key string) (string, bool) {
	v, ok := next.Annotations[key]
	if !ok || v == "" {
		return "", false
	}
	if prev != nil {
		if old, had := prev.Annotations[key]; had && old == v {
			return "", false
		}
	}
	return v, true
}

// VerificationRequestID returns the verification ID a reverify or abort
// annotation names: the value itself, or the "id" of a JSON object (Kargo
// writes {"id": …, "actor": …, "controlPlane": …}).
func VerificationRequestID(value string) string {
	var req struct {
		ID string `json:"id"`
	}
	if json.Valid([]byte(value)) && json.Unmarshal([]byte(value), &req) == nil {
		return req.ID
	}
	return value
}

// PromotionIntent returns the origins a Promotion's hold and resume
// annotations name (nil when absent or not an origin).
func PromotionIntent(p *Promotion) (hold, resume *FreightOrigin) {
	if v := p.Annotations[AnnotationAutoPromotionHold]; v != "" {
		if o, err := ParseFreightOrigin(v); err == nil {
			hold = &o
		}
	}
	if v := p.Annotations[AnnotationAutoPromotionResume]; v != "" {
		if o, err := ParseFreightOrigin(v); err == nil {
			resume = &o
		}
	}
	return hold, resume
}

// Caravan's annotations on Promotions for its promotion policies.
const (
	// AnnotationWindowOverride on a Promotion ("<actor>: <reason>"): a
	// project admin let it run while promotion windows are closed.
	AnnotationWindowOverride = "caravan.dev/window-override"
	// AnnotationRollback on a Promotion (why): auto-rollback made it, to
	// the Freight the Stage last held and verified; steps see
	// ctx.meta.promotion.rollback true.
	AnnotationRollback = "caravan.dev/rollback"
)
