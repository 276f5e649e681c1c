package steps

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHelmUpdateChartAndTemplate(t *testing.T) {
	t.Parallel()
	sc := newContext(t, nil)
	write(t, sc, "charts/dep/Chart.yaml", "apiVersion: v2\nname: dep\nversion: 0.2.0\n")
	write(t, sc, "charts/dep/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dep\ndata:\n  from: dep\n")
	write(t, sc, "charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n  - name: dep\n    version: 0.1.0 # pinned by Kargo\n    repository: file://../dep\n")
	write(t, sc, "charts/app/values.yaml", "image:\n  repository: ghcr.io/acme/app\n  tag: 1.0.0\nreplicas: 1\n")
	write(t, sc, "charts/app/templates/deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n  namespace: {{ .Release.Namespace }}\nspec:\n  replicas: {{ .Values.replicas }}\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {{ .Values.image.repository }}:{{ .Values.image.tag }}\n")
	write(t, sc, "values-dev.yaml", "replicas: 3\n")

	sc.Config = map[string]any{"path": "charts/app", "charts": []any{map[string]any{"repository": "file://../dep", "name": "dep", "version": "0.2.0"}}}
	res, err := run(t, "helm-update-chart", sc)
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
	if _, err := run(t, "helm-template", sc); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(sc.Workspace.Dir.Path(), "out/dev.yaml"))
	for _, want := range []string{"image: ghcr.io/acme/app:1.4.0", "replicas: 3", "namespace: dev", "name: guestbook", "from: dep"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("rendered manifests lack %q:\n%s", want, got)
		}
	}
	sc.Config = map[string]any{"path": "charts/app", "outPath": "out/dir", "valuesFiles": []any{"../outside.yaml"}}
	if _, err := run(t, "helm-template", sc); err == nil || !IsTerminal(err) {
		t.Fatalf("a values file outside the work dir: %v", err)
	}
}
