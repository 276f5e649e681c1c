package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// seedTree commits files to main of repo; a content "-> T" is a symbolic
// link to T. (testenv.Git.Seed writes regular files only.)
func seedTree(t *testing.T, g *testenv.Git, repo string, files map[string]string) {
	t.Helper()
	work := t.TempDir()
	g.Run(t, "", "clone", "--quiet", g.Path(repo), work)
	g.Run(t, work, "symbolic-ref", "HEAD", "refs/heads/main")
	for name, content := range files {
		p := filepath.Join(work, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "-> "); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	g.Run(t, work, "add", "--all")
	g.Run(t, work, "commit", "--quiet", "-m", "seed")
	g.Run(t, work, "push", "--quiet", "origin", "main")
}

// outsider is an engine whose data dir sits beside files a promotion must
// never read or change, as the server's admin-token and secret.key sit
// beside the promoter's data dir.
type outsider struct {
	*fixture
	engine *Engine
	base   string // holds promoter/ (the data dir) and the files below
}

const adminToken = "caravan-admin-token-7d1c"

// outsideFiles are the files beside the data dir, by name.
var outsideFiles = map[string]string{
	"admin-token": adminToken + "\n",
	// A mapping and a Chart.yaml, so that a step writing through a link
	// to them would succeed.
	"secret.yaml": "kind: Secret\ntoken: " + adminToken + "\n",
	"Chart.yaml":  "apiVersion: v2\nname: other\nversion: 0.1.0\ndependencies:\n  - name: dep\n    version: 0.1.0\n    repository: https://charts.example.com\n",
}

func newOutsider(t *testing.T) *outsider {
	t.Helper()
	f := newFixture(t)
	base := t.TempDir()
	for name, content := range outsideFiles {
		if err := os.WriteFile(filepath.Join(base, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := New(Options{DataDir: filepath.Join(base, "promoter"), Store: f.store, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return &outsider{fixture: f, engine: eng, base: base}
}

// up is the relative path from dir, a directory of a git-clone to ./src
// in the work dir (<data dir>/work/<promotion>/src/<dir>), to name beside
// the data dir.
func up(dir, name string) string {
	depth := 4 + len(strings.Split(dir, "/")) // <dir> + src, <promotion>, work, promoter
	return strings.Repeat("../", depth) + name
}

// run runs steps after a clone of repo into ./src; the promotion must
// error with a message containing want and leave the outside files alone.
func (o *outsider) run(t *testing.T, name, repo, want string, pipeline ...model.PromotionStep) {
	t.Helper()
	clone := step("git-clone", "clone", map[string]any{
		"repoURL":  o.git.URL(repo),
		"checkout": []any{map[string]any{"branch": "main", "path": "./src"}},
	})
	p := o.promotion(name, imageVars, append([]model.PromotionStep{clone}, pipeline...)...)
	res, rec := runPromotion(t, o.engine, p)
	if res.Phase != model.PromotionPhaseErrored || !strings.Contains(res.Message, want) {
		t.Errorf("phase %s: %q, want Errored with %q (steps %v)", res.Phase, res.Message, want, statuses(p))
	}
	if strings.Contains(res.Message, o.base) {
		t.Errorf("message %q shows an absolute path on the server", res.Message)
	}
	if strings.Contains(rec.all(), adminToken) {
		t.Error("the admin token reached a saved promotion")
	}
	for name, content := range outsideFiles {
		if b, err := os.ReadFile(filepath.Join(o.base, name)); err != nil || string(b) != content {
			t.Errorf("%s beside the data dir changed: %q %v", name, b, err)
		}
	}
}

// A chart in a cloned repo with a file linked to the admin token, which a
// template renders: helm-template must not load it (Helm's loader follows
// any link).
func TestHelmTemplateRefusesALinkOutOfTheWorkDir(t *testing.T) {
	t.Parallel()
	o := newOutsider(t)
	o.git.CreateRepo(t, "charts")
	seedTree(t, o.git, "charts", map[string]string{
		"app/Chart.yaml":        "apiVersion: v2\nname: app\nversion: 0.1.0\n",
		"app/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leak\ndata:\n  token: {{ .Files.Get \"files/token\" | quote }}\n",
		"app/files/token":       "-> " + up("app/files", "admin-token"),
	})
	o.run(t, "dev.helm-leak", "charts", "src/app/files/token is a symbolic link that leaves the work dir",
		step("helm-template", "render", map[string]any{"path": "./src/app", "outPath": "./out/app.yaml"}),
		// What a rendered-branch pipeline does next: publish the output.
		step("yaml-parse", "read", map[string]any{"path": "./out/app.yaml", "outputs": []any{
			map[string]any{"name": "token", "fromExpression": "data.token"},
		}}),
	)
}

// kustomize-set-image must not write through a kustomization.yaml linked
// out of the work dir (the directory was checked, the file was not).
func TestKustomizeSetImageRefusesALinkOutOfTheWorkDir(t *testing.T) {
	t.Parallel()
	o := newOutsider(t)
	o.git.CreateRepo(t, "app")
	seedTree(t, o.git, "app", map[string]string{
		"env/dev/kustomization.yaml": "-> " + up("env/dev", "secret.yaml"),
	})
	o.run(t, "dev.kustomize-link", "app", "src/env/dev/kustomization.yaml is a symbolic link that leaves the work dir",
		step("kustomize-set-image", "update", map[string]any{"path": "./src/env/dev", "images": []any{map[string]any{"image": imageRepo}}}),
	)
}

// helm-update-chart must not write through a Chart.yaml linked out of the
// work dir.
func TestHelmUpdateChartRefusesALinkOutOfTheWorkDir(t *testing.T) {
	t.Parallel()
	o := newOutsider(t)
	o.git.CreateRepo(t, "charts")
	seedTree(t, o.git, "charts", map[string]string{
		"app/Chart.yaml": "-> " + up("app", "Chart.yaml"),
	})
	o.run(t, "dev.chart-link", "charts", "src/app/Chart.yaml is a symbolic link that leaves the work dir",
		step("helm-update-chart", "update", map[string]any{"path": "./src/app", "charts": []any{
			map[string]any{"repository": "https://charts.example.com", "name": "dep", "version": "0.2.0"},
		}}),
	)
}

// kustomize-build with a resource linked out of the work dir: an error
// naming the file relative to the work dir, not the path on the server.
func TestKustomizeBuildRefusesALinkOutOfTheWorkDir(t *testing.T) {
	t.Parallel()
	o := newOutsider(t)
	o.git.CreateRepo(t, "app")
	seedTree(t, o.git, "app", map[string]string{
		"env/dev/kustomization.yaml": "resources:\n  - secret.yaml\n",
		"env/dev/secret.yaml":        "-> " + up("env/dev", "secret.yaml"),
	})
	o.run(t, "dev.build-link", "app", "src/env/dev/secret.yaml is a symbolic link that leaves the work dir",
		step("kustomize-build", "build", map[string]any{"path": "./src/env/dev", "outPath": "./out/all.yaml"}),
	)
}

// Links that stay inside the work dir keep working in a cloned repo: a
// chart template and a kustomize base shared through links.
func TestLinksInsideTheWorkDirKeepWorking(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := f.git.CreateRepo(t, "app")
	seedTree(t, f.git, "app", map[string]string{
		"shared/cm.yaml":                 "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  from: shared\n",
		"chart/Chart.yaml":               "apiVersion: v2\nname: app\nversion: 0.1.0\n",
		"chart/templates/cm.yaml":        "-> ../../shared/cm.yaml",
		"shared/base/kustomization.yaml": "resources:\n  - deployment.yaml\n",
		"shared/base/deployment.yaml":    deployment,
		"base":                           "-> shared/base",
		"env/dev/kustomization.yaml":     "resources:\n  - ../../base\n",
	})
	p := f.promotion("dev.links", imageVars,
		step("git-clone", "", map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./src"}}}),
		step("helm-template", "", map[string]any{"path": "./src/chart", "outPath": "./out/chart.yaml"}),
		step("kustomize-set-image", "", map[string]any{"path": "./src/env/dev", "images": []any{map[string]any{"image": imageRepo}}}),
		step("kustomize-build", "", map[string]any{"path": "./src/env/dev", "outPath": "./out/dev.yaml"}),
		step("yaml-parse", "chart", map[string]any{"path": "./out/chart.yaml", "outputs": []any{map[string]any{"name": "from", "fromExpression": "data.from"}}}),
		step("yaml-parse", "dev", map[string]any{"path": "./out/dev.yaml", "outputs": []any{map[string]any{"name": "image", "fromExpression": "spec.template.spec.containers[0].image"}}}),
	)
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s (steps %v)", res.Phase, res.Message, statuses(p))
	}
	if got := p.Status.State["chart"].(map[string]any)["from"]; got != "shared" {
		t.Errorf("helm-template through a link rendered from=%v", got)
	}
	if got := p.Status.State["dev"].(map[string]any)["image"]; got != imageRepo+":1.4.0" {
		t.Errorf("kustomize-build through a linked base rendered image=%v", got)
	}
}

// TestRelativeDataDir runs the rendered-branch pipeline (kustomize-build
// included) with the default relative data dir ./.caravan, as `make run`
// does: paths inside the work dir are inside it.
func TestRelativeDataDir(t *testing.T) {
	// Not parallel: it changes the working directory.
	f := newFixture(t)
	url := f.git.CreateRepo(t, "gitops")
	f.git.Seed(t, "gitops", map[string]string{
		"base/kustomization.yaml":    "resources:\n  - deployment.yaml\n",
		"base/deployment.yaml":       deployment,
		"env/dev/kustomization.yaml": "resources:\n  - ../../base\n",
	}, "init")
	t.Chdir(t.TempDir())
	eng, err := New(Options{DataDir: "./.caravan/promoter", Store: f.store, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p := f.promotion("dev.relative", imageVars,
		step("git-clone", "", map[string]any{"repoURL": url, "checkout": []any{
			map[string]any{"branch": "main", "path": "./src"},
			map[string]any{"branch": "env/dev", "create": true, "path": "./out"},
		}}),
		step("git-clear", "", map[string]any{"path": "./out"}),
		step("kustomize-set-image", "update", map[string]any{"path": "./src/env/dev", "images": []any{map[string]any{"image": imageRepo}}}),
		step("kustomize-build", "", map[string]any{"path": "./src/env/dev", "outPath": "./out/manifests.yaml"}),
		step("helm-template", "", map[string]any{"path": "./src/chart", "outPath": "./out/chart.yaml"}),
		step("git-commit", "commit", map[string]any{"path": "./out", "message": "${{ outputs.update.commitMessage }}"}),
		step("git-push", "", map[string]any{"path": "./out"}),
	)
	f.git.Seed(t, "gitops", map[string]string{
		"chart/Chart.yaml":             "apiVersion: v2\nname: app\nversion: 0.1.0\n",
		"chart/templates/service.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: app\n",
	}, "chart")
	res, _ := runPromotion(t, eng, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s (steps %v)", res.Phase, res.Message, statuses(p))
	}
	if got := f.git.Show(t, "gitops", "env/dev", "manifests.yaml"); !strings.Contains(got, "image: "+imageRepo+":1.4.0") {
		t.Fatalf("rendered:\n%s", got)
	}
	if got := f.git.Show(t, "gitops", "env/dev", "chart.yaml"); !strings.Contains(got, "kind: Service") {
		t.Fatalf("rendered chart:\n%s", got)
	}
}
