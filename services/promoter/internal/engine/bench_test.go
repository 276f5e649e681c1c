package engine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// benchPipeline is the promotion the benchmarks time: kustomize-set-image
// with a new tag, git-commit, git-push.
func benchPipeline(repoURL string) []model.PromotionStep {
	return []model.PromotionStep{
		step("git-clone", "clone", map[string]any{"repoURL": repoURL, "checkout": []any{map[string]any{"branch": "main", "path": "./src"}}}),
		step("kustomize-set-image", "update", map[string]any{"path": "./src/env/dev", "images": []any{map[string]any{"image": imageRepo, "tag": "${{ vars.tag }}"}}}),
		step("git-commit", "commit", map[string]any{"path": "./src", "message": "${{ outputs.update.commitMessage }}"}),
		step("git-push", "push", map[string]any{"path": "./src"}),
	}
}

// promoteOnce runs the bench pipeline with tag and fails b if it does not
// succeed.
func promoteOnce(b *testing.B, f *fixture, repoURL, name, tag string) time.Duration {
	b.Helper()
	p := f.promotion(name, []model.PromotionVariable{{Name: "tag", Value: tag}}, benchPipeline(repoURL)...)
	start := time.Now()
	res, err := f.engine.Run(context.Background(), p, func(context.Context, *model.Promotion) error { return nil })
	d := time.Since(start)
	if err != nil || res.Phase != model.PromotionPhaseSucceeded {
		b.Fatalf("promotion %s: %v %s %s", name, err, res.Phase, res.Message)
	}
	return d
}

// cliPromote does what the pipeline does with the git CLI: a full clone,
// the edit, a commit and a push.
func cliPromote(b *testing.B, g *testenv.Git, repo, tag string) time.Duration {
	b.Helper()
	home := b.TempDir()
	work := filepath.Join(b.TempDir(), "w")
	start := time.Now()
	git := func(dir string, args ...string) {
		cmd := exec.Command("/usr/bin/git", args...)
		cmd.Dir = dir
		cmd.Env = testenv.GitEnv(home)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	git("", "clone", "--quiet", g.AuthURL(repo), work)
	setTag(b, filepath.Join(work, "env", "dev", "kustomization.yaml"), tag)
	git(work, "commit", "--quiet", "-am", "Updated env/dev to use new image")
	git(work, "push", "--quiet", "origin", "main")
	return time.Since(start)
}

// cliWarm is a clone of a repository the git CLI keeps between
// promotions, as a CI job with a cached checkout does.
type cliWarm struct {
	dir, home string
}

func newCLIWarm(b *testing.B, g *testenv.Git, repo string) *cliWarm {
	b.Helper()
	w := &cliWarm{dir: filepath.Join(b.TempDir(), "w"), home: b.TempDir()}
	w.git(b, "", "clone", "--quiet", g.AuthURL(repo), w.dir)
	return w
}

func (w *cliWarm) git(b *testing.B, dir string, args ...string) {
	b.Helper()
	cmd := exec.Command("/usr/bin/git", args...)
	cmd.Dir = dir
	cmd.Env = testenv.GitEnv(w.home)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("git %v: %v: %s", args, err, out)
	}
}

// promote fetches, moves to the remote main, edits, commits and pushes.
func (w *cliWarm) promote(b *testing.B, tag string) time.Duration {
	b.Helper()
	start := time.Now()
	w.git(b, w.dir, "fetch", "--quiet", "origin")
	w.git(b, w.dir, "reset", "--quiet", "--hard", "origin/main")
	setTag(b, filepath.Join(w.dir, "env", "dev", "kustomization.yaml"), tag)
	w.git(b, w.dir, "commit", "--quiet", "-am", "Updated env/dev to use new image")
	w.git(b, w.dir, "push", "--quiet", "origin", "main")
	return time.Since(start)
}

func setTag(b *testing.B, file, tag string) {
	b.Helper()
	content, err := os.ReadFile(file)
	if err != nil {
		b.Fatal(err)
	}
	lines := strings.Split(string(content), "\n")
	for i, l := range lines {
		if strings.Contains(l, "newTag:") {
			lines[i] = "    newTag: " + tag
		}
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPromotionVsGitCLI times one warm promotion (kustomize-set-image
// + commit + push, the mirror fetched before) beside the git CLI in the
// same run, each on a repository of its own with the same 100-commit
// history, so that between two promotions only the promoter itself moved
// the branch (the steady state of a branch only Caravan writes):
//
//   - engine: the promoter, warm (its fetch finds the branch where its
//     last push left it);
//   - gitcli-warm: the git CLI on a clone it keeps (fetch, reset, edit,
//     commit, push; target engine/gitcli-warm ≤ 1.0);
//   - gitcli-fresh: the git CLI on a fresh clone each time, as Kargo does
//     (target engine/gitcli-fresh ≤ 0.3);
//   - engine-moved (extra, labelled): the promoter warm on a repository
//     another client pushed to since its last promotion (that push is not
//     timed), so its fetch downloads new objects too.
func BenchmarkPromotionVsGitCLI(b *testing.B) {
	f := newFixture(b)
	repos := map[string]string{}
	for _, name := range []string{"engine", "warm", "fresh", "moved"} {
		repos[name] = f.git.CreateRepo(b, name)
		seedHistory(b, f.git, name, 100)
	}
	// The mirrors' first fetch is not what we time.
	promoteOnce(b, f, repos["engine"], "warm.0.f012345", "0.0.1")
	promoteOnce(b, f, repos["moved"], "warm.1.f012345", "0.0.1")
	warm := newCLIWarm(b, f.git, "warm")
	var engine, cliWarm, cliFresh, moved time.Duration
	var engineReqs, warmReqs, freshReqs, movedReqs int
	counted := func(reqs *int, promote func() time.Duration) time.Duration {
		before := f.git.Requests()
		d := promote()
		*reqs += f.git.Requests() - before
		return d
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		cliPromote(b, f.git, "moved", fmt.Sprintf("9.0.%d", i)) // another writer
		b.StartTimer()
		cols := []func(){
			func() {
				engine += counted(&engineReqs, func() time.Duration {
					return promoteOnce(b, f, repos["engine"], fmt.Sprintf("dev.%d.f012345", i), fmt.Sprintf("1.0.%d", i))
				})
			},
			func() {
				cliWarm += counted(&warmReqs, func() time.Duration { return warm.promote(b, fmt.Sprintf("2.0.%d", i)) })
			},
			func() {
				cliFresh += counted(&freshReqs, func() time.Duration { return cliPromote(b, f.git, "fresh", fmt.Sprintf("3.0.%d", i)) })
			},
			func() {
				moved += counted(&movedReqs, func() time.Duration {
					return promoteOnce(b, f, repos["moved"], fmt.Sprintf("moved.%d.f012345", i), fmt.Sprintf("4.0.%d", i))
				})
			},
		}
		for j := range cols { // each goes first in turn
			cols[(i+j)%len(cols)]()
		}
	}
	n := float64(b.N)
	// Requests to the git server per promotion: each is a git process
	// (or two) started by the server, most of the time of every column.
	b.ReportMetric(float64(engineReqs)/n, "engine-reqs/op")
	b.ReportMetric(float64(warmReqs)/n, "gitcli-warm-reqs/op")
	b.ReportMetric(float64(freshReqs)/n, "gitcli-fresh-reqs/op")
	b.ReportMetric(float64(movedReqs)/n, "engine-moved-reqs/op")
	b.ReportMetric(float64(engine.Milliseconds())/n, "engine-ms/op")
	b.ReportMetric(float64(cliWarm.Milliseconds())/n, "gitcli-warm-ms/op")
	b.ReportMetric(float64(cliFresh.Milliseconds())/n, "gitcli-fresh-ms/op")
	b.ReportMetric(float64(moved.Milliseconds())/n, "engine-moved-ms/op")
	b.ReportMetric(float64(engine)/float64(cliWarm), "engine/gitcli-warm")
	b.ReportMetric(float64(engine)/float64(cliFresh), "engine/gitcli-fresh")
	b.ReportMetric(float64(moved)/float64(cliWarm), "engine-moved/gitcli-warm")
	b.ReportMetric(float64(moved)/float64(cliFresh), "engine-moved/gitcli-fresh")
}

// BenchmarkPromotionHistory times the same promotion on a repository with
// 50,000 commits and on one with 100, in the same run. Target: ratio ≤ 2.
func BenchmarkPromotionHistory(b *testing.B) {
	f := newFixture(b)
	small := f.git.CreateRepo(b, "small")
	seedHistory(b, f.git, "small", 100)
	big := f.git.CreateRepo(b, "big")
	seedHistory(b, f.git, "big", 50000)
	promoteOnce(b, f, small, "warm.0.f012345", "0.0.1")
	promoteOnce(b, f, big, "warm.1.f012345", "0.0.1")
	var smallD, bigD time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		smallD += promoteOnce(b, f, small, fmt.Sprintf("small.%d.f012345", i), fmt.Sprintf("1.0.%d", i))
		bigD += promoteOnce(b, f, big, fmt.Sprintf("big.%d.f012345", i), fmt.Sprintf("1.0.%d", i))
	}
	b.ReportMetric(float64(smallD.Milliseconds())/float64(b.N), "100commits-ms/op")
	b.ReportMetric(float64(bigD.Milliseconds())/float64(b.N), "50kcommits-ms/op")
	b.ReportMetric(float64(bigD)/float64(smallD), "50k/100")
}

// seedHistory fills repo (empty, on the server) with n commits built by
// git fast-import, the last one adding a kustomize layout. The history is
// built once per size and cached under the system temp dir.
func seedHistory(b *testing.B, g *testenv.Git, repo string, n int) {
	b.Helper()
	cache := filepath.Join(os.TempDir(), "caravan-bench-cache", fmt.Sprintf("history-%d.git", n))
	if _, err := os.Stat(filepath.Join(cache, "done")); err != nil {
		_ = os.RemoveAll(cache)
		g.Run(b, "", "init", "--quiet", "--bare", "-b", "main", cache)
		var stream bytes.Buffer
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&stream, "commit refs/heads/main\nmark :%d\ncommitter Bench <bench@caravan.invalid> %d +0000\n", i, 1_700_000_000+i)
			msg := fmt.Sprintf("change %d", i)
			fmt.Fprintf(&stream, "data %d\n%s\n", len(msg), msg)
			if i > 1 {
				fmt.Fprintf(&stream, "from :%d\n", i-1)
			}
			body := fmt.Sprintf("change %d\n", i)
			fmt.Fprintf(&stream, "M 644 inline history/%02d.txt\ndata %d\n%s\n", i%50, len(body), body)
			if i == n {
				fmt.Fprintf(&stream, "M 644 inline env/dev/kustomization.yaml\ndata %d\n%s\n", len(kustomization), kustomization)
				dep := "kind: Deployment\n"
				fmt.Fprintf(&stream, "M 644 inline env/dev/deployment.yaml\ndata %d\n%s\n", len(dep), dep)
			}
		}
		cmd := exec.Command("/usr/bin/git", "fast-import", "--quiet")
		cmd.Dir = cache
		cmd.Env = testenv.GitEnv(b.TempDir())
		cmd.Stdin = &stream
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("fast-import: %v: %s", err, out)
		}
		if err := os.WriteFile(filepath.Join(cache, "done"), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	g.Run(b, g.Path(repo), "fetch", "--quiet", cache, "+refs/heads/main:refs/heads/main")
}
