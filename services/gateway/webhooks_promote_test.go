package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// TestWebhookPromote: a generic receiver's Promote action (a Caravan
// addition to Kargo's Refresh) creates one Promotion per selected Stage, of
// the freight its parameter names or of the newest freight available, and
// names in the answer what it could not promote. A repeated delivery
// promotes nothing twice.
func TestWebhookPromote(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.mustApply([]byte(`apiVersion: v1
kind: Secret
metadata: {name: wh, namespace: demo, labels: {kargo.akuity.io/cred-type: generic}}
stringData: {secret: "shh-webhook-secret"}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: demo, namespace: demo}
spec:
  webhookReceivers:
  - name: promo
    generic:
      secretRef: {name: wh}
      actions:
      - action: Promote
        whenExpression: "request.body.event == 'release'"
        parameters: {freight: "${{ request.body.freight }}"}
        targetSelectionCriteria:
        - {kind: Stage, name: dev}
        - {kind: Stage, name: staging}
      - action: Promote
        whenExpression: "request.body.event == 'latest'"
        parameters: {warehouse: app}
        targetSelectionCriteria:
        - {kind: Stage, name: dev}
`))
	h.discovered("1.0.0", "2.0.0")
	origin := map[string]string{"kind": "Warehouse", "name": "app"}
	var first, second model.Freight
	for _, c := range []struct {
		alias, tag string
		f          *model.Freight
	}{{"first", "1.0.0", &first}, {"second", "2.0.0", &second}} {
		if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": origin, "alias": c.alias, "images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": c.tag}}}, c.f); st != http.StatusCreated {
			t.Fatalf("create freight %s: %d %+v", c.alias, st, e)
		}
	}
	var pc model.ProjectConfig
	if st := h.get("/v1/projects/demo/projectconfig", &pc); st != http.StatusOK || len(pc.Status.WebhookReceivers) != 1 {
		t.Fatalf("GET projectconfig: %d %+v", st, pc.Status)
	}
	path := pc.Status.WebhookReceivers[0].Path
	wait := collectEvents(t, h.nc)

	promoted := func(out map[string]any) []string {
		var names []string
		list, _ := out["promoted"].([]any)
		for _, n := range list {
			names = append(names, n.(string))
		}
		return names
	}
	requested := func() events.PromotionRequested {
		t.Helper()
		env := wait(1)[0]
		var ev events.PromotionRequested
		if env.Type != "PromotionRequested" || json.Unmarshal(env.Payload, &ev) != nil {
			t.Fatalf("event %s %s", env.Type, env.Payload)
		}
		return ev
	}

	// By alias: dev gets it; staging cannot (nothing is verified in dev
	// yet), and the answer says why.
	st, out := h.deliver(path, nil, []byte(`{"event":"release","freight":"first"}`))
	names := promoted(out)
	if st != http.StatusAccepted || len(names) != 1 || !strings.HasPrefix(names[0], "dev.") || !strings.Contains(out["reason"].(string), `not available to stage "staging"`) {
		t.Fatalf("release: %d %v", st, out)
	}
	if ev := requested(); ev.Promotion != names[0] || ev.Stage != "dev" || ev.Freight != first.Name {
		t.Fatalf("PromotionRequested %+v", ev)
	}
	var p model.Promotion
	if st := h.get("/v1/projects/demo/promotions/"+names[0], &p); st != http.StatusOK || p.Spec.Freight != first.Name ||
		p.Annotations[model.AnnotationCreateActor] != "webhook:promo" || len(p.Spec.Steps) == 0 {
		t.Fatalf("promotion: %d %+v", st, p)
	}

	// The same delivery again: nothing more.
	if st, out := h.deliver(path, nil, []byte(`{"event":"release","freight":"first"}`)); st != http.StatusOK || out["status"] != "duplicate" {
		t.Fatalf("repeat: %d %v", st, out)
	}
	wait(0)

	// Without a freight parameter: the newest available from the Warehouse.
	st, out = h.deliver(path, nil, []byte(`{"event":"latest"}`))
	if names = promoted(out); st != http.StatusAccepted || len(names) != 1 {
		t.Fatalf("latest: %d %v", st, out)
	}
	if ev := requested(); ev.Freight != second.Name || ev.Stage != "dev" {
		t.Fatalf("latest promoted %+v, want %s", ev, second.Name)
	}

	// Unknown freight: accepted, nothing promoted, the reason names it.
	st, out = h.deliver(path, nil, []byte(`{"event":"release","freight":"nope"}`))
	if st != http.StatusAccepted || len(promoted(out)) != 0 || !strings.Contains(out["reason"].(string), `freight "nope" not found`) {
		t.Fatalf("unknown freight: %d %v", st, out)
	}
	// No action matches: ignored.
	if st, out := h.deliver(path, nil, []byte(`{"event":"other"}`)); st != http.StatusOK || out["status"] != "ignored" {
		t.Fatalf("no match: %d %v", st, out)
	}
	wait(0)
}
