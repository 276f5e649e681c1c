package engine

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/caravan-cd/caravan/pkg/model"
)

// TestDryRunDiffIsWhatThePromotionCommits: a dry run stops before
// git-push, pushes nothing and calls no http endpoint; its diff is then
// exactly what the real promotion pushes.
func TestDryRunDiffIsWhatThePromotionCommits(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := f.git.CreateRepo(t, "values")
	base := f.git.Seed(t, "values", map[string]string{
		"charts/guestbook/values-dev.yaml": "# dev values\nreplicaCount: 1\nimage:\n  repository: ghcr.io/acme/guestbook\n  tag: \"1.3.0\" # pinned\n",
		"README.md":                        "guestbook\n",
	}, "init")
	var calls atomic.Int32
	hook := httpServer(t, func() (int, string) { calls.Add(1); return 200, `{}` })
	steps := []model.PromotionStep{
		step("git-clone", "clone", map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./src"}}}),
		step("yaml-update", "values", map[string]any{
			"path":    "./src/charts/guestbook/values-${{ ctx.stage }}.yaml",
			"updates": []any{map[string]any{"key": "image.tag", "value": "${{ quote(imageFrom(vars.image).tag) }}"}},
		}),
		step("git-commit", "commit", map[string]any{"path": "./src", "message": "${{ outputs['values'].commitMessage }}"}),
		step("git-push", "push", map[string]any{"path": "./src"}),
		step("http", "notify", map[string]any{"url": hook, "method": "POST"}),
	}
	p := f.promotion("dev.dry.f012345", imageVars, steps...)
	p.Status = model.PromotionStatus{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	dry, err := f.engine.DryRun(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if dry.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s", dry.Phase, dry.Message)
	}
	if dry.StoppedAt == nil || dry.StoppedAt.Alias != "push" || dry.StoppedAt.Index != 3 {
		t.Fatalf("stoppedAt %+v, want the git-push step", dry.StoppedAt)
	}
	var got []model.PromotionStepStatus
	for _, md := range dry.Steps {
		got = append(got, md.Status)
	}
	want := []model.PromotionStepStatus{model.PromotionStepStatusSucceeded, model.PromotionStepStatusSucceeded, model.PromotionStepStatusSucceeded, "", ""}
	if strings.Join(toStrings(got), ",") != strings.Join(toStrings(want), ",") {
		t.Fatalf("step statuses %v, want %v", got, want)
	}
	if c, _ := dry.Outputs["commit"].(map[string]any); c == nil || c["commit"] == "" {
		t.Errorf("outputs %v: want git-commit's commit", dry.Outputs)
	}
	if f.git.Head(t, "values") != base {
		t.Fatal("the dry run moved the remote branch")
	}
	if calls.Load() != 0 {
		t.Fatal("the dry run called the http step's endpoint")
	}
	if p.Status.Phase != "" || p.Status.State != nil || p.Status.StepExecutionMetadata != nil {
		t.Fatalf("the dry run changed the promotion's status: %+v", p.Status)
	}
	if len(dry.Diffs) != 1 {
		t.Fatalf("diffs %+v, want one", dry.Diffs)
	}
	d := dry.Diffs[0]
	if d.RepoURL != url || d.Path != "src" || d.Branch != "main" || d.Base != base || d.Uncommitted {
		t.Fatalf("diff %+v", d)
	}
	if len(d.Files) != 1 || d.Files[0].Path != "charts/guestbook/values-dev.yaml" || d.Files[0].Additions != 1 || d.Files[0].Deletions != 1 {
		t.Fatalf("files %+v", d.Files)
	}
	if !strings.Contains(d.Patch, "-  tag: \"1.3.0\" # pinned\n+  tag: \"1.4.0\" # pinned\n") {
		t.Fatalf("patch:\n%s", d.Patch)
	}

	// The real promotion pushes exactly that diff.
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("real promotion: %s %s", res.Phase, res.Message)
	}
	head := f.git.Head(t, "values")
	repo, err := git.PlainOpen(f.git.Path("values"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := repo.CommitObject(plumbing.NewHash(head))
	if err != nil {
		t.Fatal(err)
	}
	parent, err := c.Parent(0)
	if err != nil || parent.Hash.String() != base {
		t.Fatalf("pushed commit's parent %v (%v), want %s", parent, err, base)
	}
	patch, err := parent.Patch(c)
	if err != nil {
		t.Fatal(err)
	}
	if patch.String() != d.Patch {
		t.Fatalf("pushed diff:\n%s\ndry-run diff:\n%s", patch.String(), d.Patch)
	}
	if calls.Load() != 1 {
		t.Fatalf("the real promotion called the endpoint %d times, want 1", calls.Load())
	}
}

func toStrings(s []model.PromotionStepStatus) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return out
}

// TestDryRunRedactsSecrets: a secret an expression writes into the work
// tree and the outputs shows as *** in the dry run's diff and outputs.
func TestDryRunRedactsSecrets(t *testing.T) {
	t.Parallel()
	const value = "tok-91c2e7d0/Xy+"
	f := newFixture(t)
	f.put(t, &model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "token", Namespace: project},
		StringData: map[string]string{"value": value},
	})
	url := f.git.CreateRepo(t, "cfg")
	f.git.Seed(t, "cfg", map[string]string{"config.yaml": "token: none\n"}, "init")
	p := f.promotion("dev.dry2.f012345", nil,
		step("git-clone", "clone", map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./src"}}}),
		step("yaml-update", "cfg", map[string]any{"path": "./src/config.yaml", "updates": []any{map[string]any{"key": "token", "value": "${{ secret('token').value }}"}}}),
		step("compose-output", "leak", map[string]any{"t": "${{ secret('token').value }}"}),
		step("git-commit", "", map[string]any{"path": "./src", "message": "set token"}),
		step("fail", "after", map[string]any{"message": "token is ${{ secret('token').value }}"}),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dry, err := f.engine.DryRun(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if dry.StoppedAt != nil || dry.Phase != model.PromotionPhaseFailed {
		t.Fatalf("phase %s, stoppedAt %+v: want Failed at the fail step, not stopped", dry.Phase, dry.StoppedAt)
	}
	if len(dry.Diffs) != 1 || !strings.Contains(dry.Diffs[0].Patch, "+token: ***") {
		t.Fatalf("diffs %+v, want the token redacted", dry.Diffs)
	}
	if out := dry.Outputs["leak"].(map[string]any); out["t"] != "***" {
		t.Fatalf("outputs %v", dry.Outputs)
	}
	for where, text := range map[string]string{"patch": dry.Diffs[0].Patch, "message": dry.Message, "step message": dry.Steps[4].Message} {
		if strings.Contains(text, value) {
			t.Errorf("the secret reached the %s: %q", where, text)
		}
	}
}
