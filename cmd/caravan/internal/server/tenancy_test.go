package server_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

const tenant = `apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: tenant}
---
apiVersion: v1
kind: Secret
metadata: {name: api, namespace: tenant}
stringData: {token: "Sup3r+S3cret/Value="}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: tenant}
spec:
  interval: 24h
  subscriptions:
  - image: {repoURL: registry.invalid/tenant/app}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: smoke, namespace: tenant}
spec:
  args:
  - name: token
    valueFrom: {secretKeyRef: {name: api, key: token}}
  metrics:
  - name: health
    consecutiveErrorLimit: 0
    successCondition: result == "ok"
    provider:
      web:
        url: "http://127.0.0.1:1/{{args.token}}?token={{args.token}}"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: dev, namespace: tenant}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: compose-output
        as: out
        config:
          upper: ${{ upper(secret('api').token) }}
          b64: ${{ toBase64(secret('api').token) }}
  verification:
    analysisTemplates: [{name: smoke}]
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Freight
metadata: {name: f1, namespace: tenant}
origin: {kind: Warehouse, name: app}
images: [{repoURL: registry.invalid/tenant/app, tag: 1.0.0}]
`

// get sends a GET with tok and returns the status and the raw body.
func (r *running) get(t *testing.T, tok, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestTenantSecretsAndDeletion runs the whole server: a promotion step and a
// web metric use a Secret (upper-cased and base64-encoded in the step, in
// the metric's URL); no form of it shows in what the API answers — stage,
// promotion, freight, events. Then the project is deleted and created
// again: its old token is refused, its Secret, freight and promotions are
// gone.
func TestTenantSecretsAndDeletion(t *testing.T) {
	const secret = "Sup3r+S3cret/Value="
	r := start(t, t.TempDir())
	defer r.stop(t)
	if code, body := r.do(t, http.MethodPost, "/v1/resources", tenant); code != http.StatusOK {
		t.Fatalf("apply: %d %v", code, body)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if code, body := r.post(t, "/v1/projects/tenant/tokens", `{"name":"ci","role":"viewer"}`, &tok); code != http.StatusCreated {
		t.Fatalf("create token: %d %s", code, body)
	}
	if code, body := r.post(t, "/v1/projects/tenant/stages/dev/promotions", `{"freight":"f1"}`, nil); code != http.StatusCreated {
		t.Fatalf("promote: %d %s", code, body)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, stage := r.get(t, r.token, "/v1/projects/tenant/stages/dev")
		if strings.Contains(stage, `"phase":"Error"`) && strings.Contains(stage, "verificationHistory") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the verification did not end in Error: %s", stage)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var answers strings.Builder
	for _, path := range []string{"/v1/projects/tenant/stages/dev", "/v1/projects/tenant/promotions", "/v1/projects/tenant/freight", "/v1/projects/tenant/secrets/api"} {
		code, body := r.get(t, tok.Token, path)
		if code != http.StatusOK {
			t.Fatalf("GET %s as a viewer: %d %s", path, code, body)
		}
		answers.WriteString(body)
	}
	answers.WriteString(r.events(t, "StageVerified"))
	text := answers.String()
	if !strings.Contains(text, "***") {
		t.Errorf("nothing was redacted; the test does not see the secret's uses:\n%s", text)
	}
	for _, form := range []string{secret, strings.ToUpper(secret), base64.StdEncoding.EncodeToString([]byte(secret)), url.QueryEscape(secret), "S3cret"} {
		if strings.Contains(text, form) {
			t.Errorf("%q shows in the API's answers:\n%s", form, text)
		}
	}

	if code, body := r.send(t, http.MethodDelete, "/v1/resources", "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: tenant}\n"); code != http.StatusOK || !strings.Contains(body, `"action":"deleted"`) {
		t.Fatalf("delete project: %d %s", code, body)
	}
	if code, body := r.do(t, http.MethodPost, "/v1/resources", "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: tenant}\n"); code != http.StatusOK {
		t.Fatalf("create the project again: %d %v", code, body)
	}
	if code, _ := r.get(t, tok.Token, "/v1/projects/tenant"); code != http.StatusUnauthorized {
		t.Errorf("the old token in the new project: %d, want 401", code)
	}
	for _, path := range []string{"/v1/projects/tenant/secrets/api", "/v1/projects/tenant/freight/f1"} {
		if code, body := r.get(t, r.token, path); code != http.StatusNotFound {
			t.Errorf("GET %s in the new project: %d %s, want 404", path, code, body)
		}
	}
	if _, body := r.get(t, r.token, "/v1/projects/tenant/promotions"); strings.Contains(body, `"name"`) && strings.Contains(body, "dev") {
		t.Errorf("promotions of the old project: %s", body)
	}
}

// post sends a JSON action as the admin and decodes a 2xx answer into v.
func (r *running) post(t *testing.T, path, body string, v any) (int, string) {
	t.Helper()
	code, out := r.sendAs(t, http.MethodPost, path, "application/json", body)
	if v != nil && code < 300 {
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
	}
	return code, out
}

// send sends a YAML body as the admin.
func (r *running) send(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	return r.sendAs(t, method, path, "application/yaml", body)
}

func (r *running) sendAs(t *testing.T, method, path, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, r.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// events reads the project's event stream from its start until an event
// of type until, and returns what it read.
func (r *running) events(t *testing.T, until string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/v1/projects/tenant/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Last-Event-ID", "0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
		if sc.Text() == "event: "+until {
			sc.Scan()
			b.WriteString(sc.Text() + "\n")
			return b.String()
		}
	}
	t.Fatalf("no %s event in the stream:\n%s", until, b.String())
	return ""
}
