//go:build e2e

package promoter

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// Twenty, then a hundred stages of one project, each changing its own
// overlay on main of one repository, promoted at once by the
// caravan-promoter binary: every promotion succeeds, one commit each.
func TestE2EConcurrentPromotionsOneRepository(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "caravan-promoter")
	build := exec.Command("go", "build", "-o", bin, "./cmd/caravan-promoter")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build promoter: %v", err)
	}
	for _, n := range []int{20, 100} {
		t.Run(fmt.Sprintf("stages=%d", n), func(t *testing.T) {
			concurrentPromotionsOneRepository(t, bin, n)
		})
	}
}

func concurrentPromotionsOneRepository(t *testing.T, bin string, n int) {
	g := testenv.GitServer(t, testenv.WithBasicAuth("bot", "git-pw-4711"))
	url := g.CreateRepo(t, "mono")
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("env/s%02d/kustomization.yaml", i)] = "images:\n  - name: example.com/app\n    newTag: 1.0.0\n"
	}
	g.Seed(t, "mono", files, "init")

	h := newHarness(t)
	h.put(&model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "git", Namespace: project, Labels: map[string]string{model.LabelCredType: model.CredTypeGit}},
		StringData: map[string]string{"repoURL": url, "username": "bot", "password": "git-pw-4711"},
	})
	stages := make([]*model.Stage, n)
	for i := range n {
		stages[i] = h.stage(fmt.Sprintf("s%02d", i), func(s *model.Stage) {
			s.Spec.PromotionTemplate.Spec.Steps = []model.PromotionStep{
				{Uses: "git-clone", As: "clone", Config: map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./src"}}}},
				{Uses: "kustomize-set-image", As: "update", Config: map[string]any{"path": "./src/env/${{ ctx.stage }}", "images": []any{map[string]any{"image": "example.com/app"}}}},
				{Uses: "git-commit", Config: map[string]any{"path": "./src", "message": "${{ outputs.update.commitMessage }}"}},
				{Uses: "git-push", Config: map[string]any{"path": "./src"}},
			}
		})
	}
	f := h.freight("2.0.0", time.Now())

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"CARAVAN_NATS_URL="+h.srv.URL(),
		// The harness's data dir holds the key its Secrets were sealed with.
		"CARAVAN_DATA_DIR="+h.common.DataDir,
		"CARAVAN_REPLICA_ID=a",
		fmt.Sprintf("CARAVAN_PROMOTION_CONCURRENCY=%d", n),
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	})
	eventually(t, 60*time.Second, func() bool {
		_, err := h.env.JS.Consumer(t.Context(), events.StreamEvents, events.PromoterPromotionRequested.Durable)
		return err == nil
	}, func() string { return "promoter consumer declared" })

	ps := make([]*model.Promotion, n)
	for i, s := range stages {
		ps[i] = h.promote(s, f, "alice")
	}
	for _, p := range ps {
		var got model.Promotion
		eventually(t, 5*time.Minute, func() bool {
			got = h.promotion(p.Name)
			return got.Status.Phase == model.PromotionPhaseSucceeded || got.Status.Phase == model.PromotionPhaseErrored || got.Status.Phase == model.PromotionPhaseFailed
		}, func() string { return "promotion " + p.Name + " never ended" })
		if got.Status.Phase != model.PromotionPhaseSucceeded {
			t.Errorf("%s: %s %s", p.Spec.Stage, got.Status.Phase, got.Status.Message)
		}
	}
	if got := g.Run(t, g.Path("mono"), "rev-list", "--count", "main"); got != fmt.Sprint(n+1) {
		t.Fatalf("main has %s commits, want %d", got, n+1)
	}
	// One commit per promotion: each commit after the first changes one
	// stage's file, and no two change the same.
	changed := strings.Fields(g.Run(t, g.Path("mono"), "log", "--format=", "--name-only", "main~"+fmt.Sprint(n)+"..main"))
	seen := map[string]bool{}
	for _, f := range changed {
		if seen[f] {
			t.Errorf("%s changed by two commits", f)
		}
		seen[f] = true
	}
	if len(changed) != n {
		t.Errorf("the %d promotion commits change %d files, want %d: %v", n, len(changed), n, changed)
	}
	for i := range n {
		if got := g.Show(t, "mono", "main", fmt.Sprintf("env/s%02d/kustomization.yaml", i)); !strings.Contains(got, "newTag: 2.0.0") {
			t.Errorf("s%02d:\n%s", i, got)
		}
	}
}
