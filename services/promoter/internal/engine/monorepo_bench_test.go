package engine

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// Shape of the monorepo benchmark: stages, each with an overlay of
// overlayFiles files of overlayFileBytes (~1 MB), on top of a history of
// monoHistory commits.
const (
	monoStages       = 100
	monoHistory      = 50000
	overlayFiles     = 10
	overlayFileBytes = 100 << 10
	// monoConcurrency is how many promotions run at once, as a promoter
	// replica with CARAVAN_PROMOTION_CONCURRENCY=32 does with 100 requested
	// at once (100 at once starves the in-process NATS server and the CGI
	// git server of the 2 shared cores in the own-repositories baseline).
	monoConcurrency = 32
)

// BenchmarkMonorepo100Stages promotes 100 stages at once (monoConcurrency
// running at a time) into one repository (monoHistory commits, a ~1 MB overlay per stage, each stage's
// git-clone sparse on its overlay as Kargo's monorepo pipelines do) beside,
// in the same run, the same 100 stages each in its own repository (target
// monorepo/own-repos ≥ 0.8) and the monorepo promotions one at a time
// (target monorepo/serial ≥ 4 on 2 cores). Mirrors are warm: each
// repository was promoted into once before the timer. It also times one
// promotion with a full checkout of the monorepo, to show what sparse
// saves.
func BenchmarkMonorepo100Stages(b *testing.B) {
	f := newFixture(b)
	cache := monorepoCache(b)
	f.git.CreateRepo(b, "mono")
	f.git.Run(b, f.git.Path("mono"), "fetch", "--quiet", cache, "+refs/heads/main:refs/heads/main")
	mono := f.git.URL("mono")
	own := make([]string, monoStages)
	for i := range own {
		name := fmt.Sprintf("own-%03d", i)
		f.git.CreateRepo(b, name)
		f.git.Run(b, f.git.Path(name), "fetch", "--quiet", cache, fmt.Sprintf("+refs/heads/stage-%03d:refs/heads/main", i))
		own[i] = f.git.URL(name)
	}
	round := 0
	run := func(url func(i int) string, sparse, concurrent bool) time.Duration {
		round++
		ps := make([]*model.Promotion, monoStages)
		for i := range ps {
			stage := fmt.Sprintf("s%03d", i)
			ps[i] = f.promotion(fmt.Sprintf("%s.%d.f012345", stage, round), []model.PromotionVariable{{Name: "tag", Value: fmt.Sprintf("1.%d.%d", round, i)}}, monoPipeline(url(i), stage, sparse)...)
			ps[i].Spec.Stage = stage
		}
		start := time.Now()
		var wg sync.WaitGroup
		slots := make(chan struct{}, monoConcurrency)
		for _, p := range ps {
			do := func() {
				res, err := f.engine.Run(context.Background(), p, func(context.Context, *model.Promotion) error { return nil })
				if err != nil || res.Phase != model.PromotionPhaseSucceeded {
					b.Errorf("%s: %v %s %s", p.Name, err, res.Phase, res.Message)
				}
			}
			if concurrent {
				slots <- struct{}{}
				wg.Go(func() {
					defer func() { <-slots }()
					do()
				})
			} else {
				do()
			}
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		return time.Since(start)
	}
	monoURL := func(int) string { return mono }
	ownURL := func(i int) string { return own[i] }
	run(monoURL, true, true) // warm the mirrors up: their first fetch is not timed
	run(ownURL, true, true)
	var monoD, ownD, serialD, fullD, sparseD time.Duration
	b.ResetTimer()
	for b.Loop() {
		monoD += run(monoURL, true, true)
		ownD += run(ownURL, true, true)
		serialD += run(monoURL, true, false)
		round++
		fullD += promoteStage(b, f, mono, 0, false, round)
		sparseD += promoteStage(b, f, mono, 0, true, round+1)
		round++
	}
	n := float64(b.N * monoStages)
	monoRate, ownRate, serialRate := n/monoD.Seconds(), n/ownD.Seconds(), n/serialD.Seconds()
	b.ReportMetric(monoRate, "monorepo-promotions/s")
	b.ReportMetric(ownRate, "own-repos-promotions/s")
	b.ReportMetric(serialRate, "serial-promotions/s")
	b.ReportMetric(monoRate/ownRate, "monorepo/own-repos")
	b.ReportMetric(monoRate/serialRate, "monorepo/serial")
	b.ReportMetric(float64(fullD.Milliseconds())/float64(b.N), "full-checkout-ms")
	b.ReportMetric(float64(sparseD.Milliseconds())/float64(b.N), "sparse-checkout-ms")
}

// promoteStage runs one promotion of stage i and returns its duration.
func promoteStage(b *testing.B, f *fixture, url string, i int, sparse bool, round int) time.Duration {
	b.Helper()
	stage := fmt.Sprintf("s%03d", i)
	p := f.promotion(fmt.Sprintf("%s.x%d.f012345", stage, round), []model.PromotionVariable{{Name: "tag", Value: fmt.Sprintf("9.%d.0", round)}}, monoPipeline(url, stage, sparse)...)
	p.Spec.Stage = stage
	start := time.Now()
	res, err := f.engine.Run(context.Background(), p, func(context.Context, *model.Promotion) error { return nil })
	if err != nil || res.Phase != model.PromotionPhaseSucceeded {
		b.Fatalf("%s: %v %s %s", p.Name, err, res.Phase, res.Message)
	}
	return time.Since(start)
}

// monoPipeline updates the image tag of one stage's overlay.
func monoPipeline(repoURL, stage string, sparse bool) []model.PromotionStep {
	co := map[string]any{"branch": "main", "path": "./src"}
	if sparse {
		co["sparse"] = []any{"env/" + stage}
	}
	steps := []model.PromotionStep{
		step("git-clone", "clone", map[string]any{"repoURL": repoURL, "checkout": []any{co}}),
		step("kustomize-set-image", "update", map[string]any{"path": "./src/env/" + stage, "images": []any{map[string]any{"image": imageRepo, "tag": "${{ vars.tag }}"}}}),
		step("git-commit", "commit", map[string]any{"path": "./src", "message": "${{ outputs.update.commitMessage }}"}),
		step("git-push", "push", map[string]any{"path": "./src"}),
	}
	// A KV read that times out on the overloaded shared machine is
	// retried, as a pipeline would configure it.
	steps[0].Retry = &model.PromotionStepRetry{ErrorThreshold: 3}
	return steps
}

// monorepoCache builds (once, cached under the system temp dir) a bare
// repository whose main has monoHistory commits and then every stage's
// overlay, and one branch stage-NNN per stage with a short history and
// that stage's overlay only (the repository of its own).
func monorepoCache(b *testing.B) string {
	b.Helper()
	cache := filepath.Join(os.TempDir(), "caravan-bench-cache", fmt.Sprintf("monorepo-%d-%d-%d.git", monoStages, monoHistory, overlayFiles*overlayFileBytes))
	if _, err := os.Stat(filepath.Join(cache, "done")); err == nil {
		return cache
	}
	_ = os.RemoveAll(cache)
	run := func(stdin func(w *bufio.Writer), args ...string) {
		cmd := exec.Command("/usr/bin/git", args...)
		cmd.Dir = cache
		cmd.Env = testenv.GitEnv(b.TempDir())
		in, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		out := &testenv.SyncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		w := bufio.NewWriterSize(in, 1<<20)
		stdin(w)
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		_ = in.Close()
		if err := cmd.Wait(); err != nil {
			b.Fatalf("git %v: %v: %s", args, err, out.String())
		}
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		b.Fatal(err)
	}
	run(func(*bufio.Writer) {}, "init", "--quiet", "--bare", "-b", "main", cache)
	run(func(w *bufio.Writer) {
		mark := 0
		commit := func(ref string, parent int, msg string, files func()) int {
			mark++
			fmt.Fprintf(w, "commit %s\nmark :%d\ncommitter Bench <bench@caravan.invalid> %d +0000\ndata %d\n%s\n", ref, mark, 1_700_000_000+mark, len(msg), msg)
			if parent > 0 {
				fmt.Fprintf(w, "from :%d\n", parent)
			}
			files()
			return mark
		}
		inline := func(path string, data []byte) {
			fmt.Fprintf(w, "M 644 inline %s\ndata %d\n", path, len(data))
			_, _ = w.Write(data)
			_ = w.WriteByte('\n')
		}
		overlay := func(stage int) {
			dir := fmt.Sprintf("env/s%03d/", stage)
			inline(dir+"kustomization.yaml", []byte(kustomization))
			inline(dir+"deployment.yaml", []byte("kind: Deployment\n"))
			for k := range overlayFiles {
				inline(fmt.Sprintf("%sconfig-%02d.yaml", dir, k), overlayFile(stage, k))
			}
		}
		last := 0
		for i := 1; i <= monoHistory; i++ {
			last = commit("refs/heads/main", last, fmt.Sprintf("change %d", i), func() {
				inline(fmt.Sprintf("history/%02d.txt", i%50), fmt.Appendf(nil, "change %d\n", i))
			})
		}
		commit("refs/heads/main", last, "overlays", func() {
			for s := range monoStages {
				overlay(s)
			}
		})
		for s := range monoStages {
			prev := 0
			for i := 1; i <= 100; i++ {
				prev = commit(fmt.Sprintf("refs/heads/stage-%03d", s), prev, fmt.Sprintf("change %d", i), func() {
					inline(fmt.Sprintf("history/%02d.txt", i%50), fmt.Appendf(nil, "change %d of s%03d\n", i, s))
				})
			}
			commit(fmt.Sprintf("refs/heads/stage-%03d", s), prev, "overlay", func() { overlay(s) })
		}
	}, "fast-import", "--quiet")
	if err := os.WriteFile(filepath.Join(cache, "done"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return cache
}

// overlayFile is a generated ConfigMap of about overlayFileBytes, distinct
// per stage and file.
func overlayFile(stage, k int) []byte {
	out := fmt.Appendf(nil, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: s%03d-config-%02d\ndata:\n", stage, k)
	for i := 0; len(out) < overlayFileBytes; i++ {
		sum := sha256.Sum256(fmt.Appendf(nil, "%d/%d/%d", stage, k, i))
		out = fmt.Appendf(out, "  key-%05d: %s\n", i, hex.EncodeToString(sum[:12]))
	}
	return out
}
