package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/model"
)

// auditCount is how many records the audit stream holds.
func (h *harness) auditCount() uint64 {
	h.t.Helper()
	js, err := jetstream.New(h.nc)
	if err != nil {
		h.t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), audit.Stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Msgs
}

func (h *harness) auditOf(action string) []audit.Record {
	h.t.Helper()
	var out struct {
		Items []audit.Record `json:"items"`
	}
	if st, e := h.call("GET", "/v1/projects/demo/audit?action="+action, nil, &out); st != http.StatusOK {
		h.t.Fatalf("audit: %d %+v", st, e)
	}
	return out.Items
}

// Every route that changes something appends exactly one audit record
// per call (the test walks /openapi.json, the route table); reads append
// none. Records are read back through the API with filters.
func TestAuditEveryMutatingRoute(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(d *gatewayDeps) { d.Config.SSEHeartbeat = time.Hour })
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	path := strings.NewReplacer("{project}", "demo", "{name}", "zz-none", "{stage}", "dev", "{id}", "zz-none", "{receiver}", "zz-none", "{other}", "zz-none")
	mutating := 0
	for _, rt := range h.openAPIRoutes() {
		method, p, _ := strings.Cut(rt, " ")
		if strings.HasSuffix(p, "/events") {
			continue // a stream, and a read
		}
		var body []byte
		ct := "application/json"
		switch {
		case strings.HasSuffix(p, "/resources"):
			body, ct = []byte(configMap), "application/yaml"
		case method == "POST" || method == "PATCH":
			body = []byte(`{}`)
		}
		before := h.auditCount()
		st, _, _ := h.do(method, path.Replace(p), token, ct, body)
		got := h.auditCount() - before
		want := uint64(0)
		if method != "GET" {
			want = 1
			mutating++
		}
		if got != want {
			t.Errorf("%s (%d): %d audit records, want %d", rt, st, got, want)
		}
	}
	if mutating < 15 {
		t.Errorf("only %d mutating routes walked", mutating)
	}
	recs := h.auditOf("apply")
	if len(recs) < 2 {
		t.Fatalf("apply records: %+v", recs)
	}
	r := recs[0] // newest first: the ConfigMap
	if r.Actor != "admin" || r.Object != "ConfigMap/matrix" || r.Status != http.StatusOK || r.Hashes != audit.HashesObject || r.Before != "" || len(r.After) != 64 || r.Seq == 0 {
		t.Errorf("apply record: %+v", r)
	}
	var page struct {
		Items  []audit.Record `json:"items"`
		Before string         `json:"before"`
	}
	if st, _ := h.call("GET", "/v1/projects/demo/audit?limit=1&actor=admin", nil, &page); st != http.StatusOK || len(page.Items) != 1 || page.Before == "" {
		t.Fatalf("page: %d %+v", st, page)
	}
	if st, e := h.call("GET", "/v1/projects/demo/audit?since=yesterday", nil, nil); st != http.StatusBadRequest || e.Details[0].Field != "since" {
		t.Errorf("bad since: %d %+v", st, e)
	}
	// Nothing edits the log: there is no route that writes to it.
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		if st, _, _ := h.do(m, "/v1/projects/demo/audit", token, "application/json", []byte(`{}`)); st != http.StatusMethodNotAllowed {
			t.Errorf("%s audit: %d, want 405", m, st)
		}
	}
}

const policiesConfig = `apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: demo, namespace: demo}
spec:
  promotionWindows:
  - name: freeze
    kind: Deny
    dtstart: "%s"
    dtend: "%s"
    stageSelector: {name: staging}
  approvalPolicies:
  - stage: dev
    approvers: 2
    groups: [promoter]
    expiry: 1h
`

// Promotion windows and approval policies through the API: a closed
// window refuses a promotion with its next opening, a project admin
// overrides it with a reason (recorded); an approval policy holds a
// promotion until two others than the requester approved it.
func TestWindowsAndApprovalsThroughAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	now := time.Now().UTC()
	end := now.Add(time.Hour).Truncate(time.Second)
	h.mustApply(fmt.Appendf(nil, policiesConfig, now.Add(-time.Hour).Format("20060102T150405Z"), end.Format("20060102T150405Z")))
	h.discovered("1.0.0")
	var f model.Freight
	if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": map[string]string{"kind": "Warehouse", "name": "app"},
		"images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": "1.0.0"}}}, &f); st != http.StatusCreated {
		t.Fatalf("create freight: %d %+v", st, e)
	}
	if st, e := h.call("POST", "/v1/projects/demo/freight/"+f.Name+"/approve", map[string]string{"stage": "staging"}, nil); st != http.StatusOK {
		t.Fatalf("approve freight: %d %+v", st, e)
	}
	admin := h.createToken("demo", "boss", "admin")
	alice := h.createToken("demo", "alice", "promoter")
	bob := h.createToken("demo", "bob", "promoter")
	carol := h.createToken("demo", "carol", "promoter")
	viewer := h.createToken("demo", "vic", "viewer")

	// Windows.
	st, e := h.callAs(alice, "POST", "/v1/projects/demo/stages/staging/promotions", map[string]string{"freight": f.Name}, nil)
	if st != http.StatusConflict || e.Code != "window_closed" || !strings.Contains(e.Message, `deny window "freeze"`) || !strings.Contains(e.Message, end.Format(time.RFC3339)) {
		t.Fatalf("promote in a deny window: %d %+v", st, e)
	}
	over := map[string]any{"freight": f.Name, "windowOverride": map[string]string{"reason": "hotfix INC-42"}}
	if st, e := h.callAs(alice, "POST", "/v1/projects/demo/stages/staging/promotions", over, nil); st != http.StatusForbidden {
		t.Errorf("override by a promoter: %d %+v", st, e)
	}
	if st, e := h.callAs(admin, "POST", "/v1/projects/demo/stages/staging/promotions", map[string]any{"freight": f.Name, "windowOverride": map[string]string{}}, nil); st != http.StatusBadRequest || e.Details[0].Field != "windowOverride.reason" {
		t.Errorf("override without a reason: %d %+v", st, e)
	}
	var p model.Promotion
	if st, e := h.callAs(admin, "POST", "/v1/projects/demo/stages/staging/promotions", over, &p); st != http.StatusCreated {
		t.Fatalf("override by a project admin: %d %+v", st, e)
	}
	if v := p.Annotations[model.AnnotationWindowOverride]; v != "token:demo/boss: hotfix INC-42" {
		t.Errorf("override annotation %q", v)
	}
	if recs := h.auditOf("override"); len(recs) != 1 || recs[0].Object != "Promotion/"+p.Name || !strings.Contains(recs[0].Reason, "hotfix INC-42") {
		t.Errorf("override audit: %+v", recs)
	}

	// Approvals.
	var q model.Promotion
	if st, e := h.callAs(alice, "POST", "/v1/projects/demo/stages/dev/promotions", map[string]string{"freight": f.Name}, &q); st != http.StatusCreated {
		t.Fatalf("promote into dev: %d %+v", st, e)
	}
	approve := "/v1/projects/demo/promotions/" + q.Name + "/approve"
	type answer struct {
		Approved  bool     `json:"approved"`
		Missing   int      `json:"missing"`
		Approvers []string `json:"approvers"`
		Requester string   `json:"requester"`
	}
	for _, c := range []struct {
		name, tok string
		body      any
		status    int
	}{
		{"self-approval", alice, map[string]string{"reason": "mine"}, http.StatusForbidden},
		{"not in a group", viewer, map[string]string{"reason": "looks fine"}, http.StatusForbidden},
		{"no reason", bob, map[string]string{}, http.StatusBadRequest},
	} {
		if st, e := h.callAs(c.tok, "POST", approve, c.body, nil); st != c.status {
			t.Errorf("%s: %d %+v, want %d", c.name, st, e, c.status)
		}
	}
	var a answer
	if st, e := h.callAs(bob, "POST", approve, map[string]string{"reason": "CHG-7"}, &a); st != http.StatusOK || a.Approved || a.Missing != 1 {
		t.Fatalf("bob approves: %d %+v %+v", st, e, a)
	}
	if st, _ := h.callAs(bob, "POST", approve, map[string]string{"reason": "again"}, &a); st != http.StatusOK || a.Missing != 1 {
		t.Errorf("bob again counts once: %d %+v", st, a)
	}
	if st, _ := h.callAs(viewer, "GET", "/v1/projects/demo/promotions/"+q.Name+"/approval", nil, &a); st != http.StatusOK || a.Missing != 1 || len(a.Approvers) != 1 || a.Approvers[0] != "token:demo/bob" || a.Requester != "token:demo/alice" {
		t.Errorf("approval: %d %+v", st, a)
	}
	if st, _ := h.callAs(carol, "POST", approve, map[string]string{"reason": "CHG-7"}, &a); st != http.StatusOK || !a.Approved || a.Missing != 0 {
		t.Errorf("carol approves: %d %+v", st, a)
	}
	if recs := h.auditOf("approve"); len(recs) != 6 {
		t.Errorf("%d approve records (refused ones too), want 6", len(recs))
	}
	if st, e := h.call("POST", "/v1/projects/demo/promotions/"+p.Name+"/approve", map[string]string{"reason": "x"}, nil); st != http.StatusConflict {
		t.Errorf("approve where no policy gates: %d %+v", st, e)
	}
}

const auditedStage = `apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: audited, namespace: demo}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: git-clone
        config:
          repoURL: https://github.com/example/gitops.git
          checkout: [{branch: main, path: ./src}]
      - uses: git-commit
        config: {path: ./src, message: %s}
`

// Audit records of calls that change stored objects hash the objects
// (their canonical JSON as GET answers, status aside) before and after
// the call: applying a Stage twice chains the hashes and the last one is
// the stored Stage's; deleting it leaves no after hash; a promotion's
// record starts from nothing; calls that only ask a service to act hash
// the call.
func TestAuditObjectHashes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	stageHash := func() string {
		t.Helper()
		st, b, _ := h.do("GET", "/v1/projects/demo/stages/audited", token, "", nil)
		if st != http.StatusOK {
			t.Fatalf("get stage: %d %s", st, b)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "status")
		sum, err := audit.CanonicalHash(m)
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	stageRecord := func(action string) audit.Record {
		t.Helper()
		for _, r := range h.auditOf(action) { // newest first
			if r.Object == "Stage/audited" {
				return r
			}
		}
		t.Fatalf("no %s record of Stage/audited", action)
		return audit.Record{}
	}

	h.mustApply(fmt.Appendf(nil, auditedStage, "first"))
	first := stageRecord("apply")
	if first.Hashes != audit.HashesObject || first.Before != "" || first.After != stageHash() || len(first.Objects) != 1 {
		t.Fatalf("first apply: %+v", first)
	}
	h.mustApply(fmt.Appendf(nil, auditedStage, "second"))
	second := stageRecord("apply")
	if second.Before != first.After || second.After == first.After || second.After != stageHash() {
		t.Fatalf("second apply: %+v after %+v", second, first)
	}
	if o := second.Objects[0]; o.Object != "Stage/audited" || o.Before != second.Before || o.After != second.After {
		t.Errorf("second apply's objects: %+v", second.Objects)
	}
	// Several objects in a project: each object's hashes.
	recs := h.auditOf("apply")
	var multi audit.Record
	for _, r := range recs {
		if len(r.Objects) > 1 {
			multi = r
		}
	}
	if multi.Before != "" || multi.After != "" || len(multi.Objects) < 3 || multi.Objects[0].After == "" {
		t.Errorf("pipeline apply: %+v", multi)
	}
	if st, _, _ := h.do("DELETE", "/v1/resources", token, "application/yaml", fmt.Appendf(nil, auditedStage, "second")); st != http.StatusOK {
		t.Fatalf("delete: %d", st)
	}
	del := stageRecord("delete")
	if del.Hashes != audit.HashesObject || del.Before != second.After || del.After != "" {
		t.Errorf("delete: %+v", del)
	}

	// A created object starts from nothing; a token's hash is of its
	// listing (never its secret).
	h.createToken("demo", "hashme", "viewer")
	tok := h.auditOf("token-create")[0]
	if tok.Hashes != audit.HashesObject || tok.Object != "Token/hashme" || tok.Before != "" || len(tok.After) != 64 {
		t.Errorf("token-create: %+v", tok)
	}
	if st, _ := h.call("DELETE", "/v1/projects/demo/tokens/hashme", nil, nil); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	if rev := h.auditOf("token-revoke")[0]; rev.Before != tok.After || rev.After != "" {
		t.Errorf("token-revoke: %+v", rev)
	}
	// A call that changes nothing stored hashes the call.
	if st, _ := h.call("POST", "/v1/projects/demo/warehouses/app/refresh", map[string]string{"reason": "x"}, nil); st != http.StatusAccepted {
		t.Fatalf("refresh: %d", st)
	}
	if r := h.auditOf("refresh")[0]; r.Hashes != audit.HashesCall || len(r.Before) != 64 || len(r.After) != 64 {
		t.Errorf("refresh: %+v", r)
	}
}
