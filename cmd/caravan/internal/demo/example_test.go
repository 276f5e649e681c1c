package demo

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/model"
)

// examplesRoot is the repository's examples folder.
const examplesRoot = "../../../../examples"

var testEndpoints = Endpoints{Registry: "127.0.0.1:4280", Git: "http://127.0.0.1:4281", API: "http://127.0.0.1:8080"}

// TestPlanExamples plans every example against the demo: every URL it
// names (images, charts, git repositories, health URLs) points at the
// demo, and the rewritten manifests are valid.
func TestPlanExamples(t *testing.T) {
	t.Parallel()
	names, err := Examples(examplesRoot)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "fan-out,helm,kustomize" {
		t.Fatalf("examples %v", names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(examplesRoot, name)
			o, err := PlanExample(dir, testEndpoints)
			if err != nil {
				t.Fatal(err)
			}
			for _, outside := range []string{"ghcr.io", "github.com", "example.com"} {
				if strings.Contains(string(o.Manifests), outside) {
					t.Errorf("%s is still named:\n%s", outside, o.Manifests)
				}
			}
			dec, err := model.Decode(o.Manifests)
			if err != nil {
				t.Fatal(err)
			}
			if issues := model.Validate(dec.Documents, nil); len(issues) > 0 {
				t.Fatalf("validate: %v", issues)
			}
			if len(o.Seeds) != 1 || o.Seeds[0].From != filepath.Join(dir, "repo") {
				t.Errorf("seeds %+v", o.Seeds)
			}
			if len(o.Artifacts) == 0 || len(o.Warehouses) == 0 || o.Project != name+"-example" {
				t.Errorf("plan %+v", o)
			}
			// Every file the steps read is in the repository.
			readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
			if err != nil || !strings.Contains(string(readme), "caravan demo example "+name) {
				t.Errorf("%s/README.md does not say how to run it offline", name)
			}
		})
	}
}

func TestTagsFor(t *testing.T) {
	t.Parallel()
	for constraint, want := range map[string]string{"": "1.0.0,1.0.1", "^1.0.0": "1.0.0,1.0.1", "^2.0.0": "2.0.0,2.0.1", "^6.0.0": "6.0.0,6.0.1", ">=1.1.0 <2": "1.1.0,1.1.1", "~0.10": "0.10.0,0.10.1"} {
		got, err := tagsFor(constraint)
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("tagsFor(%q) = %v, %v; want %s", constraint, got, err, want)
		}
	}
	if _, err := tagsFor("^999.0.0"); err == nil {
		t.Error("tagsFor(^999.0.0): no error")
	}
}

// TestSetupExample sets the helm example up against a real demo registry
// and git server: the image and chart tags are there, the repository is
// served with the example's files (URLs rewritten), and a restarted demo
// pushes them again.
func TestSetupExample(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("the demo needs the git CLI: install it (apt-get install git)")
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	d, err := Start(ctx, testConfig(), dataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	e, err := ReadEndpoints(Dir(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	o, err := PlanExample(filepath.Join(examplesRoot, "helm"), e)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Setup(ctx, Dir(dataDir), e.Registry); err != nil {
		t.Fatal(err)
	}
	check := func(registry string) {
		t.Helper()
		for _, path := range []string{"stefanprodan/podinfo", "stefanprodan/charts/podinfo"} {
			tags, err := remote.List(mustRepo(t, registry+"/"+path))
			slices.Sort(tags)
			if err != nil || strings.Join(tags, ",") != "6.0.0,6.0.1" {
				t.Errorf("%s: tags %v, %v", path, tags, err)
			}
		}
	}
	check(e.Registry)
	work := t.TempDir()
	g := git{path: "git", home: t.TempDir()}
	if _, err := g.run(ctx, "", "clone", "--quiet", e.Git+"/helm/podinfo-deploy.git", work); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(work, "env", "test-1", "values.yaml"))
	if err != nil || !strings.Contains(string(b), "repository: "+e.Registry+"/stefanprodan/podinfo") {
		t.Errorf("values.yaml: %v\n%s", err, b)
	}
	d.close()

	d2, err := Start(ctx, testConfig(), dataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d2.close()
	e2, err := ReadEndpoints(Dir(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	check(e2.Registry)
}
