package steps

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/repo"

	"github.com/caravan-cd/caravan/pkg/egress"
)

// chartRepo serves the chart in dir from an HTTP chart repository on
// loopback and returns its URL.
func chartRepo(t *testing.T, dir string) string {
	t.Helper()
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	tgz, err := chartutil.Save(ch, root)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(root)))
	t.Cleanup(srv.Close)
	idx := repo.NewIndexFile()
	if err := idx.MustAdd(ch.Metadata, filepath.Base(tgz), srv.URL, ""); err != nil {
		t.Fatal(err)
	}
	if err := idx.WriteFile(filepath.Join(root, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.URL
}

func TestHelmUpdateChartAndTemplate(t *testing.T) {
	t.Parallel()
	sc := newContext(t, nil)
	sc.Egress = allowLoopback(t, egress.Config{})
	dep := filepath.Join(t.TempDir(), "dep")
	for name, content := range map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: dep\nversion: 0.2.0\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dep\ndata:\n  from: dep\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dep, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dep, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	repoURL := chartRepo(t, dep)
	write(t, sc, "charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n  - name: dep\n    version: 0.1.0 # pinned by Kargo\n    repository: "+repoURL+"\n")
	write(t, sc, "charts/app/values.yaml", "image:\n  repository: ghcr.io/acme/app\n  tag: 1.0.0\nreplicas: 1\n")
	write(t, sc, "charts/app/templates/deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n  namespace: {{ .Release.Namespace }}\nspec:\n  replicas: {{ .Values.replicas }}\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {{ .Values.image.repository }}:{{ .Values.image.tag }}\n")
	write(t, sc, "values-dev.yaml", "replicas: 3\n")

	sc.Config = map[string]any{"path": "charts/app", "charts": []any{map[string]any{"repository": repoURL, "name": "dep", "version": "0.2.0"}}}
	res, err := helmUpdateChart(context.Background(), sc)
	if err != nil {
		t.Fatal(err)
	}
	chart, _ := os.ReadFile(filepath.Join(sc.Workspace.Dir.Path(), "charts/app/Chart.yaml"))
	if !strings.Contains(string(chart), "version: 0.2.0 # pinned by Kargo") {
		t.Fatalf("Chart.yaml:\n%s", chart)
	}
	if _, err := os.Stat(filepath.Join(sc.Workspace.Dir.Path(), "charts/app/charts/dep-0.2.0.tgz")); err != nil {
		t.Fatalf("dependency not fetched: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sc.Workspace.Dir.Path(), "charts/app/Chart.lock")); err != nil {
		t.Fatalf("no Chart.lock: %v", err)
	}
	if !strings.Contains(res.Output["commitMessage"].(string), "dep:0.2.0") {
		t.Fatalf("commitMessage %q", res.Output["commitMessage"])
	}

	sc.Config = map[string]any{"path": "charts/app", "outPath": "out/dev.yaml", "releaseName": "guestbook", "namespace": "dev",
		"valuesFiles": []any{"values-dev.yaml"}, "setValues": []any{map[string]any{"key": "image.tag", "value": "1.4.0"}}}
	if _, err := helmTemplate(context.Background(), sc); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(sc.Workspace.Dir.Path(), "out/dev.yaml"))
	for _, want := range []string{"image: ghcr.io/acme/app:1.4.0", "replicas: 3", "namespace: dev", "name: guestbook", "from: dep"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("rendered manifests lack %q:\n%s", want, got)
		}
	}
	sc.Config = map[string]any{"path": "charts/app", "outPath": "out/dir", "valuesFiles": []any{"../outside.yaml"}}
	if _, err := helmTemplate(context.Background(), sc); err == nil || !IsTerminal(err) {
		t.Fatalf("a values file outside the work dir: %v", err)
	}
}
