package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

// examplesDir is the repository's examples folder.
const examplesDir = "../../../../examples"

// examples are the pipelines under examples/ (the demo has placeholders
// and is tested by the demo package) with their project and stages; each
// keeps its manifests in pipeline.yaml and its deployment repository in
// repo/ (`caravan demo example` runs it offline, see run_e2e_test.go).
var examples = []struct {
	dir     string
	project string
	stages  []string
}{
	{"kustomize", "kustomize-example", []string{"dev", "staging", "prod"}},
	{"helm", "helm-example", []string{"test-1", "prod"}},
	{"fan-out", "fan-out-example", []string{"test", "uat-eu", "uat-us", "prod"}},
}

// TestExamplesDecodeAndValidate checks each example with the strict
// decoder and the validator, as the server would.
func TestExamplesDecodeAndValidate(t *testing.T) {
	t.Parallel()
	for _, ex := range examples {
		t.Run(ex.dir, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(examplesDir, ex.dir)
			if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
				t.Errorf("no README: %v", err)
			}
			a := &app{streams: streams{getenv: func(string) string { return "" }}}
			// The manifests; repo/ holds the deployment repository.
			ms, err := a.readManifests([]string{filepath.Join(dir, "pipeline.yaml")})
			if err != nil {
				t.Fatal(err)
			}
			var all []model.Document
			for _, m := range ms {
				dec, err := model.Decode(m.body)
				if err != nil {
					t.Fatalf("%s: %v", m.name, err)
				}
				if len(dec.Warnings) > 0 {
					t.Errorf("%s: warnings %v", m.name, dec.Warnings)
				}
				all = append(all, dec.Documents...)
			}
			if issues := model.Validate(all, nil); len(issues) > 0 {
				t.Fatalf("validate: %v", issues)
			}
			var stages []string
			for _, d := range all {
				if d.Object.GetTypeMeta().Kind == model.KindStage {
					stages = append(stages, d.Object.GetObjectMeta().Name)
				}
				if p := model.ProjectName(d.Object); p != ex.project {
					t.Errorf("%s/%s is in project %q, want %q", d.Object.GetTypeMeta().Kind, d.Object.GetObjectMeta().Name, p, ex.project)
				}
			}
			if strings.Join(stages, ",") != strings.Join(ex.stages, ",") {
				t.Errorf("stages %v, want %v", stages, ex.stages)
			}
		})
	}
}

// TestExamplesApply applies every example to the real server with the CLI,
// reads the stages back, and deletes them.
func TestExamplesApply(t *testing.T) {
	t.Parallel()
	for _, ex := range examples {
		dir := filepath.Join(examplesDir, ex.dir, "pipeline.yaml")
		r := must(t, run(t, "", nil, "apply", "-f", dir))
		if !strings.Contains(r.stdout, "project/"+ex.project+" created") {
			t.Errorf("apply %s:\n%s", ex.dir, r.stdout)
		}
		r = must(t, run(t, "", nil, "get", "stages", "-p", ex.project, "-o", "wide"))
		for _, s := range ex.stages {
			if !strings.Contains(r.stdout, "\n"+s+" ") {
				t.Errorf("get stages -p %s lacks %s:\n%s", ex.project, s, r.stdout)
			}
		}
		must(t, run(t, "", nil, "delete", "-f", dir))
	}
}
