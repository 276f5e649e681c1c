package steps

import (
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

func TestKustomizeSetImage(t *testing.T) {
	t.Parallel()
	// Four-space indent, an unindented list, comments: kept as they are.
	const kustomization = `# dev overlay
resources:
- ../../base
images:
- name: ghcr.io/acme/app   # the app
  newTag: 1.0.0
- name: redis
  newName: mirror/redis
  newTag: "7.0"
namePrefix: dev-
`
	freight := []model.FreightReference{
		{Name: "f1", Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
			Images: []model.Image{{RepoURL: "ghcr.io/acme/app", Tag: "2.0.0", Digest: "sha256:beef"}}},
		{Name: "f2", Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "cache"},
			Images: []model.Image{{RepoURL: "redis", Tag: "7.2", Digest: "sha256:cafe"}}},
	}
	tests := []struct {
		name    string
		images  []any
		old     string // replaced by new in kustomization
		new     string
		message string
	}{
		{
			name:    "every freight image when none are listed, tag and digest",
			old:     "- name: ghcr.io/acme/app   # the app\n  newTag: 1.0.0\n- name: redis\n  newName: mirror/redis\n  newTag: \"7.0\"\n",
			new:     "- name: ghcr.io/acme/app\n  newTag: 2.0.0\n  digest: sha256:beef\n- name: redis\n  newTag: \"7.2\"\n  digest: sha256:cafe\n",
			message: "Updated overlay to use new images\n\n- ghcr.io/acme/app:2.0.0@sha256:beef\n- redis:7.2@sha256:cafe",
		},
		{
			name:    "a tag changes in place, the comment stays",
			images:  []any{map[string]any{"image": "ghcr.io/acme/app", "tag": "2.1.0"}},
			old:     "  newTag: 1.0.0\n",
			new:     "  newTag: 2.1.0\n",
			message: "Updated overlay to use new image\n\n- ghcr.io/acme/app:2.1.0",
		},
		{
			name:    "name is the kustomization's, image the freight's",
			images:  []any{map[string]any{"image": "redis", "name": "cache", "digest": "sha256:0123"}},
			old:     "namePrefix: dev-\n",
			new:     "- name: cache\n  digest: sha256:0123\nnamePrefix: dev-\n",
			message: "Updated overlay to use new image\n\n- cache@sha256:0123",
		},
		{
			name:    "a version from the freight (Caravan's), quoted where YAML would read a number",
			images:  []any{map[string]any{"image": "redis", "newName": "mirror/redis"}},
			old:     "  newTag: \"7.0\"\n",
			new:     "  newTag: \"7.2\"\n",
			message: "Updated overlay to use new image\n\n- mirror/redis:7.2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := map[string]any{"path": "overlay"}
			if tt.images != nil {
				cfg["images"] = tt.images
			}
			sc := newContext(t, cfg)
			sc.Freight = freight
			write(t, sc, "overlay/kustomization.yaml", kustomization)
			res, err := run(t, "kustomize-set-image", sc)
			if err != nil {
				t.Fatal(err)
			}
			want := replaceOnce(t, kustomization, tt.old, tt.new)
			if got := files(t, sc, "overlay")["kustomization.yaml"]; got != want {
				t.Errorf("kustomization:\n%s\nwant:\n%s", got, want)
			}
			if res.Output["commitMessage"] != tt.message {
				t.Errorf("commitMessage %q, want %q", res.Output["commitMessage"], tt.message)
			}
		})
	}
}

func replaceOnce(t *testing.T, s, old, repl string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("%q not in the input", old)
	}
	return strings.Replace(s, old, repl, 1)
}

func TestKustomizeSetImageAddsTheList(t *testing.T) {
	t.Parallel()
	sc := newContext(t, map[string]any{"images": []any{map[string]any{"image": "nginx", "tag": "1.27"}}})
	write(t, sc, "kustomization.yaml", "resources:\n  - deploy.yaml\n")
	if _, err := run(t, "kustomize-set-image", sc); err != nil {
		t.Fatal(err)
	}
	if got, want := files(t, sc, ".")["kustomization.yaml"], "resources:\n  - deploy.yaml\nimages:\n  - name: nginx\n    newTag: \"1.27\"\n"; got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestKustomizeBuildOutputFormats(t *testing.T) {
	t.Parallel()
	tree := map[string]string{
		"app/kustomization.yaml": "resources:\n- cm.yaml\n- deploy.yaml\n- ns.yaml\n",
		"app/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: shop\n",
		"app/deploy.yaml":        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n",
		"app/ns.yaml":            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n",
	}
	for format, want := range map[string]string{
		"":          "namespace-shop.yaml shop-configmap-web.yaml shop-deployment-web.yaml",
		"kargo":     "namespace-shop.yaml shop-configmap-web.yaml shop-deployment-web.yaml",
		"kustomize": "apps_v1_deployment_web.yaml v1_configmap_web.yaml v1_namespace_shop.yaml",
	} {
		sc := newContext(t, map[string]any{"path": "app", "outPath": "out", "outputFormat": format})
		if format == "" {
			delete(sc.Config, "outputFormat")
		}
		for p, c := range tree {
			write(t, sc, p, c)
		}
		if _, err := run(t, "kustomize-build", sc); err != nil {
			t.Fatal(err)
		}
		got := files(t, sc, "out")
		if keys(got) != want {
			t.Errorf("format %q: files %q, want %q", format, keys(got), want)
		}
	}
	sc := newContext(t, map[string]any{"path": "app", "outPath": "out", "plugin": map[string]any{"helm": map[string]any{"kubeVersion": "1.30"}}})
	if _, err := run(t, "kustomize-build", sc); err == nil || !IsTerminal(err) {
		t.Fatalf("plugin: %v", err)
	}
}
