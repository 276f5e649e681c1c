package engine

import (
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

// A promotion commits as the ClusterConfig's gitClient (as Kargo) and
// pushes its generated branch under the ProjectConfig's branchPrefix (a
// Caravan addition); without either, as Caravan (see steps' tests).
func TestGitIdentityFromConfigs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := f.git.CreateRepo(t, "app")
	f.git.Seed(t, "app", map[string]string{"a.txt": "a"}, "init")
	f.put(t, &model.ClusterConfig{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindClusterConfig},
		ObjectMeta: model.ObjectMeta{Name: model.ClusterConfigName},
		Spec:       model.ClusterConfigSpec{GitClient: &model.GitClientConfig{Name: "Ops Bot", Email: "ops@acme.example"}},
	})
	f.put(t, &model.ProjectConfig{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindProjectConfig},
		ObjectMeta: model.ObjectMeta{Name: project, Namespace: project},
		Spec:       model.ProjectConfigSpec{GitClient: &model.ProjectGitClient{BranchPrefix: "deploy/"}},
	})
	p := f.promotion("dev.07.f012345", nil,
		step("git-clone", "clone", map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./src"}}}),
		step("file-write", "", map[string]any{"path": "./src/a.txt", "contents": "b", "overwrite": true}),
		step("git-commit", "", map[string]any{"path": "./src", "message": "b"}),
		step("git-push", "push", map[string]any{"path": "./src", "generateTargetBranch": true}),
	)
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s (%v)", res.Phase, res.Message, statuses(p))
	}
	branch := "deploy/" + p.Name
	if got := p.Status.State["push"].(map[string]any)["branch"]; got != branch {
		t.Fatalf("pushed to %v, want %s", got, branch)
	}
	if got := f.git.Run(t, f.git.Path("app"), "log", "-1", "--format=%an <%ae>", branch); got != "Ops Bot <ops@acme.example>" {
		t.Fatalf("author %q, want the ClusterConfig's gitClient", got)
	}
}
