package model

import (
	"testing"
	"time"
)

func TestNewPromotion(t *testing.T) {
	t.Parallel()
	stage := &Stage{ObjectMeta: ObjectMeta{Name: "prod", Namespace: "demo"}}
	stage.Spec.PromotionTemplate = &PromotionTemplate{Spec: PromotionTemplateSpec{
		Vars:  []PromotionVariable{{Name: "x", Value: "1"}},
		Steps: []PromotionStep{{Uses: "git-clone"}},
	}}
	freight := &Freight{ObjectMeta: ObjectMeta{Name: "0123456789abcdef"}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	p := NewPromotion(stage, freight, "01HZZZ0000ABCDEFGHJKMNPQRS", "alice", now)
	if p.Name != "prod.01hzzz0000abcdefghjkmnpqrs.0123456" {
		t.Errorf("name = %q", p.Name)
	}
	if p.Namespace != "demo" || p.Spec.Stage != "prod" || p.Spec.Freight != freight.Name || p.Status.Phase != PromotionPhasePending {
		t.Errorf("promotion = %+v", p)
	}
	if len(p.Spec.Steps) != 1 || len(p.Spec.Vars) != 1 || p.Annotations[AnnotationPromotionCreatedBy] != "alice" {
		t.Errorf("template not copied: %+v", p.Spec)
	}
	stage.Spec.PromotionTemplate.Spec.Steps[0].Uses = "changed"
	if p.Spec.Steps[0].Uses != "git-clone" {
		t.Error("promotion shares the stage's steps")
	}
	if !IsDNS1123Subdomain(p.Name) {
		t.Errorf("%q is not a valid name", p.Name)
	}
}

func TestCreatedByPerson(t *testing.T) {
	t.Parallel()
	for createdBy, want := range map[string]bool{"alice": true, "admin": true, "": false, CreatedByAutoPromotion: false, CreatedByAutoRollback: false} {
		if got := CreatedByPerson(createdBy); got != want {
			t.Errorf("CreatedByPerson(%q) = %v, want %v", createdBy, got, want)
		}
	}
}
