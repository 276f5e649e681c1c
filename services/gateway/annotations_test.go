package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

const annotatedProject = `
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: shop}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: web, namespace: shop%s}
spec:
  subscriptions:
  - image: {repoURL: registry.example.com/shop/web}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: dev, namespace: shop%s}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: web}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: fail
        config: {message: placeholder}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: prod, namespace: shop}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: web}
    sources: {stages: [dev]}
  promotionTemplate:
    spec:
      steps:
      - uses: fail
        config: {message: placeholder}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: gate, namespace: shop}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: web}
    sources: {stages: [dev, prod], availabilityStrategy: All}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: %s, namespace: shop, annotations: {kargo.akuity.io/create-actor: "email:mallory@example.com"}}
origin: {kind: Warehouse, name: web}
images:
- {repoURL: registry.example.com/shop/web, tag: 1.0.0, digest: "sha256:1111"}
`

func annotations(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, fmt.Sprintf("%q: %q", kv[i], kv[i+1]))
	}
	return ", annotations: {" + strings.Join(parts, ", ") + "}"
}

// TestApplyAnnotations: the annotations Kargo users script against are read
// on apply and acted on — a new refresh, reverify or abort value publishes
// the matching request, once; create-actor is the caller's, never the
// client's; a new Promotion runs, unless Kargo's admission would refuse it.
func TestApplyAnnotations(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	f := &model.Freight{Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "web"},
		Images: []model.Image{{RepoURL: "registry.example.com/shop/web", Tag: "1.0.0", Digest: "sha256:1111"}}}
	freight := f.GenerateID()
	doc := func(warehouse, dev string) []byte {
		return fmt.Appendf(nil, annotatedProject, warehouse, dev, freight)
	}
	wait := collectEvents(t, h.nc)
	h.mustApply(doc("", ""))
	wait(6)

	var stored model.Freight
	h.get("/v1/projects/shop/freight/"+freight, &stored)
	if got := stored.Annotations[model.AnnotationCreateActor]; got != "admin" {
		t.Errorf("create-actor %q: the caller is the admin, whatever the client wrote", got)
	}
	if stored.DiscoveredAt == nil || !stored.DiscoveredAt.Equal(stored.CreationTimestamp.Time) {
		t.Errorf("discoveredAt %v, created %v", stored.DiscoveredAt, stored.CreationTimestamp)
	}

	typesOf := func(evs []events.Envelope) string {
		var s []string
		for _, e := range evs {
			s = append(s, string(e.Type)+"/"+e.Subject.Name)
		}
		return strings.Join(s, " ")
	}

	t.Run("refresh a warehouse", func(t *testing.T) {
		out := h.mustApply(doc(annotations(model.AnnotationRefresh, "r1"), ""))
		if got := typesOf(wait(2)); got != "ResourceApplied/web WarehouseRefreshRequested/web" {
			t.Errorf("events %s", got)
		}
		if len(out.Warnings) != 0 {
			t.Errorf("warnings %v", out.Warnings)
		}
		h.mustApply(doc(annotations(model.AnnotationRefresh, "r1"), ""))
		wait(0) // the same value asks for nothing
	})

	wh := annotations(model.AnnotationRefresh, "r1")
	t.Run("reverify and abort a stage", func(t *testing.T) {
		out := h.mustApply(doc(wh, annotations(model.AnnotationReverify, "v1")))
		wait(1)
		if len(out.Warnings) != 1 || !strings.Contains(out.Warnings[0].Message, "no freight to verify") {
			t.Fatalf("warnings %v, want: no freight", out.Warnings)
		}
		var st model.StageStatus
		st.FreightHistory = st.PushFreight(model.FreightReference{Name: freight, Origin: f.Origin})
		if _, err := state.Put(context.Background(), h.env.Store.KV(state.Stages), state.Key("shop", "dev"), st); err != nil {
			t.Fatal(err)
		}
		h.mustApply(doc(wh, annotations(model.AnnotationReverify, `{"id":"v2","actor":"admin"}`)))
		evs := wait(2)
		var req events.VerificationRequested
		if err := evs[1].Decode(&req); err != nil || evs[1].Type != events.TypeVerificationRequested || req.Freight != freight || req.Stage != "dev" {
			t.Errorf("reverify: %s %+v %v", typesOf(evs), req, err)
		}
		h.mustApply(doc(wh, annotations(model.AnnotationReverify, `{"id":"v2","actor":"admin"}`, model.AnnotationAbort, "v2")))
		if got := typesOf(wait(2)); got != "ResourceApplied/dev VerificationAbortRequested/dev" {
			t.Errorf("abort: %s", got)
		}
	})

	t.Run("promotions", func(t *testing.T) {
		promotion := func(name, stage, meta string) []byte {
			return fmt.Appendf(nil, `
apiVersion: kargo.akuity.io/v1alpha1
kind: Promotion
metadata: {name: %s, namespace: shop%s}
spec:
  stage: %s
  freight: %s
  steps: [{uses: fail, config: {message: placeholder}}]`, name, meta, stage, freight)
		}
		out := h.mustApply(promotion("dev.first", "dev", annotations(model.AnnotationAutoPromotionHold, "Warehouse/web")))
		if got := typesOf(wait(2)); got != "ResourceApplied/dev.first PromotionRequested/dev.first" {
			t.Errorf("a new promotion: %s", got)
		}
		if len(out.Warnings) != 0 {
			t.Errorf("warnings %v", out.Warnings)
		}
		var p model.Promotion
		h.get("/v1/projects/shop/promotions/dev.first", &p)
		if p.Annotations[model.AnnotationCreateActor] != "admin" || p.Annotations[model.AnnotationAutoPromotionHold] != "Warehouse/web" {
			t.Errorf("annotations %v", p.Annotations)
		}
		h.mustApply(promotion("dev.first", "dev", annotations(model.AnnotationAutoPromotionHold, "Warehouse/web", model.AnnotationAbort, `{"action":"terminate"}`)))
		if got := typesOf(wait(2)); got != "ResourceApplied/dev.first PromotionAbortRequested/dev.first" {
			t.Errorf("abort: %s", got)
		}
		out = h.mustApply(promotion("dev.first", "dev", annotations(model.AnnotationAutoPromotionHold, "Warehouse/web", model.AnnotationAbort, `{"action":"terminate"}`, model.AnnotationRefresh, "x")))
		wait(1)
		if len(out.Warnings) != 1 || out.Warnings[0].Field != `metadata.annotations["kargo.akuity.io/refresh"]` {
			t.Errorf("refresh on a promotion: warnings %v", out.Warnings)
		}

		for _, tc := range []struct {
			name, stage, field, says string
		}{
			{"into a control-flow stage", "gate", "spec.stage", "control-flow stage"},
			{"of unavailable freight", "prod", "spec.freight", "not available to stage \"prod\""},
			{"into no stage", "qa", "spec.stage", "does not exist"},
		} {
			status, _, e := h.apply(http.MethodPost, promotion("p."+tc.stage, tc.stage, ""))
			if status != http.StatusBadRequest || len(e.Details) != 1 || e.Details[0].Field != tc.field || !strings.Contains(e.Details[0].Message, tc.says) {
				t.Errorf("%s: %d %+v", tc.name, status, e)
			}
		}
		// Kargo's admission fills spec.origin; one that is not the
		// freight's is refused.
		wrongOrigin := append(promotion("p.origin", "dev", ""), "\n  origin: {kind: Warehouse, name: api}\n"...)
		if status, _, e := h.apply(http.MethodPost, wrongOrigin); status != http.StatusBadRequest || len(e.Details) != 1 || e.Details[0].Field != "spec.origin" {
			t.Errorf("wrong origin: %d %+v", status, e)
		}
		wait(0)
	})
}
