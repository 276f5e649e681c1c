package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Twenty stages of one project, each changing its own overlay of one
// repository's main branch, promoted at once: every promotion succeeds
// with exactly one commit of its own.
func TestConcurrentPromotionsIntoOneRepository(t *testing.T) {
	t.Parallel()
	promoteAtOnce(t, 20)
}

// promoteAtOnce runs n promotions of n stages into one repository at once
// over real git HTTP and checks that each landed as one commit.
func promoteAtOnce(t *testing.T, n int) {
	f := newFixture(t)
	url := f.git.CreateRepo(t, "mono")
	files := map[string]string{}
	for i := range n {
		dir := fmt.Sprintf("env/s%03d/", i)
		files[dir+"kustomization.yaml"] = kustomization
		files[dir+"deployment.yaml"] = "kind: Deployment\n"
	}
	f.git.Seed(t, "mono", files, "init")
	ps := make([]*model.Promotion, n)
	results := make([]Result, n)
	errs := make([]error, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		p := f.promotion(fmt.Sprintf("s%03d.01.f012345", i), imageVars, imagePipeline(url)...)
		p.Spec.Stage = fmt.Sprintf("s%03d", i)
		ps[i] = p
		wg.Go(func() {
			results[i], errs[i] = f.engine.Run(ctx, p, func(context.Context, *model.Promotion) error { return nil })
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, p := range ps {
		if errs[i] != nil || results[i].Phase != model.PromotionPhaseSucceeded {
			t.Errorf("%s: %v %s %s", p.Spec.Stage, errs[i], results[i].Phase, results[i].Message)
			continue
		}
		c, _ := p.Status.State["push"].(map[string]any)["commit"].(string)
		if seen[c] {
			t.Errorf("%s: commit %s reported by two promotions", p.Spec.Stage, c)
		}
		seen[c] = true
	}
	mono := f.git.Path("mono")
	count, _ := strconv.Atoi(f.git.Run(t, mono, "rev-list", "--count", "main"))
	if count != n+1 {
		t.Fatalf("main has %d commits, want %d: one per promotion on top of the first", count, n+1)
	}
	if merges := f.git.Run(t, mono, "rev-list", "--merges", "--count", "main"); merges != "0" {
		t.Fatalf("main has %s merge commits", merges)
	}
	for i := range n {
		got := f.git.Show(t, "mono", "main", fmt.Sprintf("env/s%03d/kustomization.yaml", i))
		if !strings.Contains(got, "newTag: 1.4.0") {
			t.Errorf("s%03d's change is not on main:\n%s", i, got)
		}
		// Each commit changes its own stage's files only.
		changed := f.git.Run(t, mono, "log", "--format=", "--name-only", "--grep", fmt.Sprintf("env/s%03d ", i), "main")
		if want := fmt.Sprintf("env/s%03d/kustomization.yaml", i); changed != want {
			t.Errorf("s%03d's commit changed %q, want %q", i, changed, want)
		}
	}
}
