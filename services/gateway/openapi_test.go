package gateway_test

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestOpenAPI checks /openapi.json against the router (every documented
// operation reaches a route) and docs/api.md against /openapi.json (every
// route has a section, every section is a route).
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	st, b, _ := h.do("GET", "/openapi.json", "", "", nil)
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			OperationID string `json:"operationId"`
			Summary     string `json:"summary"`
		} `json:"paths"`
	}
	if st != http.StatusOK || json.Unmarshal(b, &doc) != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi.json: %d %.200s", st, b)
	}
	routes := h.openAPIRoutes()
	if len(routes) < 40 {
		t.Errorf("only %d operations documented", len(routes))
	}
	ids := map[string]bool{}
	for p, ops := range doc.Paths {
		for m, op := range ops {
			if op.OperationID == "" || op.Summary == "" || ids[op.OperationID] {
				t.Errorf("%s %s: operationId %q summary %q", m, p, op.OperationID, op.Summary)
			}
			ids[op.OperationID] = true
		}
	}
	// Every documented operation is routed: the mux's own 404 and 405
	// answers (code not_found "no route …", method_not_allowed) never come.
	fill := strings.NewReplacer("{project}", "demo", "{name}", "x", "{stage}", "x", "{id}", "x", "{receiver}", "x")
	for _, rt := range routes {
		method, p, _ := strings.Cut(rt, " ")
		if strings.HasSuffix(p, "/events") {
			continue // a stream; routed as the role matrix shows
		}
		st, body, _ := h.do(method, fill.Replace(p), token, "application/json", []byte(`{}`))
		if st == http.StatusMethodNotAllowed || strings.Contains(string(body), "no route for") {
			t.Errorf("%s: not routed (%d %s)", rt, st, body)
		}
	}
	// And an undocumented path is not.
	if st, body, _ := h.do("GET", "/v1/nothing", token, "", nil); st != http.StatusNotFound || !strings.Contains(string(body), "no route for") {
		t.Errorf("undocumented path: %d %s", st, body)
	}

	// Every JSON body is typed: a named schema of components, generated
	// from the Go type, never a bare "object".
	if err := loadContract(h); err != nil {
		t.Fatal(err)
	}
	for path, item := range contract.doc.Paths.Map() {
		for method, op := range item.Operations() {
			check := func(what string, c openapi3.Content) {
				mt := c.Get("application/json")
				if mt == nil {
					return
				}
				sr := mt.Schema
				if method+" "+path == "GET /openapi.json" || what == "request" && (path == "/v1/resources" || strings.HasPrefix(path, "/webhooks/")) {
					return // any JSON by nature
				}
				if sr == nil || sr.Ref == "" || sr.Value == nil || len(sr.Value.Properties) == 0 {
					t.Errorf("%s %s: %s schema is not a typed component: %+v", method, path, what, sr)
				}
			}
			for code, rr := range op.Responses.Map() {
				check("answer "+code, rr.Value.Content)
			}
			if op.RequestBody != nil {
				check("request", op.RequestBody.Value.Content)
			}
		}
	}
	var stage struct {
		Properties map[string]any `json:"properties"`
	}
	if b, err := json.Marshal(contract.doc.Components.Schemas["Stage"].Value); err != nil || json.Unmarshal(b, &stage) != nil || stage.Properties["spec"] == nil || stage.Properties["status"] == nil {
		t.Errorf("schema Stage: %s", b)
	}

	md, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	heading := regexp.MustCompile("(?m)^### `([A-Z]+) ([^`]+)`")
	var documented []string
	for _, m := range heading.FindAllStringSubmatch(string(md), -1) {
		documented = append(documented, m[1]+" "+m[2])
	}
	for _, rt := range routes {
		if !slices.Contains(documented, rt) {
			t.Errorf("docs/api.md has no section for %s", rt)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("docs/api.md documents %s, which is not a route", d)
		}
	}
}
