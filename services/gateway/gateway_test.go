package gateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/gateway"
)

const token = "s3cret-admin-token"

// harness is a gateway over a real nats-server.
type harness struct {
	t   testing.TB
	srv *httptest.Server
	env *service.Env
	nc  *nats.Conn
}

type gatewayDeps = gateway.Deps

func newHarness(t testing.TB, mutate ...func(*gateway.Deps)) *harness {
	t.Helper()
	ns := testenv.NATS(t)
	nc := ns.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	common := service.Common{
		DataDir:      t.TempDir(),
		SecretKey:    base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
		StreamConfig: events.DefaultStreamConfig(),
		LogConfig:    telemetry.LogConfig{Level: "info", Format: "text"},
	}
	env, err := service.Provision(ctx, nc, "gateway", common, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	d := gateway.Deps{
		Config: gateway.Config{Common: common, HTTPAddr: "127.0.0.1:0", AdminToken: token, MaxBodyBytes: 10 << 20, ShutdownTimeout: 5 * time.Second, ListIndex: true, ExternalURL: "https://caravan.example.com"},
		Env:    env,
	}
	for _, m := range mutate {
		m(&d)
	}
	h, err := gateway.NewHandler(t.Context(), d)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &harness{t: t, srv: srv, env: env, nc: nc}
}

// do sends a request with the admin token (auth "" sends none) and returns
// the status and the body.
func (h *harness) do(method, path, auth, contentType string, body []byte) (int, []byte, http.Header) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	h.checkContract(req, resp.StatusCode, resp.Header, b)
	return resp.StatusCode, b, resp.Header
}

func (h *harness) get(path string, v any) int {
	h.t.Helper()
	status, b, _ := h.do(http.MethodGet, path, token, "", nil)
	if v != nil && status == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			h.t.Fatalf("GET %s: decode %s: %v", path, b, err)
		}
	}
	return status
}

type result struct {
	Kind, Project, Name, Action string
}

type outcome struct {
	Results  []result      `json:"results"`
	Warnings []model.Issue `json:"warnings"`
}

type apiError struct {
	Code    string        `json:"code"`
	Message string        `json:"message"`
	Details []model.Issue `json:"details"`
}

func (h *harness) apply(method string, body []byte) (int, outcome, apiError) {
	h.t.Helper()
	status, b, _ := h.do(method, "/v1/resources", token, "application/yaml", body)
	var out outcome
	var e apiError
	if status == http.StatusOK {
		if err := json.Unmarshal(b, &out); err != nil {
			h.t.Fatalf("decode %s: %v", b, err)
		}
	} else if err := json.Unmarshal(b, &e); err != nil {
		h.t.Fatalf("error body is not JSON: %s", b)
	}
	return status, out, e
}

func (h *harness) mustApply(body []byte) outcome {
	h.t.Helper()
	status, out, e := h.apply(http.MethodPost, body)
	if status != http.StatusOK {
		h.t.Fatalf("apply: %d %+v", status, e)
	}
	return out
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func actions(out outcome) []string {
	var s []string
	for _, r := range out.Results {
		s = append(s, r.Kind+"/"+r.Name+"="+r.Action)
	}
	return s
}

// collectEvents subscribes to every event subject and returns a function
// waiting for n envelopes (failing after a timeout) and then checking that
// no more arrive.
func collectEvents(t *testing.T, nc *nats.Conn) func(n int) []events.Envelope {
	t.Helper()
	sub, err := nc.SubscribeSync(events.SubjectRoot + ".>")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func(n int) []events.Envelope {
		t.Helper()
		var out []events.Envelope
		for len(out) < n {
			msg, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("waiting for event %d of %d: %v", len(out)+1, n, err)
			}
			env, err := events.OpenNATS(msg)
			if err != nil {
				t.Fatalf("decode event: %v", err)
			}
			out = append(out, env)
		}
		if msg, err := sub.NextMsg(200 * time.Millisecond); err == nil {
			t.Fatalf("unexpected extra event on %s: %s", msg.Subject, msg.Data)
		}
		return out
	}
}

func TestApplyPipeline(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	pipeline := readFile(t, "testdata/pipeline.yaml")
	wait := collectEvents(t, h.nc)

	out := h.mustApply(pipeline)
	want := "Project/demo=created Warehouse/app=created Stage/dev=created Stage/staging=created Stage/prod=created"
	if got := strings.Join(actions(out), " "); got != want {
		t.Fatalf("first apply: %s, want %s", got, want)
	}
	evs := wait(5)
	for i, ev := range evs {
		var p events.ResourceApplied
		if err := ev.Decode(&p); err != nil {
			t.Fatal(err)
		}
		r := out.Results[i]
		if ev.Type != events.TypeResourceApplied || p.Kind != r.Kind || p.Name != r.Name || p.Action != "created" || p.Generation != 1 || ev.Project != "demo" {
			t.Errorf("event %d: %+v %+v, want applied %s/%s in demo", i, ev, p, r.Kind, r.Name)
		}
	}

	out = h.mustApply(pipeline)
	want = "Project/demo=unchanged Warehouse/app=unchanged Stage/dev=unchanged Stage/staging=unchanged Stage/prod=unchanged"
	if got := strings.Join(actions(out), " "); got != want {
		t.Fatalf("second apply: %s, want %s", got, want)
	}
	wait(0)

	var before model.Stage
	if st := h.get("/v1/projects/demo/stages/prod", &before); st != http.StatusOK {
		t.Fatalf("GET prod: %d", st)
	}
	changed := bytes.Replace(pipeline, []byte("sources: {stages: [staging]}"), []byte("sources: {stages: [staging, dev]}"), 1)
	out = h.mustApply(changed)
	want = "Project/demo=unchanged Warehouse/app=unchanged Stage/dev=unchanged Stage/staging=unchanged Stage/prod=updated"
	if got := strings.Join(actions(out), " "); got != want {
		t.Fatalf("third apply: %s, want %s", got, want)
	}
	evs = wait(1)
	var p events.ResourceApplied
	if err := evs[0].Decode(&p); err != nil {
		t.Fatal(err)
	}
	if p != (events.ResourceApplied{Kind: "Stage", Name: "prod", Action: "updated", Generation: 2}) {
		t.Errorf("update event: %+v", p)
	}
	var after model.Stage
	h.get("/v1/projects/demo/stages/prod", &after)
	if after.UID != before.UID || after.UID == "" || !after.CreationTimestamp.Equal(before.CreationTimestamp.Time) || after.Generation != 2 || after.ResourceVersion == before.ResourceVersion {
		t.Errorf("metadata after update: %+v, before %+v", after.ObjectMeta, before.ObjectMeta)
	}
	if got := after.Spec.RequestedFreight[0].Sources.Stages; len(got) != 2 {
		t.Errorf("prod upstreams: %v", got)
	}

	t.Run("reads", func(t *testing.T) {
		// Status kept by the stage service is merged into answers.
		if _, err := state.Put(context.Background(), h.env.Store.KV(state.Stages), state.Key("demo", "dev"),
			model.StageStatus{Phase: "Steady", FreightSummary: "1/1 Fulfilled"}); err != nil {
			t.Fatal(err)
		}
		if _, err := state.Put(context.Background(), h.env.Store.KV(state.Warehouses), state.Key("demo", "app"),
			model.WarehouseStatus{LastFreightID: "abc123"}); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			path     string
			kind     string
			items    int
			contains []string
		}{
			{"/v1/projects", "ProjectList", 1, []string{`"name":"demo"`}},
			{"/v1/projects/demo/warehouses", "WarehouseList", 1, []string{`"lastFreightID":"abc123"`, `"repoURL":"ghcr.io/example/app"`}},
			{"/v1/projects/demo/stages", "StageList", 3, []string{`"freightSummary":"1/1 Fulfilled"`, `"uses":"git-clone"`}},
			{"/v1/projects/demo/freight", "FreightList", 0, nil},
			{"/v1/projects/demo/promotions", "PromotionList", 0, nil},
			{"/v1/projects/demo/promotiontasks", "PromotionTaskList", 0, nil},
			{"/v1/projects/demo/analysistemplates", "AnalysisTemplateList", 0, nil},
			{"/v1/projects/demo/secrets", "SecretList", 0, nil},
		}
		for _, tt := range tests {
			t.Run(tt.path, func(t *testing.T) {
				status, b, hdr := h.do(http.MethodGet, tt.path, token, "", nil)
				if status != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
					t.Fatalf("%d %s: %s", status, hdr.Get("Content-Type"), b)
				}
				var l struct {
					APIVersion string            `json:"apiVersion"`
					Kind       string            `json:"kind"`
					Items      []json.RawMessage `json:"items"`
					Metadata   map[string]any    `json:"metadata"`
				}
				if err := json.Unmarshal(b, &l); err != nil {
					t.Fatal(err)
				}
				if l.APIVersion != "v1" || l.Kind != tt.kind || len(l.Items) != tt.items || l.Items == nil || l.Metadata == nil {
					t.Fatalf("list: %s", b)
				}
				for _, c := range tt.contains {
					if !bytes.Contains(b, []byte(c)) {
						t.Errorf("answer lacks %s: %s", c, b)
					}
				}
			})
		}
		var proj model.Project
		if st := h.get("/v1/projects/demo", &proj); st != http.StatusOK || proj.Kind != "Project" || proj.APIVersion != model.KargoAPIVersion || proj.UID == "" {
			t.Errorf("GET project: %d %+v", st, proj)
		}
		var dev model.Stage
		if st := h.get("/v1/projects/demo/stages/dev", &dev); st != http.StatusOK || dev.Namespace != "demo" || dev.Status.Phase != "Steady" || dev.ResourceVersion == "" || dev.CreationTimestamp == nil {
			t.Errorf("GET stage: %d %+v", st, dev)
		}
		var wh model.Warehouse
		if st := h.get("/v1/projects/demo/warehouses/app", &wh); st != http.StatusOK || wh.Status.LastFreightID != "abc123" {
			t.Errorf("GET warehouse: %d %+v", st, wh)
		}
	})
}

func TestApplyStatusIgnored(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	body := []byte(`{"apiVersion":"kargo.akuity.io/v1alpha1","kind":"Stage","metadata":{"name":"dev","namespace":"demo","uid":"forged"},
"spec":{"requestedFreight":[{"origin":{"kind":"Warehouse","name":"app"},"sources":{"direct":true}}]},"status":{"phase":"Failed"}}`)
	status, b, _ := h.do(http.MethodPost, "/v1/resources", token, "application/json", body)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, b)
	}
	stored, _, err := h.env.Store.GetObject(context.Background(), "demo", model.KindStage, "dev")
	if err != nil {
		t.Fatal(err)
	}
	s := stored.(*model.Stage)
	if s.Status.Phase != "" || s.UID == "forged" || s.Generation != 2 {
		t.Errorf("stored %+v status %+v", s.ObjectMeta, s.Status)
	}
}

func TestApplyInvalid(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	const project = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata:\n  name: other\n"
	tests := []struct {
		name string
		body string
		want model.Issue // the issue that must be among the details
	}{
		{
			name: "unknown upstream",
			body: project + `---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: qa, namespace: demo}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {stages: [nowhere]}
`,
			want: model.Issue{Document: 2, Kind: "Stage", Name: "qa", Field: "spec.requestedFreight[0].sources.stages[0]"},
		},
		{
			name: "unknown kind",
			body: project + "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Gizmo\nmetadata: {name: g, namespace: demo}\n",
			want: model.Issue{Document: 2, Kind: "Gizmo", Name: "g", Field: "kind"},
		},
		{
			name: "unknown field",
			body: project + "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {name: w2, namespace: demo}\nspec:\n  subscriptionz: []\n",
			want: model.Issue{Document: 2, Kind: "Warehouse", Name: "w2", Field: "spec.subscriptionz"},
		},
		{
			name: "missing project",
			body: project + "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {name: w3, namespace: nope}\nspec:\n  subscriptions: []\n",
			want: model.Issue{Document: 2, Kind: "Warehouse", Name: "w3", Field: "metadata.namespace"},
		},
		{
			name: "bad YAML",
			body: project + "---\nkind: [\n",
			want: model.Issue{Document: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot(t, h)
			status, _, e := h.apply(http.MethodPost, []byte(tt.body))
			if status != http.StatusBadRequest || e.Code != "invalid" || !strings.Contains(e.Message, "invalid") {
				t.Fatalf("status %d %+v", status, e)
			}
			found := false
			for _, d := range e.Details {
				if d.Document == tt.want.Document && d.Kind == tt.want.Kind && d.Name == tt.want.Name &&
					(tt.want.Field == "" || d.Field == tt.want.Field) && d.Message != "" {
					found = true
				}
			}
			if !found {
				t.Errorf("details %+v lack %+v", e.Details, tt.want)
			}
			if after := snapshot(t, h); after != before {
				t.Errorf("store changed:\n%s\n%s", before, after)
			}
			if st := h.get("/v1/projects/other", nil); st != http.StatusNotFound {
				t.Errorf("project other: %d, want 404 (nothing written)", st)
			}
		})
	}
}

// snapshot lists every key and revision of the resources bucket.
func snapshot(t *testing.T, h *harness) string {
	t.Helper()
	items, _, err := state.List[json.RawMessage](context.Background(), h.env.Store.KV(state.Resources), ">", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, it := range items {
		fmt.Fprintf(&b, "%s@%d ", it.Key, it.Revision)
	}
	return b.String()
}

func TestDelete(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	wait := collectEvents(t, h.nc)
	body := []byte(`apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: prod, namespace: demo}
spec:
  requestedFreight: []
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: ghost, namespace: demo}
spec:
  requestedFreight: []
`)
	status, out, e := h.apply(http.MethodDelete, body)
	if status != http.StatusOK {
		t.Fatalf("%d %+v", status, e)
	}
	if got := strings.Join(actions(out), " "); got != "Stage/prod=deleted Stage/ghost=notfound" {
		t.Errorf("delete: %s", got)
	}
	evs := wait(1)
	if evs[0].Type != events.TypeResourceDeleted {
		t.Errorf("event %+v", evs[0])
	}
	if st := h.get("/v1/projects/demo/stages/prod", nil); st != http.StatusNotFound {
		t.Errorf("GET deleted stage: %d", st)
	}
	if status, _, _ := h.apply(http.MethodDelete, []byte("kind: [\n")); status != http.StatusBadRequest {
		t.Errorf("bad delete body: %d", status)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	routes := []struct{ method, path string }{
		{"POST", "/v1/resources"},
		{"DELETE", "/v1/resources"},
		{"GET", "/v1/projects"},
		{"GET", "/v1/projects/demo"},
		{"GET", "/v1/projects/demo/projectconfig"},
	}
	for _, k := range []string{"warehouses", "stages", "freight", "promotions", "promotiontasks", "analysistemplates", "secrets"} {
		routes = append(routes, struct{ method, path string }{"GET", "/v1/projects/demo/" + k}, struct{ method, path string }{"GET", "/v1/projects/demo/" + k + "/x"})
	}
	for _, r := range routes {
		for _, tok := range []string{"", "wrong", token + "x"} {
			t.Run(r.method+" "+r.path+" "+tok, func(t *testing.T) {
				status, b, hdr := h.do(r.method, r.path, tok, "", nil)
				var e apiError
				if status != http.StatusUnauthorized || json.Unmarshal(b, &e) != nil || e.Code != "unauthorized" || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%d %s %v", status, b, hdr)
				}
			})
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if status, b, _ := h.do("GET", path, "", "", nil); status != http.StatusOK {
			t.Errorf("%s: %d %s", path, status, b)
		}
	}
	if _, b, _ := h.do("GET", "/metrics", "", "", nil); !bytes.Contains(b, []byte(`caravan_http_requests_total{code="401",method="GET",route="GET /v1/projects"}`)) || !bytes.Contains(b, []byte("go_goroutines")) {
		t.Errorf("metrics lack the request counter or Go collector")
	}
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(d *gateway.Deps) {
		d.Ready = func(context.Context) error { return fmt.Errorf("promoter not started") }
	})
	status, b, _ := h.do("GET", "/readyz", "", "", nil)
	if status != http.StatusServiceUnavailable || !bytes.Contains(b, []byte("promoter not started")) {
		t.Errorf("%d %s", status, b)
	}
}

func TestClientMistakes(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	big := bytes.Repeat([]byte("# padding padding padding\n"), (11<<20)/26+1)
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        []byte
		status      int
		code        string
	}{
		{"too large", "POST", "/v1/resources", "application/yaml", big, 413, "too_large"},
		{"wrong content type", "POST", "/v1/resources", "text/html", []byte("x"), 415, "unsupported_media_type"},
		{"bad JSON", "POST", "/v1/resources", "application/json", []byte(`{"kind":`), 400, "invalid"},
		{"empty body", "POST", "/v1/resources", "", nil, 400, "invalid"},
		{"unknown project", "GET", "/v1/projects/nope", "", nil, 404, "not_found"},
		{"unknown project list", "GET", "/v1/projects/nope/stages", "", nil, 404, "not_found"},
		{"unknown stage", "GET", "/v1/projects/demo/stages/nope", "", nil, 404, "not_found"},
		{"no projectconfig", "GET", "/v1/projects/demo/projectconfig", "", nil, 404, "not_found"},
		{"unknown freight", "GET", "/v1/projects/demo/freight/nope", "", nil, 404, "not_found"},
		{"unknown route", "GET", "/v1/nothing", "", nil, 404, "not_found"},
		{"wrong method", "PUT", "/v1/resources", "", nil, 405, "method_not_allowed"},
		{"bad limit", "GET", "/v1/projects/demo/stages?limit=abc", "", nil, 400, "invalid"},
		{"limit too big", "GET", "/v1/projects/demo/stages?limit=1001", "", nil, 400, "invalid"},
		{"bad continue", "GET", "/v1/projects/demo/stages?continue=!!", "", nil, 400, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, b, hdr := h.do(tt.method, tt.path, token, tt.contentType, tt.body)
			var e apiError
			if err := json.Unmarshal(b, &e); err != nil || hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("not JSON (%s): %s", hdr.Get("Content-Type"), b)
			}
			if status != tt.status || e.Code != tt.code || e.Message == "" {
				t.Errorf("%d %+v, want %d %s", status, e, tt.status, tt.code)
			}
			if strings.HasPrefix(tt.name, "bad limit") && (len(e.Details) != 1 || e.Details[0].Field != "limit") {
				t.Errorf("details %+v do not name limit", e.Details)
			}
		})
	}
}

func TestPagination(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var body bytes.Buffer
	body.Write(readFile(t, "testdata/pipeline.yaml"))
	for i := range 22 { // 3 + 22 = 25 stages
		fmt.Fprintf(&body, `---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: s%02d, namespace: demo}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
`, i)
	}
	h.mustApply(body.Bytes())
	seen := map[string]bool{}
	var sizes []int
	next := ""
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("too many pages")
		}
		var l struct {
			Items    []model.Stage `json:"items"`
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
		}
		path := "/v1/projects/demo/stages?limit=10"
		if next != "" {
			path += "&continue=" + next
		}
		if st := h.get(path, &l); st != http.StatusOK {
			t.Fatalf("GET %s: %d", path, st)
		}
		sizes = append(sizes, len(l.Items))
		for _, s := range l.Items {
			if seen[s.Name] {
				t.Errorf("stage %s listed twice", s.Name)
			}
			seen[s.Name] = true
		}
		next = l.Metadata.Continue
		if next == "" {
			break
		}
	}
	if fmt.Sprint(sizes) != "[10 10 5]" || len(seen) != 25 {
		t.Errorf("pages %v, %d stages", sizes, len(seen))
	}
}

func TestSecrets(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	const password = "hunter2-very-secret"
	body := []byte(`apiVersion: v1
kind: Secret
metadata:
  name: repo-creds
  namespace: demo
  labels:
    kargo.akuity.io/cred-type: git
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: '{"stringData":{"password":"` + password + `"}}'
type: Opaque
stringData:
  repoURL: https://github.com/example/gitops.git
  username: bot
  password: ` + password + `
`)
	wait := collectEvents(t, h.nc)
	var responses [][]byte
	status, b, _ := h.do("POST", "/v1/resources", token, "application/yaml", body)
	responses = append(responses, b)
	if status != http.StatusOK {
		t.Fatalf("apply: %d %s", status, b)
	}
	status, b, _ = h.do("POST", "/v1/resources", token, "application/yaml", body)
	responses = append(responses, b)
	if status != http.StatusOK || !bytes.Contains(b, []byte(`"unchanged"`)) {
		t.Errorf("re-apply: %d %s", status, b)
	}
	evs := wait(1)
	raw, _ := json.Marshal(evs)
	responses = append(responses, raw)
	for _, path := range []string{"/v1/projects/demo/secrets", "/v1/projects/demo/secrets/repo-creds"} {
		status, b, _ := h.do("GET", path, token, "", nil)
		responses = append(responses, b)
		if status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, status, b)
		}
		for _, want := range []string{`"repoURL":"https://github.com/example/gitops.git"`, `"username":""`, `"password":""`, `"kargo.akuity.io/cred-type":"git"`} {
			if !bytes.Contains(b, []byte(want)) {
				t.Errorf("GET %s lacks %s: %s", path, want, b)
			}
		}
	}
	// A wrongly typed value is not quoted back either.
	bad := bytes.Replace(body, []byte("password: "+password), []byte("password: ["+password+"]"), 1)
	status, b, _ = h.do("POST", "/v1/resources", token, "application/yaml", bad)
	responses = append(responses, b)
	if status != http.StatusBadRequest {
		t.Errorf("bad secret: %d %s", status, b)
	}
	for _, r := range responses {
		if bytes.Contains(r, []byte(password)) || bytes.Contains(r, []byte(base64.StdEncoding.EncodeToString([]byte(password)))) {
			t.Errorf("password leaked: %s", r)
		}
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cfg := gateway.Config{HTTPAddr: "127.0.0.1:0", MaxBodyBytes: 1 << 20, ShutdownTimeout: time.Second}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "CARAVAN_ADMIN_TOKEN: required") {
		t.Errorf("Validate without token: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- gateway.Run(ctx, gateway.Deps{
			Config: gateway.Config{
				Common:       service.Common{DataDir: t.TempDir(), StreamConfig: events.DefaultStreamConfig(), LogConfig: telemetry.LogConfig{Level: "info", Format: "text"}},
				HTTPAddr:     "127.0.0.1:0",
				AdminToken:   token,
				MaxBodyBytes: 1 << 20, ShutdownTimeout: time.Second,
			},
			Logger: telemetry.NewLogger(&logs, telemetry.LogConfig{Level: "info", Format: "text"}),
			Env:    h.env,
		})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "gateway listening") {
		if time.Now().After(deadline) {
			t.Fatalf("no listening line: %s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	addr := logs.String()
	addr = addr[strings.Index(addr, "addr=")+5:]
	addr = strings.Fields(addr)[0]
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}
