package model

import (
	"strings"
	"time"
)

// Annotations Caravan sets or reads.
const (
	// AnnotationPromotionCreatedBy records who asked for a promotion:
	// "auto" for auto-promotion, otherwise the principal's name.
	AnnotationPromotionCreatedBy = "caravan.dev/created-by"
	// AnnotationSupersede on a Stage lets a newer pending promotion drop
	// older pending ones.
	AnnotationSupersede = "caravan.dev/supersede"
	// AnnotationPromotionAnnounced marks a finished Promotion whose outcome
	// event (PromotionSucceeded or PromotionFailed) was published.
	AnnotationPromotionAnnounced = "caravan.dev/announced"
)

// Created-by values of the promotions Caravan creates itself.
const (
	// CreatedByAutoPromotion is the created-by of auto-promotions.
	CreatedByAutoPromotion = "auto"
	// CreatedByAutoRollback is the created-by of rollback promotions.
	CreatedByAutoRollback = "auto-rollback"
)

// CreatedByPerson reports whether a promotion's created-by names a person
// (or a client's principal), not Caravan itself.
func CreatedByPerson(createdBy string) bool {
	return createdBy != "" && createdBy != CreatedByAutoPromotion && createdBy != CreatedByAutoRollback
}

// PromotionName returns Kargo's promotion name `<stage>.<ulid>.<short
// freight id>`, with the ULID lower-cased (RFC 1123 names are lower case)
// and the freight ID cut to 7 characters.
func PromotionName(stage, ulid, freightID string) string {
	short := freightID
	if len(short) > 7 {
		short = short[:7]
	}
	return stage + "." + strings.ToLower(ulid) + "." + short
}

// NewPromotion builds a Pending Promotion of freight into stage, copying
// the stage's promotion template (vars and steps) as Kargo does at
// creation, so a later change to the Stage does not alter a queued
// promotion. id is a ULID; createdBy goes into an annotation.
func NewPromotion(stage *Stage, freight *Freight, id, createdBy string, now time.Time) *Promotion {
	p := &Promotion{
		TypeMeta: TypeMeta{APIVersion: KargoAPIVersion, Kind: KindPromotion},
		ObjectMeta: ObjectMeta{
			Name:              PromotionName(stage.Name, id, freight.Name),
			Namespace:         stage.Namespace,
			CreationTimestamp: &Time{Time: now.UTC().Truncate(time.Second)},
			Annotations:       map[string]string{AnnotationPromotionCreatedBy: createdBy},
		},
		Spec:   PromotionSpec{Stage: stage.Name, Freight: freight.Name},
		Status: PromotionStatus{Phase: PromotionPhasePending},
	}
	if t := stage.Spec.PromotionTemplate; t != nil {
		p.Spec.Vars = append([]PromotionVariable(nil), t.Spec.Vars...)
		p.Spec.Steps = append([]PromotionStep(nil), t.Spec.Steps...)
	}
	return p
}

// IsDNS1123Subdomain reports whether name is a valid object name.
func IsDNS1123Subdomain(name string) bool {
	return len(name) <= 253 && dnsSubdomain.MatchString(name)
}
