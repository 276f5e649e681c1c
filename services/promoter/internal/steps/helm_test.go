package steps

import (
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
	return chartRepoWith(t, dir, func(h http.Handler) http.Handler { return h })
}

// chartRepoWith is chartRepo with the repository's handler wrapped.
func chartRepoWith(t *testing.T, dir string, wrap func(http.Handler) http.Handler) string {
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
	srv := httptest.NewServer(wrap(http.FileServer(http.Dir(root))))
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

// A chart of two templates, one holding two documents, and a test hook.
func writeChart(t *testing.T, sc *Context) {
	t.Helper()
	write(t, sc, "charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\n")
	write(t, sc, "charts/app/values.yaml", "replicas: 1\nimage: web:1.0\n")
	write(t, sc, "charts/app/templates/cms.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-a\ndata:\n  ns: {{ .Release.Namespace }}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-b\ndata:\n  image: {{ .Values.image | quote }}\n")
	write(t, sc, "charts/app/templates/deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: {{ .Values.replicas }}\n")
	write(t, sc, "charts/app/templates/test.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ .Release.Name }}-test\n  annotations:\n    helm.sh/hook: test\n")
}

const (
	cmA    = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-a\ndata:\n  ns: demo"
	cmB    = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-b\ndata:\n  image: \"web:1.0\""
	deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1"
	hook   = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-test\n  annotations:\n    helm.sh/hook: test"
)

func source(name, doc string) string { return "---\n# Source: " + name + "\n" + doc + "\n" }

func TestHelmTemplateLayouts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		config map[string]any
		dir    string
		want   map[string]string
	}{
		{
			name:   "helm layout by default, as helm template --output-dir",
			config: map[string]any{"outPath": "out"},
			dir:    "out",
			want: map[string]string{
				"app/templates/cms.yaml":    source("app/templates/cms.yaml", cmA) + source("app/templates/cms.yaml", cmB),
				"app/templates/deploy.yaml": source("app/templates/deploy.yaml", deploy),
				"app/templates/test.yaml":   source("app/templates/test.yaml", hook),
			},
		},
		{
			name:   "useReleaseName",
			config: map[string]any{"outPath": "out", "useReleaseName": true, "skipTests": true},
			dir:    "out",
			want: map[string]string{
				"web/app/templates/cms.yaml":    source("app/templates/cms.yaml", cmA) + source("app/templates/cms.yaml", cmB),
				"web/app/templates/deploy.yaml": source("app/templates/deploy.yaml", deploy),
			},
		},
		{
			name:   "flat",
			config: map[string]any{"outPath": "out", "outLayout": "flat"},
			dir:    "out",
			want: map[string]string{
				"configmap-web-a.yaml":     "# Source: app/templates/cms.yaml\n" + cmA,
				"configmap-web-b.yaml":     "# Source: app/templates/cms.yaml\n" + cmB,
				"apps-deployment-web.yaml": "# Source: app/templates/deploy.yaml\n" + deploy,
				"pod-web-test.yaml":        hook,
			},
		},
		{
			name:   "one file",
			config: map[string]any{"outPath": "out/all.yaml", "disableHooks": true},
			dir:    "out",
			want: map[string]string{
				"all.yaml": "---\n# Source: app/templates/cms.yaml\n" + cmA + "\n---\n# Source: app/templates/cms.yaml\n" + cmB +
					"\n---\n# Source: app/templates/deploy.yaml\n" + deploy + "\n",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newContext(t, nil)
			sc.Project = "demo"
			writeChart(t, sc)
			cfg := map[string]any{"path": "charts/app", "releaseName": "web"}
			for k, v := range tt.config {
				cfg[k] = v
			}
			sc.Config = cfg
			if _, err := run(t, "helm-template", sc); err != nil {
				t.Fatal(err)
			}
			got := files(t, sc, tt.dir)
			if keys(got) != keys(tt.want) {
				t.Fatalf("files %q, want %q", keys(got), keys(tt.want))
			}
			for name, want := range tt.want {
				if got[name] != want {
					t.Errorf("%s:\n%q\nwant:\n%q", name, got[name], want)
				}
			}
		})
	}
}

func TestHelmTemplateValues(t *testing.T) {
	t.Parallel()
	sc := newContext(t, nil)
	writeChart(t, sc)
	write(t, sc, "stage.yaml", "replicas: 3\n")
	sc.Config = map[string]any{"path": "charts/app", "releaseName": "web", "namespace": "prod", "outPath": "out/all.yaml",
		"valuesFiles": []any{"stage.yaml", "missing.yaml"}, "ignoreMissingValueFiles": true,
		"setValues": []any{map[string]any{"key": "image", "value": "web:1.10"}, map[string]any{"key": "replicas", "value": "5", "literal": true}}}
	if _, err := run(t, "helm-template", sc); err != nil {
		t.Fatal(err)
	}
	got := files(t, sc, "out")["all.yaml"]
	for _, want := range []string{"ns: prod", `image: "web:1.10"`, "replicas: 5"} {
		if !strings.Contains(got, want) {
			t.Errorf("rendered manifests lack %q:\n%s", want, got)
		}
	}
	sc.Config = map[string]any{"path": "charts/app", "releaseName": "web", "outPath": "out/x.yaml", "valuesFiles": []any{"missing.yaml"}}
	if _, err := run(t, "helm-template", sc); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("a missing values file: %v", err)
	}
}

func TestHelmTemplateBuildsDependencies(t *testing.T) {
	t.Parallel()
	sc := newContext(t, nil)
	write(t, sc, "charts/dep/Chart.yaml", "apiVersion: v2\nname: dep\nversion: 0.2.0\n")
	write(t, sc, "charts/dep/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-dep\n")
	write(t, sc, "charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n- name: dep\n  version: 0.2.0\n  repository: file://../dep\n")
	sc.Config = map[string]any{"path": "charts/app", "releaseName": "web", "outPath": "out/all.yaml"}
	if _, err := run(t, "helm-template", sc); err == nil || !strings.Contains(err.Error(), "buildDependencies") {
		t.Fatalf("a missing dependency: %v", err)
	}
	sc.Config["buildDependencies"] = true
	if _, err := run(t, "helm-template", sc); err != nil {
		t.Fatal(err)
	}
	if got := files(t, sc, "out")["all.yaml"]; !strings.Contains(got, "name: from-dep") {
		t.Fatalf("rendered:\n%s", got)
	}
}

// includeCRDs renders the chart's crds/, kubeVersion and apiVersions are
// the capabilities templates see.
func TestHelmTemplateCapabilitiesAndCRDs(t *testing.T) {
	t.Parallel()
	sc := newContext(t, nil)
	write(t, sc, "charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\n")
	write(t, sc, "charts/app/crds/widget.yaml", "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\n")
	write(t, sc, "charts/app/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: caps\ndata:\n"+
		"  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"+
		"  monitoring: {{ .Capabilities.APIVersions.Has \"monitoring.coreos.com/v1\" | quote }}\n")
	sc.Config = map[string]any{"path": "charts/app", "releaseName": "web", "outPath": "plain.yaml"}
	if _, err := run(t, "helm-template", sc); err != nil {
		t.Fatal(err)
	}
	plain := files(t, sc, ".")["plain.yaml"]
	if strings.Contains(plain, "CustomResourceDefinition") || !strings.Contains(plain, `monitoring: "false"`) {
		t.Fatalf("rendered without includeCRDs and apiVersions:\n%s", plain)
	}
	sc.Config = map[string]any{"path": "charts/app", "releaseName": "web", "outPath": "full.yaml", "includeCRDs": true,
		"kubeVersion": "1.29.3", "apiVersions": []any{"monitoring.coreos.com/v1"}}
	if _, err := run(t, "helm-template", sc); err != nil {
		t.Fatal(err)
	}
	full := files(t, sc, ".")["full.yaml"]
	for _, want := range []string{"name: widgets.example.com", `kube: "v1.29.3"`, `monitoring: "true"`} {
		if !strings.Contains(full, want) {
			t.Errorf("rendered manifests lack %q:\n%s", want, full)
		}
	}
	sc.Config = map[string]any{"path": "charts/app", "outPath": "bad.yaml", "kubeVersion": "not-a-version"}
	if _, err := run(t, "helm-template", sc); err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), "kubeVersion") {
		t.Fatalf("a bad kubeVersion: %v", err)
	}
}
