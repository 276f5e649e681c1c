package steps

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
)

// gitContext is a step context whose git steps reach git, a real git
// server over HTTP.
func gitContext(t *testing.T) *Context {
	t.Helper()
	sc := newContext(t, nil)
	m, err := gitmirror.NewManager(t.TempDir(), gitmirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sc.Git = m
	sc.Credentials = func(context.Context, string, string) (*gitmirror.Auth, error) { return nil, nil }
	sc.Promotion = "dev.01j2.abc"
	sc.StartedAt = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	return sc
}

// step runs uses with cfg in sc and fails the test on an error.
func step(t *testing.T, sc *Context, uses string, cfg map[string]any) Result {
	t.Helper()
	sc.Config = cfg
	res, err := run(t, uses, sc)
	if err != nil {
		t.Fatalf("%s: %v", uses, err)
	}
	return res
}

func TestGitCloneCommitPush(t *testing.T) {
	t.Parallel()
	git := testenv.GitServer(t)
	url := git.CreateRepo(t, "gitops")
	first := git.Seed(t, "gitops", map[string]string{"charts/app/values.yaml": "tag: 1.0.0\n", "docs/README.md": "docs\n"}, "init")
	sc := gitContext(t)

	// Kargo's common usage: the freight's commit in ./src, the stage's
	// branch, created, in ./out.
	res := step(t, sc, "git-clone", map[string]any{
		"repoURL": url,
		"author":  map[string]any{"name": "Release Bot", "email": "bot@acme.example"},
		"checkout": []any{
			map[string]any{"commit": first, "path": "./src", "as": "source"},
			map[string]any{"branch": "stage/dev", "create": true, "path": "./out"},
		},
	})
	commits := res.Output["commits"].(map[string]any)
	if commits["source"] != first || commits["./out"] != "0000000000000000000000000000000000000000" || len(commits) != 2 {
		t.Fatalf("commits output %v", commits)
	}
	if b, err := os.ReadFile(filepath.Join(sc.Workspace.Dir.Path(), "src/charts/app/values.yaml")); err != nil || string(b) != "tag: 1.0.0\n" {
		t.Fatalf("checked out %q %v", b, err)
	}
	write(t, sc, "out/manifests.yaml", "kind: ConfigMap\n")
	c := step(t, sc, "git-commit", map[string]any{"path": "./out", "message": "render dev"})
	commit := c.Output["commit"].(string)
	p := step(t, sc, "git-push", map[string]any{"path": "./out", "provider": "github"})
	if p.Output["branch"] != "stage/dev" || p.Output["commit"] != commit {
		t.Fatalf("push output %v", p.Output)
	}
	if want := strings.TrimSuffix(url, ".git") + "/commit/" + commit; p.Output["commitURL"] != want {
		t.Errorf("commitURL %v, want %s", p.Output["commitURL"], want)
	}
	if got := git.Run(t, git.Path("gitops"), "log", "-1", "--format=%an <%ae>", "stage/dev"); got != "Release Bot <bot@acme.example>" {
		t.Errorf("pushed commit by %q", got)
	}
	if got := git.Show(t, "gitops", "stage/dev", "manifests.yaml"); got != "kind: ConfigMap" {
		t.Errorf("pushed content %q", got)
	}

	// For a pull request: a branch of the promotion's own.
	write(t, sc, "out/manifests.yaml", "kind: Secret\n")
	step(t, sc, "git-commit", map[string]any{"path": "./out", "message": "again", "author": map[string]any{"name": "Ann", "email": "ann@acme.example"}})
	p = step(t, sc, "git-push", map[string]any{"path": "./out", "generateTargetBranch": true})
	if p.Output["branch"] != "caravan/promotion/dev.01j2.abc" {
		t.Fatalf("generated branch %v", p.Output)
	}
	if _, ok := p.Output["commitURL"]; ok {
		t.Errorf("a commitURL for an unknown provider: %v", p.Output)
	}
	if got := git.Run(t, git.Path("gitops"), "log", "-1", "--format=%an", "caravan/promotion/dev.01j2.abc"); got != "Ann" {
		t.Errorf("git-commit's author %q", got)
	}

	sc.Config = map[string]any{"path": "./out", "targetBranch": "x", "generateTargetBranch": true}
	if _, err := run(t, "git-push", sc); err == nil || !IsTerminal(err) {
		t.Errorf("targetBranch with generateTargetBranch: %v", err)
	}

	// git-clear empties the work tree, keeping the repository.
	step(t, sc, "git-clear", map[string]any{"path": "./src"})
	entries, _ := os.ReadDir(filepath.Join(sc.Workspace.Dir.Path(), "src"))
	if len(entries) != 0 {
		t.Errorf("git-clear left %v", entries)
	}
}

func TestGitTagAndPushTag(t *testing.T) {
	t.Parallel()
	git := testenv.GitServer(t)
	url := git.CreateRepo(t, "app")
	head := git.Seed(t, "app", map[string]string{"a.txt": "a"}, "init")
	git.Tag(t, "app", "v0.9.0", head)
	sc := gitContext(t)
	step(t, sc, "git-clone", map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./out"}}})

	sc.Config = map[string]any{"path": "./out", "tag": "v1.0.0"}
	if _, err := run(t, "git-tag", sc); err == nil || !strings.Contains(err.Error(), "message: is required") {
		t.Fatalf("a tag without message: %v", err)
	}
	res := step(t, sc, "git-tag", map[string]any{"path": "./out", "tag": "v1.0.0", "message": "Release 1.0.0"})
	if res.Output["tag"] != "v1.0.0" || res.Output["commit"] != head {
		t.Fatalf("git-tag output %v", res.Output)
	}
	// The tag stays in the work tree until git-push pushes it.
	if _, err := gitTry(git, "app", "rev-parse", "--verify", "--quiet", "refs/tags/v1.0.0"); err == nil {
		t.Fatal("git-tag pushed the tag")
	}
	step(t, sc, "git-push", map[string]any{"path": "./out", "tag": "v1.0.0"})
	if got := git.Run(t, git.Path("app"), "cat-file", "-p", "v1.0.0"); !strings.Contains(got, "Release 1.0.0") || !strings.Contains(got, "tagger Caravan <no-reply@caravan.invalid>") {
		t.Fatalf("pushed tag:\n%s", got)
	}
	// A tag the remote has already.
	sc.Config = map[string]any{"path": "./out", "tag": "v0.9.0", "message": "again"}
	if _, err := run(t, "git-tag", sc); err == nil || !strings.Contains(err.Error(), "tag exists") {
		t.Fatalf("an existing tag: %v", err)
	}
	sc.Config = map[string]any{"path": "./out", "tag": "v1.0.0", "force": true}
	if _, err := run(t, "git-push", sc); err == nil || !IsTerminal(err) {
		t.Fatalf("tag with force: %v", err)
	}
}

// gitTry runs git in repo's directory on the server, failing quietly.
func gitTry(git *testenv.Git, repo string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = git.Path(repo)
	cmd.Env = testenv.GitEnv(git.Root())
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

func TestGitCloneSparse(t *testing.T) {
	t.Parallel()
	git := testenv.GitServer(t)
	url := git.CreateRepo(t, "mono")
	git.Seed(t, "mono", map[string]string{"charts/app/values.yaml": "tag: 1\n", "charts/db/values.yaml": "x\n", "services/api/main.go": "package main\n"}, "init")
	sc := gitContext(t)
	step(t, sc, "git-clone", map[string]any{"repoURL": url, "blobless": true,
		"checkout": []any{map[string]any{"branch": "main", "path": "./src", "sparse": []any{"charts/app"}}}})
	got := keys(files(t, sc, "src"))
	if got != "charts/app/values.yaml" {
		t.Fatalf("sparse checkout holds %q", got)
	}
	// A commit made in a sparse work tree keeps what was not checked out.
	write(t, sc, "src/charts/app/values.yaml", "tag: 2\n")
	step(t, sc, "git-commit", map[string]any{"path": "./src", "message": "bump"})
	step(t, sc, "git-push", map[string]any{"path": "./src"})
	if got := git.Show(t, "mono", "main", "services/api/main.go"); got != "package main" {
		t.Fatalf("the commit lost the files outside the sparse checkout: %q", got)
	}
	if got := git.Show(t, "mono", "main", "charts/app/values.yaml"); got != "tag: 2" {
		t.Fatalf("pushed %q", got)
	}
}

func TestGitCloneSubmodules(t *testing.T) {
	t.Parallel()
	git := testenv.GitServer(t)
	libURL := git.CreateRepo(t, "lib")
	git.Seed(t, "lib", map[string]string{"lib.txt": "shared\n"}, "init")
	appURL := git.CreateRepo(t, "app")
	git.Seed(t, "app", map[string]string{"app.txt": "app\n"}, "init")
	work := t.TempDir()
	git.Run(t, "", "clone", "--quiet", git.Path("app"), work)
	git.Run(t, work, "-c", "protocol.allow=always", "submodule", "add", "--quiet", libURL, "vendor/lib")
	git.Run(t, work, "commit", "--quiet", "-m", "add lib")
	git.Run(t, work, "push", "--quiet", "origin", "main")

	sc := gitContext(t)
	step(t, sc, "git-clone", map[string]any{"repoURL": appURL, "checkout": []any{map[string]any{"branch": "main", "path": "./plain"}}})
	if got := files(t, sc, "plain")["vendor/lib/lib.txt"]; got != "" {
		t.Fatalf("submodule checked out without recurseSubmodules")
	}
	step(t, sc, "git-clone", map[string]any{"repoURL": appURL, "recurseSubmodules": true,
		"checkout": []any{map[string]any{"branch": "main", "path": "./full"}}})
	if got := files(t, sc, "full")["vendor/lib/lib.txt"]; got != "shared\n" {
		t.Fatalf("submodule file %q", got)
	}
}

func TestGitHubPushPushes(t *testing.T) {
	t.Parallel()
	git := testenv.GitServer(t)
	url := git.CreateRepo(t, "app")
	git.Seed(t, "app", map[string]string{"a.txt": "a"}, "init")
	sc := gitContext(t)
	step(t, sc, "git-clone", map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./out"}}})
	write(t, sc, "out/a.txt", "b")
	step(t, sc, "git-commit", map[string]any{"path": "./out", "message": "b"})
	res := step(t, sc, "github-push", map[string]any{"path": "./out", "targetBranch": "release"})
	if res.Output["branch"] != "release" || res.Output["commitURL"] != strings.TrimSuffix(url, ".git")+"/commit/"+res.Output["commit"].(string) {
		t.Fatalf("github-push output %v", res.Output)
	}
	if got := git.Show(t, "app", "release", "a.txt"); got != "b" {
		t.Fatalf("pushed %q", got)
	}
	sc.Config = map[string]any{"path": "./out", "insecureSkipTLSVerify": true}
	if _, err := run(t, "github-push", sc); err == nil || !strings.Contains(err.Error(), "not supported by Caravan") {
		t.Fatalf("insecureSkipTLSVerify: %v", err)
	}
}

// maxAttempts bounds the pushes tried while the remote branch moves; force
// replaces the remote branch; generateTargetBranch pushes to the
// promotion's own branch. git-push and github-push alike.
func TestGitPushAttemptsForceAndGeneratedBranch(t *testing.T) {
	t.Parallel()
	for _, uses := range []string{"git-push", "github-push"} {
		t.Run(uses, func(t *testing.T) {
			t.Parallel()
			git := testenv.GitServer(t)
			url := git.CreateRepo(t, "app")
			git.Seed(t, "app", map[string]string{"a.txt": "a\n"}, "init")
			sc := gitContext(t)
			step(t, sc, "git-clone", map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./out"}}})
			write(t, sc, "out/a.txt", "local\n")
			step(t, sc, "git-commit", map[string]any{"path": "./out", "message": "local"})

			// The remote moves: one attempt sees it moved and gives up; two
			// fetch it and replay the commit onto it.
			git.Seed(t, "app", map[string]string{"b.txt": "remote\n"}, "remote")
			sc.Config = map[string]any{"path": "./out", "maxAttempts": 1}
			if _, err := run(t, uses, sc); err == nil || !gitmirror.IsRace(err) {
				t.Fatalf("one attempt after the remote moved: %v", err)
			}
			step(t, sc, uses, map[string]any{"path": "./out", "maxAttempts": 2})
			if a, b := git.Show(t, "app", "main", "a.txt"), git.Show(t, "app", "main", "b.txt"); a != "local" || b != "remote" {
				t.Fatalf("after two attempts main holds a=%q b=%q", a, b)
			}

			// A conflicting change on the remote: refused, unless force.
			write(t, sc, "out/a.txt", "mine\n")
			step(t, sc, "git-commit", map[string]any{"path": "./out", "message": "mine"})
			git.Seed(t, "app", map[string]string{"a.txt": "theirs\n"}, "theirs")
			sc.Config = map[string]any{"path": "./out"}
			if _, err := run(t, uses, sc); err == nil || !IsTerminal(err) {
				t.Fatalf("a conflicting push: %v", err)
			}
			step(t, sc, uses, map[string]any{"path": "./out", "force": true})
			if got := git.Show(t, "app", "main", "a.txt"); got != "mine" {
				t.Fatalf("forced push left a.txt %q", got)
			}

			res := step(t, sc, uses, map[string]any{"path": "./out", "generateTargetBranch": true})
			branch := "caravan/promotion/" + sc.Promotion
			if res.Output["branch"] != branch || git.Show(t, "app", branch, "a.txt") != "mine" {
				t.Fatalf("generated branch: output %v", res.Output)
			}

			// The project's Git identity (ProjectConfig or ClusterConfig
			// gitClient): its author commits, its prefix names the branch.
			sc.GitIdentity = model.GitIdentity{Name: "Shop Bot", Email: "shop@acme.example", BranchPrefix: "deploy/"}
			write(t, sc, "out/a.txt", "project\n")
			step(t, sc, "git-commit", map[string]any{"path": "./out", "message": "project"})
			res = step(t, sc, uses, map[string]any{"path": "./out", "generateTargetBranch": true})
			branch = "deploy/" + sc.Promotion
			if got := git.Run(t, git.Path("app"), "log", "-1", "--format=%an <%ae>", branch); res.Output["branch"] != branch || got != "Shop Bot <shop@acme.example>" {
				t.Fatalf("project identity: output %v, author %q", res.Output, got)
			}
		})
	}
}
