package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway"
	"github.com/caravan-cd/caravan/services/gateway/internal/webhook"
)

// TestReceiverPathsOnlyForAdmins: a receiver's path is the only credential
// of generic, Quay and Docker Hub senders, so viewers and promoters see
// the receivers' names and nothing else.
func TestReceiverPathsOnlyForAdmins(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	paths := h.receivers()
	for _, role := range []string{"viewer", "promoter", "admin"} {
		tok := h.createToken("demo", "t-"+role, role)
		var pc model.ProjectConfig
		st, e := h.callAs(tok, http.MethodGet, "/v1/projects/demo/projectconfig", nil, &pc)
		if st != http.StatusOK {
			t.Fatalf("%s: %d %+v", role, st, e)
		}
		_, raw, _ := h.do(http.MethodGet, "/v1/projects/demo/projectconfig", tok, "", nil)
		if len(pc.Status.WebhookReceivers) != len(paths) {
			t.Errorf("%s sees %d receivers, want %d", role, len(pc.Status.WebhookReceivers), len(paths))
		}
		for _, r := range pc.Status.WebhookReceivers {
			switch {
			case role == "admin" && r.Path != paths[r.Name]:
				t.Errorf("admin: receiver %s path %q, want %q", r.Name, r.Path, paths[r.Name])
			case role != "admin" && (r.Path != "" || r.URL != ""):
				t.Errorf("%s sees receiver %s at %q %q", role, r.Name, r.Path, r.URL)
			}
		}
		if role != "admin" {
			for name, p := range paths {
				if p != "" && strings.Contains(string(raw), p) {
					t.Errorf("%s: the path of %s is in the answer", role, name)
				}
			}
		}
	}
}

// TestDuplicateDocument: a body naming one object twice is refused, with
// both positions named, and nothing is written.
func TestDuplicateDocument(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	body := []byte(`apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: demo}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: demo}
spec:
  subscriptions:
  - image: {repoURL: ghcr.io/example/app}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: demo}
spec:
  subscriptions:
  - image: {repoURL: ghcr.io/example/other}
`)
	for _, method := range []string{http.MethodPost, http.MethodDelete} {
		status, _, e := h.apply(method, body)
		if status != http.StatusBadRequest || e.Code != "invalid" || len(e.Details) != 1 {
			t.Fatalf("%s: %d %+v", method, status, e)
		}
		d := e.Details[0]
		if d.Document != 3 || d.Kind != model.KindWarehouse || d.Name != "app" || !strings.Contains(d.Message, "documents 2 and 3") {
			t.Errorf("%s: detail %+v, want document 3 naming document 2", method, d)
		}
	}
	if st := h.get("/v1/projects/demo", nil); st != http.StatusNotFound {
		t.Errorf("GET project after a refused apply: %d, want 404", st)
	}
}

// TestUnknownWebhookPathsLimitedFirst: made-up receiver paths spend a
// budget that is checked before any KV read or decrypt. With the budget
// spent, an unknown path is answered 429 even when NATS is gone (a KV
// read would have made it a 500), while a known receiver keeps its own
// budget.
func TestUnknownWebhookPathsLimitedFirst(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(d *gateway.Deps) {
		d.Config.WebhookRate = 0.001
		d.Config.WebhookBurst = 2
	})
	paths := h.receivers()
	ping := []byte(`{"zen":"z"}`)
	hdr := map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": "sha256=" + webhook.Sign(hookSecret, ping)}
	if st, _ := h.deliver(paths["gh"], hdr, ping); st != http.StatusOK {
		t.Fatalf("first delivery: %d", st) // spends one of the project's unknown-path budget
	}
	var codes []int
	for i := range 3 {
		st, _ := h.deliver("/webhooks/demo/made-up-"+string(rune('a'+i)), nil, ping)
		codes = append(codes, st)
	}
	if codes[0] != http.StatusNotFound || codes[1] != http.StatusTooManyRequests || codes[2] != http.StatusTooManyRequests {
		t.Fatalf("unknown paths: %v, want [404 429 429]", codes)
	}
	if st, _ := h.deliver(paths["gh"], hdr, ping); st != http.StatusOK {
		t.Errorf("known receiver after a flood of unknown paths: %d, want 200", st)
	}
	h.nc.Close()
	if st, body := h.deliver("/webhooks/demo/made-up-z", nil, ping); st != http.StatusTooManyRequests {
		t.Errorf("unknown path with NATS gone: %d %v, want 429 without a KV read", st, body)
	}
}

// TestDeleteProjectCascades: deleting a Project deletes everything of it —
// tokens, Secrets, freight, promotions, status, queues, leases,
// verification records, events — and a project created again under the
// same name starts empty: the old token is refused, the old Secret gone.
func TestDeleteProjectCascades(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.mustApply([]byte(`apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: demo}
stringData: {token: hunter22}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: f1, namespace: demo}
origin: {kind: Warehouse, name: app}
images: [{repoURL: ghcr.io/example/app, tag: 1.0.0}]
`))
	// A Promotion is applied once its Freight is stored.
	h.mustApply([]byte(`apiVersion: kargo.akuity.io/v1alpha1
kind: Promotion
metadata: {name: p1, namespace: demo}
spec: {stage: dev, freight: f1}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: other}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: other}
stringData: {token: keep-me}
`))
	old := h.createToken("demo", "ci", "admin")
	kept := h.createToken("other", "ci", "viewer")
	// What the services keep of the project.
	for b, key := range map[state.Bucket]string{
		state.Stages: state.Key("demo", "dev"), state.Warehouses: state.Key("demo", "app"),
		state.Promoter: "queue." + state.Key("demo", "dev"), state.Verifications: "run." + state.Key("demo", "dev", "p1"),
		state.DiscoveryLeases: state.Key("demo", "app"),
	} {
		if _, err := state.Put(ctx, h.env.Store.KV(b), key, map[string]string{"x": "y"}); err != nil {
			t.Fatal(err)
		}
	}
	if st, e := h.callAs(old, http.MethodPost, "/v1/projects/demo/warehouses/app/refresh", nil, nil); st != http.StatusAccepted {
		t.Fatalf("refresh with the project's token: %d %+v", st, e)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	open, _ := h.stream(sctx, "")

	wait := collectEvents(t, h.nc)
	status, out, e := h.apply(http.MethodDelete, []byte("apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: demo}\n"))
	if status != http.StatusOK || strings.Join(actions(out), " ") != "Project/demo=deleted" {
		t.Fatalf("delete: %d %+v %+v", status, out, e)
	}
	if evs := wait(1); evs[0].Type != events.TypeResourceDeleted || evs[0].Project != "demo" {
		t.Errorf("event %+v, want ResourceDeleted of the Project", evs[0])
	}
	// An open event stream of the project ends with it.
	deadline := time.After(10 * time.Second)
	for closed := false; !closed; {
		select {
		case _, ok := <-open:
			closed = !ok
		case <-deadline:
			t.Fatal("the project's event stream stays open after its deletion")
		}
	}
	if left := projectKeys(t, h, "demo"); len(left) != 0 {
		t.Errorf("keys of the deleted project left: %v", left)
	}
	if n := len(projectKeys(t, h, "other")); n != 4 { // its Secret, its token and their two events
		t.Errorf("the other project has %d keys, want 4: %v", n, projectKeys(t, h, "other"))
	}
	if st, _ := h.callAs(old, http.MethodGet, "/v1/projects/demo/stages", nil, nil); st != http.StatusUnauthorized {
		t.Errorf("old token after deletion: %d, want 401", st)
	}

	// The project created again is another project.
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	for path, want := range map[string]int{
		"/v1/projects/demo":                http.StatusUnauthorized,
		"/v1/projects/demo/secrets/creds":  http.StatusUnauthorized,
		"/v1/projects/demo/freight/f1":     http.StatusUnauthorized,
		"/v1/projects/other/secrets/creds": http.StatusOK,
	} {
		tok := old
		if strings.Contains(path, "/other/") {
			tok = kept
		}
		if st, _ := h.callAs(tok, http.MethodGet, path, nil, nil); st != want {
			t.Errorf("GET %s with the old token: %d, want %d", path, st, want)
		}
	}
	for _, path := range []string{"/v1/projects/demo/secrets/creds", "/v1/projects/demo/freight/f1", "/v1/projects/demo/promotions/p1"} {
		if st := h.get(path, nil); st != http.StatusNotFound {
			t.Errorf("GET %s in the new project: %d, want 404", path, st)
		}
	}
	var toks struct {
		Items []json.RawMessage `json:"items"`
	}
	if h.get("/v1/projects/demo/tokens", &toks); len(toks.Items) != 0 {
		t.Errorf("the new project has the old tokens: %s", toks.Items)
	}
	// Resuming the event stream from the start shows nothing of the old
	// project but its deletion, where the stream ends.
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	resumed, _ := h.stream(rctx, "0")
	var seen []string
	for ev := range resumed {
		seen = append(seen, ev.event)
	}
	if len(seen) != 1 || seen[0] != string(events.TypeResourceDeleted) {
		t.Errorf("resumed stream: %v, want only the project's deletion", seen)
	}
}

// projectKeys lists the keys of project in every bucket, and its events.
func projectKeys(t *testing.T, h *harness, project string) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, b := range state.Buckets {
		keys, err := state.Keys(ctx, h.env.Store.KV(b), ">")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if p, ok := state.ProjectOfKey(b, k); ok && p == project {
				out = append(out, string(b)+" "+k)
			}
		}
	}
	s, err := h.env.JS.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(events.ProjectFilter(project)))
	if err != nil {
		t.Fatal(err)
	}
	for subject := range info.State.Subjects {
		if !strings.Contains(subject, ".ResourceDeleted.Project.") {
			out = append(out, subject)
		}
	}
	return out
}
