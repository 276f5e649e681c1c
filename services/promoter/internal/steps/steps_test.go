package steps

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/expressions"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// newContext is a step context with a work dir in a temporary directory.
func newContext(t *testing.T, cfg map[string]any) *Context {
	t.Helper()
	return newContextAt(t, t.TempDir(), cfg)
}

// newContextAt is a step context with its work dir at dir.
func newContextAt(t *testing.T, dir string, cfg map[string]any) *Context {
	t.Helper()
	ws, err := NewWorkspace(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return &Context{
		Services:  &Services{},
		Workspace: ws,
		Config:    cfg,
		Freight: []model.FreightReference{{
			Name:   "f1",
			Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
			Images: []model.Image{{RepoURL: "ghcr.io/acme/app", Tag: "2.0.0", Digest: "sha256:beef"}},
		}},
		Eval: func(code string, vars map[string]any) (any, error) {
			return expressions.EvalWith(code, &expressions.Env{}, vars)
		},
	}
}

// run runs the built-in step uses with sc, as the engine does.
func run(t *testing.T, uses string, sc *Context) (Result, error) {
	t.Helper()
	d, ok := Builtins()[uses]
	if !ok {
		t.Fatalf("no step %q", uses)
	}
	return Run(context.Background(), d, sc)
}

func write(t *testing.T, sc *Context, name, content string) string {
	t.Helper()
	p := filepath.Join(sc.Workspace.Dir.Path(), name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDecodeTakesNumbersAsStrings(t *testing.T) {
	t.Parallel()
	sc := newContext(t, map[string]any{"path": "x", "images": []any{map[string]any{"image": "a", "tag": 7.0}}, "flag": true})
	var cfg struct {
		Path   string        `json:"path"`
		Images []imageUpdate `json:"images"`
		Flag   bool          `json:"flag"`
	}
	if err := sc.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Images[0].Tag != "7" || !cfg.Flag {
		t.Fatalf("decoded %+v", cfg)
	}
	bad := newContext(t, map[string]any{"flag": "yes"})
	if err := bad.Decode(&cfg); err == nil || !IsTerminal(err) {
		t.Fatalf("a string for a boolean: %v", err)
	}
}

func TestYAMLUpdateKeepsFormatting(t *testing.T) {
	t.Parallel()
	sc := newContext(t, map[string]any{"path": "values.yaml", "updates": []any{
		map[string]any{"key": "image.tag", "value": "2.0.0"},
		map[string]any{"key": "ingress.hosts.0.host", "value": "dev.example.com"},
		map[string]any{"key": "new.nested", "value": 3.0},
	}})
	p := write(t, sc, "values.yaml", "# top\nimage:\n  repository: app # the image\n  tag: '1.0.0'\ningress:\n  hosts:\n    - host: old.example.com\n")
	res, err := run(t, "yaml-update", sc)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	want := "# top\nimage:\n  repository: app # the image\n  tag: '2.0.0'\ningress:\n  hosts:\n    - host: dev.example.com\nnew:\n  nested: 3\n"
	if string(got) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(res.Output["commitMessage"].(string), "image.tag: 2.0.0") {
		t.Fatalf("commitMessage %q", res.Output["commitMessage"])
	}
}

func TestKustomizeSetImageFromFreight(t *testing.T) {
	t.Parallel()
	sc := newContext(t, map[string]any{"path": "overlay", "images": []any{
		map[string]any{"image": "ghcr.io/acme/app"},
		map[string]any{"image": "nginx", "digest": "sha256:cafe", "newName": "mirror/nginx"},
	}})
	p := write(t, sc, "overlay/kustomization.yaml", "resources:\n  - base\n")
	res, err := run(t, "kustomize-set-image", sc)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	want := "resources:\n  - base\nimages:\n  - name: ghcr.io/acme/app\n    newTag: 2.0.0\n  - name: nginx\n    newName: mirror/nginx\n    digest: sha256:cafe\n"
	if string(got) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	want = "Updated overlay to use new images\n\n- ghcr.io/acme/app:2.0.0\n- mirror/nginx@sha256:cafe"
	if res.Output["commitMessage"] != want {
		t.Fatalf("commitMessage %q", res.Output["commitMessage"])
	}
}

func TestOCIPushAndDownload(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	digest := reg.PushImage(t, "team/app", "1.0.0")
	sc := newContext(t, map[string]any{"srcRef": "oci://" + reg.Host() + "/team/app:1.0.0", "destRef": reg.Host() + "/team/app:prod"})
	sc.Egress = allowLoopback(t, egress.Config{})
	res, err := run(t, "oci-push", sc)
	if err != nil {
		t.Fatal(err)
	}
	if res.Output["digest"] != digest.String() || res.Output["tag"] != "prod" {
		t.Fatalf("oci-push outputs %v, want digest %s", res.Output, digest)
	}
	// Annotations change the manifest, so its digest.
	sc.Config = map[string]any{"srcRef": reg.Host() + "/team/app:1.0.0", "destRef": reg.Host() + "/team/app:annotated",
		"annotations": map[string]any{"org.opencontainers.image.source": "https://github.com/acme/app", "index:ignored": "for images"}}
	annotated, err := run(t, "oci-push", sc)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(reg.Host()+"/team/app:annotated", name.Insecure)
	m, err := remote.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(m.Manifest), `"org.opencontainers.image.source":"https://github.com/acme/app"`) || strings.Contains(string(m.Manifest), "ignored") ||
		annotated.Output["digest"] != m.Digest.String() || m.Digest == digest {
		t.Fatalf("annotated manifest %s (digest %s, output %v)", m.Manifest, m.Digest, annotated.Output)
	}
	sc.Config = map[string]any{"imageRef": reg.Host() + "/team/app:prod", "outPath": "layer.tgz"}
	if _, err := run(t, "oci-download", sc); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(filepath.Join(sc.Workspace.Dir.Path(), "layer.tgz")); err != nil || info.Size() == 0 {
		t.Fatalf("downloaded layer: %v", err)
	}
	if _, err := run(t, "oci-download", sc); err == nil {
		t.Fatal("overwrote without allowOverwrite")
	}
}
