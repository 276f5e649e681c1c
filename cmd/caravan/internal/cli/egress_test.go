package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// TestEgressRealServer runs http steps on the real server under its
// default egress policy: the gateway's own port, another loopback server
// and the metadata address are refused, each with an error that says why
// and how to open it.
func TestEgressRealServer(t *testing.T) {
	t.Parallel()
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{}`)) }))
	t.Cleanup(local.Close)
	p := uniqueProject("egress")
	stage := func(name, url string) string {
		return `---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: ` + name + `
  namespace: PROJECT
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: http
        as: call
        config:
          url: ` + url + `
`
	}
	manifests := strings.NewReplacer("PROJECT", p).Replace(`apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: PROJECT
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: app
  namespace: PROJECT
spec:
  subscriptions:
  - image:
      repoURL: 127.0.0.1:1/example/app
` + stage("own", srv.url+"/healthz") + stage("loopback", local.URL) + stage("metadata", "http://169.254.169.254/latest/meta-data/"))
	must(t, run(t, manifests, nil, "apply", "-f", "-"))
	seedFreight(t, &model.Freight{
		ObjectMeta: model.ObjectMeta{Namespace: p},
		Alias:      "lone-wolf",
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images:     []model.Image{{RepoURL: "127.0.0.1:1/example/app", Tag: "1.0.0", Digest: "sha256:0a"}},
	})
	for _, tt := range []struct{ stage, want string }{
		{"own", "this server's own listen address"},
		{"loopback", "loopback address"},
		{"metadata", "cloud metadata service"},
	} {
		t.Run(tt.stage, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			r := runCtx(ctx, t, "", map[string]string{"CARAVAN_PROJECT": p}, "promote", "--stage", tt.stage, "--freight-alias", "lone-wolf", "--wait")
			if r.code != 1 || !strings.Contains(r.stderr, "egress policy refuses") || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "CARAVAN_EGRESS_ALLOW") {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestLocalRepoURLRefusedAtApply: a file:// or local-path repository is a
// 400 naming the field, and nothing is stored.
func TestLocalRepoURLRefusedAtApply(t *testing.T) {
	t.Parallel()
	p := uniqueProject("local-repo")
	for _, tt := range []struct{ sub, field string }{
		{"git: {repoURL: 'file://" + srv.dataDir + "/discovery/git'}", "spec.subscriptions[0].git.repoURL"},
		{"git: {repoURL: " + srv.dataDir + "/promoter/git}", "spec.subscriptions[0].git.repoURL"},
		{"chart: {repoURL: 'file://../charts', name: app}", "spec.subscriptions[0].chart.repoURL"},
	} {
		body := strings.NewReplacer("PROJECT", p).Replace(`apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: PROJECT
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: app
  namespace: PROJECT
spec:
  subscriptions:
  - ` + tt.sub + `
`)
		req, err := http.NewRequest(http.MethodPost, srv.url+"/v1/resources", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+srv.token)
		req.Header.Set("Content-Type", "application/yaml")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		_ = resp.Body.Close()
		b, _ := json.Marshal(out)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tt.field) || !strings.Contains(string(b), "repository URL refused") {
			t.Fatalf("%s: %d %s", tt.sub, resp.StatusCode, b)
		}
		r := run(t, "", map[string]string{"CARAVAN_PROJECT": p}, "get", "warehouses")
		if strings.Contains(r.stdout, "app") {
			t.Fatalf("the refused warehouse was stored: %s", r.stdout)
		}
	}
}
