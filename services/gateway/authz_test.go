package gateway_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/state"
)

// minimum access of every route; the matrix fails when a route is missing
// here, so a new route must say who may call it.
var routeAccess = map[string]string{
	"GET /healthz":                        "public",
	"GET /readyz":                         "public",
	"GET /metrics":                        "public",
	"GET /openapi.json":                   "public",
	"GET /version":                        "public",
	"POST /webhooks/{project}/{receiver}": "public",
	"POST /v1/resources":                  "projectAdmin",
	"DELETE /v1/resources":                "projectAdmin",
	"GET /v1/projects":                    "any",
	"GET /v1/whoami":                      "any",
	"GET /v1/projects/{project}/freight/{name}/compare/{other}":        "viewer",
	"GET /v1/projects/{project}/promotions/{name}/diff":                "viewer",
	"GET /v1/projects/{project}/promotions/{name}/approval":            "viewer",
	"POST /v1/projects/{project}/promotions/{name}/approve":            "promoter",
	"GET /v1/projects/{project}/audit":                                 "viewer",
	"GET /v1/projects/{project}/notifications":                         "viewer",
	"GET /v1/projects/{project}/stages/{stage}/verifications":          "viewer",
	"GET /v1/projects/{project}/stages/{stage}/verifications/{id}":     "viewer",
	"GET /v1/projects/{project}":                                       "viewer",
	"GET /v1/projects/{project}/projectconfig":                         "viewer",
	"GET /v1/projects/{project}/warehouses":                            "viewer",
	"GET /v1/projects/{project}/warehouses/{name}":                     "viewer",
	"GET /v1/projects/{project}/stages":                                "viewer",
	"GET /v1/projects/{project}/stages/{name}":                         "viewer",
	"GET /v1/projects/{project}/freight":                               "viewer",
	"GET /v1/projects/{project}/freight/{name}":                        "viewer",
	"GET /v1/projects/{project}/promotions":                            "viewer",
	"GET /v1/projects/{project}/promotions/{name}":                     "viewer",
	"GET /v1/projects/{project}/promotiontasks":                        "viewer",
	"GET /v1/projects/{project}/promotiontasks/{name}":                 "viewer",
	"GET /v1/projects/{project}/analysistemplates":                     "viewer",
	"GET /v1/projects/{project}/analysistemplates/{name}":              "viewer",
	"GET /v1/projects/{project}/secrets":                               "viewer",
	"GET /v1/projects/{project}/secrets/{name}":                        "viewer",
	"GET /v1/projects/{project}/events":                                "viewer",
	"POST /v1/projects/{project}/warehouses/{name}/refresh":            "promoter",
	"POST /v1/projects/{project}/freight":                              "promoter",
	"PATCH /v1/projects/{project}/freight/{name}":                      "promoter",
	"POST /v1/projects/{project}/freight/{name}/approve":               "promoter",
	"POST /v1/projects/{project}/stages/{stage}/promotions":            "promoter",
	"POST /v1/projects/{project}/promotions/{name}/abort":              "promoter",
	"POST /v1/projects/{project}/stages/{stage}/verification":          "promoter",
	"DELETE /v1/projects/{project}/stages/{stage}/verification":        "promoter",
	"POST /v1/projects/{project}/stages/{stage}/auto-promotion/resume": "promoter",
	"POST /v1/projects/{project}/tokens":                               "projectAdmin",
	"GET /v1/projects/{project}/tokens":                                "projectAdmin",
	"GET /v1/projects/{project}/tokens/{name}":                         "projectAdmin",
	"DELETE /v1/projects/{project}/tokens/{name}":                      "projectAdmin",
	"GET /v1/deadletters":                                              "system",
	"POST /v1/deadletters/{id}/replay":                                 "system",
}

var accessRank = map[string]int{"public": 0, "any": 1, "viewer": 2, "promoter": 3, "projectAdmin": 4, "system": 5}

// openAPIRoutes returns "METHOD path" of every operation in /openapi.json.
func (h *harness) openAPIRoutes() []string {
	h.t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	status, b, _ := h.do("GET", "/openapi.json", "", "", nil)
	if status != http.StatusOK || json.Unmarshal(b, &doc) != nil {
		h.t.Fatalf("GET /openapi.json: %d %s", status, b)
	}
	var out []string
	for p, ops := range doc.Paths {
		for m := range ops {
			out = append(out, strings.ToUpper(m)+" "+p)
		}
	}
	sort.Strings(out)
	return out
}

func (h *harness) createToken(project, name, role string) string {
	h.t.Helper()
	var out struct {
		Token string `json:"token"`
		Role  string `json:"role"`
	}
	if st, e := h.call("POST", "/v1/projects/"+project+"/tokens", map[string]string{"name": name, "role": role}, &out); st != http.StatusCreated || out.Token == "" || out.Role != role {
		h.t.Fatalf("create token %s/%s: %d %+v %+v", project, name, st, e, out)
	}
	return out.Token
}

const configMap = `apiVersion: v1
kind: ConfigMap
metadata: {name: matrix, namespace: demo}
data: {a: b}
`

// TestRoleMatrix calls every route as every kind of caller: denied calls
// answer 401 or 403 and publish nothing; allowed ones get past auth.
func TestRoleMatrix(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(d *gatewayDeps) { d.Config.SSEHeartbeat = time.Hour })
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.mustApply([]byte("apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: other}\n"))

	callers := map[string]string{
		"system":       token,
		"projectAdmin": h.createToken("demo", "pa", "admin"),
		"promoter":     h.createToken("demo", "pr", "promoter"),
		"viewer":       h.createToken("demo", "vi", "viewer"),
		"otherProject": h.createToken("other", "vi", "admin"),
	}
	revoked := h.createToken("demo", "gone", "admin")
	if st, _ := h.call("DELETE", "/v1/projects/demo/tokens/gone", nil, nil); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	rank := map[string]int{"system": 5, "projectAdmin": 4, "promoter": 3, "viewer": 2, "otherProject": 1}

	routes := h.openAPIRoutes()
	for _, rt := range routes {
		if _, ok := routeAccess[rt]; !ok {
			t.Errorf("route %s is not in the matrix", rt)
		}
	}
	for rt := range routeAccess {
		if !slices.Contains(routes, rt) {
			t.Errorf("matrix route %s is not served (not in /openapi.json)", rt)
		}
	}

	path := func(p string) string {
		r := strings.NewReplacer("{project}", "demo", "{name}", "zz-none", "{stage}", "zz-none", "{id}", "zz-none", "{receiver}", "zz-none")
		return r.Replace(p)
	}
	request := func(tok, rt string) int {
		method, p, _ := strings.Cut(rt, " ")
		var body []byte
		ct := "application/json"
		switch {
		case strings.HasSuffix(p, "/resources"):
			body, ct = []byte(configMap), "application/yaml"
		case method == "POST" || method == "PATCH":
			body = []byte(`{}`)
		}
		if strings.HasSuffix(p, "/events") {
			// A stream: only the status matters.
			req, _ := http.NewRequest(method, h.srv.URL+path(p), nil)
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := h.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			return resp.StatusCode
		}
		st, _, _ := h.do(method, path(p), tok, ct, body)
		return st
	}

	// Denied calls first: none of them may change anything.
	wait := collectEvents(t, h.nc)
	for _, rt := range routes {
		need := accessRank[routeAccess[rt]]
		if need == 0 {
			continue
		}
		for _, bad := range []string{"", "not-a-token", "cvn.bm9wZQ.bm9wZQ.secret", revoked} {
			if st := request(bad, rt); st != http.StatusUnauthorized {
				t.Errorf("%s with token %q: %d, want 401", rt, bad, st)
			}
		}
		for who, tok := range callers {
			r := rank[who]
			if who == "otherProject" && need <= 1 {
				r = 5 // GET /v1/projects needs any token
			}
			if r < need || (who == "otherProject" && need >= 2) {
				if st := request(tok, rt); st != http.StatusForbidden {
					t.Errorf("%s as %s: %d, want 403", rt, who, st)
				}
			}
		}
	}
	wait(0)
	if _, _, err := h.env.Store.GetObject(t.Context(), "demo", "ConfigMap", "matrix"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("a denied apply wrote the ConfigMap: %v", err)
	}

	// Allowed calls get past authentication and authorization.
	for _, rt := range routes {
		need := accessRank[routeAccess[rt]]
		for who, tok := range callers {
			if who == "otherProject" && need >= 2 || rank[who] < need {
				continue
			}
			if st := request(tok, rt); st == http.StatusUnauthorized || st == http.StatusForbidden {
				t.Errorf("%s as %s: %d, want allowed", rt, who, st)
			}
		}
	}

	// Lists of projects show only the caller's.
	var l struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
		} `json:"items"`
	}
	for who, want := range map[string]string{"viewer": "demo", "otherProject": "other"} {
		st, b, _ := h.do("GET", "/v1/projects", callers[who], "", nil)
		if err := json.Unmarshal(b, &l); err != nil || st != http.StatusOK || len(l.Items) != 1 || l.Items[0].Metadata.Name != want {
			t.Errorf("projects of %s: %d %s", who, st, b)
		}
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	tok := h.createToken("demo", "ci", "promoter")
	if st, _ := h.call("POST", "/v1/projects/demo/tokens", map[string]string{"name": "ci", "role": "viewer"}, nil); st != http.StatusConflict {
		t.Errorf("same name again: %d", st)
	}
	for _, bad := range []map[string]string{{"name": "x", "role": "root"}, {"name": "Bad Name", "role": "viewer"}} {
		if st, _ := h.call("POST", "/v1/projects/demo/tokens", bad, nil); st != http.StatusBadRequest {
			t.Errorf("create %v: %d", bad, st)
		}
	}
	if st, _ := h.call("POST", "/v1/projects/nope/tokens", map[string]string{"name": "x", "role": "viewer"}, nil); st != http.StatusNotFound {
		t.Errorf("token in unknown project: %d", st)
	}
	st, b, _ := h.do("GET", "/v1/projects/demo/tokens", token, "", nil)
	if st != http.StatusOK || !strings.Contains(string(b), `"name":"ci"`) || !strings.Contains(string(b), `"role":"promoter"`) {
		t.Errorf("list: %d %s", st, b)
	}
	secret := tok[strings.LastIndex(tok, ".")+1:]
	if strings.Contains(string(b), secret) || strings.Contains(string(b), "sha256") {
		t.Errorf("list shows the secret or its hash: %s", b)
	}
	var one map[string]any
	if st, _ := h.call("GET", "/v1/projects/demo/tokens/ci", nil, &one); st != http.StatusOK || one["role"] != "promoter" || one["token"] != nil {
		t.Errorf("get: %d %v", st, one)
	}
	// The token works, for its role only.
	if st, _ := h.callAs(tok, "POST", "/v1/projects/demo/warehouses/app/refresh", nil, nil); st != http.StatusAccepted {
		t.Errorf("refresh with promoter token: %d", st)
	}
	if st, _ := h.callAs(tok, "GET", "/v1/projects/demo/tokens", nil, nil); st != http.StatusForbidden {
		t.Errorf("list tokens with promoter token: %d", st)
	}
	if st, _ := h.call("DELETE", "/v1/projects/demo/tokens/ci", nil, nil); st != http.StatusOK {
		t.Errorf("revoke: %d", st)
	}
	if st, _ := h.callAs(tok, "GET", "/v1/projects/demo/stages", nil, nil); st != http.StatusUnauthorized {
		t.Errorf("revoked token: %d", st)
	}
	if st, _ := h.call("DELETE", "/v1/projects/demo/tokens/ci", nil, nil); st != http.StatusNotFound {
		t.Errorf("revoke again: %d", st)
	}
	// A tampered secret does not work.
	tok2 := h.createToken("demo", "ci2", "viewer")
	if st, _ := h.callAs(tok2+"x", "GET", "/v1/projects/demo/stages", nil, nil); st != http.StatusUnauthorized {
		t.Errorf("tampered token: %d", st)
	}
}
