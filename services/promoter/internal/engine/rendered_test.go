package engine

import (
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: guestbook
spec:
  template:
    spec:
      containers:
        - name: app
          image: ghcr.io/acme/guestbook:1.0.0
`

// TestRenderedBranches is Kargo's rendered-branch pattern: main holds the
// kustomize sources, each stage's manifests are rendered into its own
// env/<stage> branch (created by the first promotion).
func TestRenderedBranches(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := f.git.CreateRepo(t, "gitops")
	f.git.Seed(t, "gitops", map[string]string{
		"base/kustomization.yaml":    "resources:\n  - deployment.yaml\n",
		"base/deployment.yaml":       deployment,
		"env/dev/kustomization.yaml": "resources:\n  - ../../base\n",
	}, "init")
	pipeline := []model.PromotionStep{
		step("git-clone", "", map[string]any{"repoURL": url, "checkout": []any{
			map[string]any{"branch": "main", "path": "./src"},
			map[string]any{"branch": "env/${{ ctx.stage }}", "create": true, "path": "./out"},
		}}),
		step("git-clear", "", map[string]any{"path": "./out"}),
		step("kustomize-set-image", "update", map[string]any{"path": "./src/env/${{ ctx.stage }}", "images": []any{map[string]any{"image": imageRepo}}}),
		step("kustomize-build", "", map[string]any{"path": "./src/env/${{ ctx.stage }}", "outPath": "./out/manifests.yaml"}),
		step("git-commit", "commit", map[string]any{"path": "./out", "message": "${{ outputs.update.commitMessage }}"}),
		step("git-push", "push", map[string]any{"path": "./out"}),
	}
	for i, tag := range []string{"1.4.0", "1.5.0"} {
		p := f.promotion("dev.r"+tag, imageVars, pipeline...)
		if i == 1 {
			fr := *f.freight
			fr.Name, fr.Alias = "f99", ""
			fr.Images = []model.Image{{RepoURL: imageRepo, Tag: tag}}
			f.put(t, &fr)
			p.Spec.Freight = fr.Name
		}
		res, _ := runPromotion(t, f.engine, p)
		if res.Phase != model.PromotionPhaseSucceeded {
			t.Fatalf("promotion %d: %s %s (%v)", i, res.Phase, res.Message, statuses(p))
		}
		got := f.git.Show(t, "gitops", "env/dev", "manifests.yaml")
		if !strings.Contains(got, "image: ghcr.io/acme/guestbook:"+tag) || !strings.Contains(got, "kind: Deployment") {
			t.Fatalf("promotion %d rendered:\n%s", i, got)
		}
		if p.Status.State["push"].(map[string]any)["branch"] != "env/dev" {
			t.Fatalf("push output %v", p.Status.State["push"])
		}
	}
	if n := f.git.Run(t, f.git.Path("gitops"), "rev-list", "--count", "env/dev"); n != "2" {
		t.Fatalf("env/dev has %s commits, want 2", n)
	}
	if files := f.git.Run(t, f.git.Path("gitops"), "ls-tree", "--name-only", "env/dev"); files != "manifests.yaml" {
		t.Fatalf("env/dev holds %q, want only the rendered manifests", files)
	}
	if got := f.git.Show(t, "gitops", "main", "env/dev/kustomization.yaml"); strings.Contains(got, "1.4.0") {
		t.Fatal("main was changed")
	}
}
