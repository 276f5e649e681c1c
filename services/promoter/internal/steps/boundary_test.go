package steps

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

// The secret beside the work dir that no step may read or change, as the
// server's admin-token is beside the promoter's work dirs.
const secret = "admin-token-5f3e9a"

// fsCase is one step run against a work dir holding symbolic links.
type fsCase struct {
	name string
	// files to create in the work dir (path → content); content "-> T"
	// makes a symbolic link to T, where {secret} is the relative path
	// from the link's directory to a secret file outside the work dir,
	// {outside} the same to a directory outside it and {abs} the
	// secret's absolute path.
	files  map[string]string
	uses   string
	config map[string]any
	// wantErr is a part of the terminal error expected ("" for success).
	wantErr string
	// check looks at the work dir after a successful run.
	check func(t *testing.T, sc *Context)
}

const (
	chartYAML = "apiVersion: v2\nname: app\nversion: 0.1.0\n"
	cmYAML    = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  from: shared\n"
)

func fsCases() []fsCase {
	return []fsCase{
		{
			name:    "helm-template refuses a template linked out of the work dir",
			files:   map[string]string{"charts/app/Chart.yaml": chartYAML, "charts/app/templates/leak": "-> {secret}"},
			uses:    "helm-template",
			config:  map[string]any{"path": "charts/app", "outPath": "out/app.yaml"},
			wantErr: "charts/app/templates/leak is a symbolic link that leaves the work dir",
		},
		{
			name:    "helm-template refuses an absolute link",
			files:   map[string]string{"charts/app/Chart.yaml": chartYAML, "charts/app/templates/leak.yaml": "-> {abs}"},
			uses:    "helm-template",
			config:  map[string]any{"path": "charts/app", "outPath": "out/app.yaml"},
			wantErr: "charts/app/templates/leak.yaml is a symbolic link that leaves the work dir",
		},
		{
			name:    "helm-template refuses a chart directory linked out",
			files:   map[string]string{"charts/app/Chart.yaml": chartYAML, "charts/app/templates": "-> {outside}"},
			uses:    "helm-template",
			config:  map[string]any{"path": "charts/app", "outPath": "out/app.yaml"},
			wantErr: "charts/app/templates is a symbolic link that leaves the work dir",
		},
		{
			name: "helm-template follows links inside the work dir",
			files: map[string]string{
				"shared/cm.yaml": cmYAML, "charts/app/Chart.yaml": chartYAML,
				"charts/app/templates/cm.yaml": "-> ../../../shared/cm.yaml", "charts/current": "-> app",
			},
			uses:   "helm-template",
			config: map[string]any{"path": "charts/current", "outPath": "out/app.yaml"},
			check:  fileContains("out/app.yaml", "from: shared"),
		},
		{
			name:    "kustomize-set-image does not write through a kustomization.yaml linked out",
			files:   map[string]string{"overlay/kustomization.yaml": "-> {secret}"},
			uses:    "kustomize-set-image",
			config:  map[string]any{"path": "overlay", "images": []any{map[string]any{"image": "nginx", "tag": "1.27"}}},
			wantErr: "overlay/kustomization.yaml is a symbolic link that leaves the work dir",
		},
		{
			name:    "kustomize-set-image refuses an overlay directory linked out",
			files:   map[string]string{"overlay": "-> {outside}"},
			uses:    "kustomize-set-image",
			config:  map[string]any{"path": "overlay/x", "images": []any{map[string]any{"image": "nginx", "tag": "1.27"}}},
			wantErr: "symbolic link overlay leaves the work dir",
		},
		{
			name:   "kustomize-set-image writes through a link inside the work dir",
			files:  map[string]string{"shared/kustomization.yaml": "resources: []\n", "overlay/kustomization.yaml": "-> ../shared/kustomization.yaml"},
			uses:   "kustomize-set-image",
			config: map[string]any{"path": "overlay", "images": []any{map[string]any{"image": "nginx", "tag": "1.27"}}},
			check:  fileContains("shared/kustomization.yaml", "newTag: \"1.27\""),
		},
		{
			name:    "helm-update-chart does not write through a Chart.yaml linked out",
			files:   map[string]string{"charts/app/Chart.yaml": "-> {secret}"},
			uses:    "helm-update-chart",
			config:  map[string]any{"path": "charts/app", "charts": []any{map[string]any{"repository": "file://../dep", "name": "dep", "version": "0.2.0"}}},
			wantErr: "charts/app/Chart.yaml is a symbolic link that leaves the work dir",
		},
		{
			name: "helm-update-chart does not let Helm write through a Chart.lock linked out",
			files: map[string]string{
				"charts/dep/Chart.yaml": "apiVersion: v2\nname: dep\nversion: 0.2.0\n",
				"charts/app/Chart.yaml": chartYAML + "dependencies:\n  - name: dep\n    version: 0.1.0\n    repository: file://../dep\n",
				"charts/app/Chart.lock": "-> {secret}",
			},
			uses:    "helm-update-chart",
			config:  map[string]any{"path": "charts/app", "charts": []any{map[string]any{"repository": "file://../dep", "name": "dep", "version": "0.2.0"}}},
			wantErr: "charts/app/Chart.lock is a symbolic link that leaves the work dir",
		},
		{
			name: "helm-update-chart refuses a file:// dependency outside the work dir",
			files: map[string]string{
				"charts/app/Chart.yaml": chartYAML + "dependencies:\n  - name: dep\n    version: 0.1.0\n    repository: file://../../../../../../../../../../../../../../..\n",
			},
			uses:    "helm-update-chart",
			config:  map[string]any{"path": "charts/app", "charts": []any{map[string]any{"repository": "file://../../../../../../../../../../../../../../..", "name": "dep", "version": "0.2.0"}}},
			wantErr: "leaves the work dir",
		},
		{
			name: "kustomize-build refuses a resource linked out of the work dir",
			files: map[string]string{
				"overlay/kustomization.yaml": "resources:\n  - leak.yaml\n",
				"overlay/leak.yaml":          "-> {secret}",
			},
			uses:    "kustomize-build",
			config:  map[string]any{"path": "overlay", "outPath": "out/all.yaml"},
			wantErr: "overlay/leak.yaml is a symbolic link that leaves the work dir",
		},
		{
			name: "kustomize-build refuses a base linked out of the work dir",
			files: map[string]string{
				"overlay/kustomization.yaml": "resources:\n  - base\n",
				"overlay/base":               "-> {outside}",
			},
			uses:    "kustomize-build",
			config:  map[string]any{"path": "overlay", "outPath": "out/all.yaml"},
			wantErr: "overlay/base is a symbolic link that leaves the work dir",
		},
		{
			name: "kustomize-build refuses a base above the work dir",
			files: map[string]string{
				"overlay/kustomization.yaml": "resources:\n  - ../../../../../../../../../../../../../outside\n",
			},
			uses:    "kustomize-build",
			config:  map[string]any{"path": "overlay", "outPath": "out/all.yaml"},
			wantErr: "leaves the work dir",
		},
		{
			name: "kustomize-build follows links inside the work dir",
			files: map[string]string{
				"shared/base/kustomization.yaml": "resources:\n  - cm.yaml\n",
				"shared/base/cm.yaml":            cmYAML,
				"src/base":                       "-> ../shared/base",
				"src/env/dev/kustomization.yaml": "resources:\n  - ../../base\nnamePrefix: dev-\n",
				"dev":                            "-> src/env/dev",
			},
			uses:   "kustomize-build",
			config: map[string]any{"path": "dev", "outPath": "out/all.yaml"},
			check:  fileContains("out/all.yaml", "name: dev-cm"),
		},
		{
			name:    "yaml-update does not write through a link out",
			files:   map[string]string{"values.yaml": "-> {secret}"},
			uses:    "yaml-update",
			config:  map[string]any{"path": "values.yaml", "updates": []any{map[string]any{"key": "a", "value": "b"}}},
			wantErr: "values.yaml is a symbolic link that leaves the work dir",
		},
		{
			name:    "file-write does not write into a directory linked out",
			files:   map[string]string{"out": "-> {outside}"},
			uses:    "file-write",
			config:  map[string]any{"path": "out/new.txt", "contents": "x"},
			wantErr: "symbolic link out leaves the work dir",
		},
		{
			name:    "yaml-merge does not write through a link out",
			files:   map[string]string{"a.yaml": "a: 1\n", "merged.yaml": "-> {secret}"},
			uses:    "yaml-merge",
			config:  map[string]any{"inFiles": []any{"a.yaml"}, "outFile": "merged.yaml"},
			wantErr: "merged.yaml is a symbolic link that leaves the work dir",
		},
		{
			name:    "delete does not delete through a link out",
			files:   map[string]string{"out": "-> {outside}"},
			uses:    "delete",
			config:  map[string]any{"path": "out/keep.txt"},
			wantErr: "symbolic link out leaves the work dir",
		},
		{
			name:    "delete does not delete the work dir",
			files:   map[string]string{"a/b.txt": "x"},
			uses:    "delete",
			config:  map[string]any{"path": "a/.."},
			wantErr: "invalid argument",
		},
		{
			name:    "copy does not copy a link to where it leads out",
			files:   map[string]string{"src/a/b/up": "-> ../x", "src/a/x": "x"},
			uses:    "copy",
			config:  map[string]any{"inPath": "src/a/b", "outPath": "."},
			wantErr: "up is a symbolic link that leaves the work dir",
		},
		{
			name:   "copy copies links that stay inside",
			files:  map[string]string{"src/f.txt": "hello", "src/l": "-> f.txt"},
			uses:   "copy",
			config: map[string]any{"inPath": "src", "outPath": "dst"},
			check:  fileContains("dst/l", "hello"),
		},
		{
			name:    "tar does not read through a link out",
			files:   map[string]string{"in": "-> {outside}"},
			uses:    "tar",
			config:  map[string]any{"inPath": "in", "outPath": "a.tgz"},
			wantErr: "in is a symbolic link that leaves the work dir",
		},
		{
			name:    "toml-parse does not read through a link out",
			files:   map[string]string{"c.toml": "-> {secret}"},
			uses:    "toml-parse",
			config:  map[string]any{"path": "c.toml", "outputs": []any{map[string]any{"name": "v", "fromExpression": "v"}}},
			wantErr: "c.toml is a symbolic link that leaves the work dir",
		},
		{
			name:    "http-download does not write through a link out",
			files:   map[string]string{"out": "-> {outside}"},
			uses:    "http-download",
			config:  map[string]any{"url": "http://127.0.0.1:9/never", "outPath": "out/file"},
			wantErr: "symbolic link out leaves the work dir",
		},
		{
			name:    "oci-download does not write through a link out",
			files:   map[string]string{"layer.tgz": "-> {secret}"},
			uses:    "oci-download",
			config:  map[string]any{"imageRef": "127.0.0.1:9/never:1", "outPath": "layer.tgz", "allowOverwrite": true},
			wantErr: "layer.tgz is a symbolic link that leaves the work dir",
		},
	}
}

func fileContains(path, want string) func(t *testing.T, sc *Context) {
	return func(t *testing.T, sc *Context) {
		t.Helper()
		b, err := sc.Workspace.Dir.ReadFile(path)
		if err != nil || !strings.Contains(string(b), want) {
			t.Fatalf("%s: %v\n%s\nwant it to contain %q", path, err, b, want)
		}
	}
}

// TestStepsStayInTheWorkDir runs every case with the work dir under an
// absolute data dir and under a relative one (./.caravan, the default), as
// the engine may get either.
func TestStepsStayInTheWorkDir(t *testing.T) {
	// Not parallel: the relative run changes the working directory.
	for _, mode := range []string{"absolute", "relative"} {
		t.Run(mode, func(t *testing.T) {
			base := t.TempDir()
			if mode == "relative" {
				t.Chdir(base)
				base = "."
			}
			for i, c := range fsCases() {
				t.Run(c.name, func(t *testing.T) {
					runFSCase(t, filepath.Join(base, "case"+string(rune('a'+i))), c)
				})
			}
		})
	}
}

// runFSCase lays out <base>/admin-token, <base>/outside/keep.txt and the
// work dir <base>/.caravan/promoter/work/p, runs c there and checks
// nothing outside the work dir was read or changed.
func runFSCase(t *testing.T, base string, c fsCase) {
	t.Helper()
	secretPath := filepath.Join(base, "admin-token")
	outside := filepath.Join(base, "outside")
	work := filepath.Join(base, ".caravan", "promoter", "work", "p")
	for _, dir := range []string{outside, work} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(secretPath, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "keep.txt"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	absSecret, err := filepath.Abs(secretPath)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range c.files {
		p := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		target, isLink := strings.CutPrefix(content, "-> ")
		if !isLink {
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		toSecret, _ := filepath.Rel(filepath.Dir(p), secretPath)
		toOutside, _ := filepath.Rel(filepath.Dir(p), outside)
		target = strings.NewReplacer("{secret}", toSecret, "{outside}", toOutside, "{abs}", absSecret).Replace(target)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}

	sc := newContextAt(t, work, c.config)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, Builtins()[c.uses], sc)

	t.Logf("%s: %v", c.uses, err)
	absBase, _ := filepath.Abs(base)
	switch {
	case c.wantErr == "" && err != nil:
		t.Fatalf("%s: %v", c.uses, err)
	case c.wantErr != "" && err == nil:
		t.Fatalf("%s succeeded, want an error with %q", c.uses, c.wantErr)
	case err != nil && !IsTerminal(err):
		t.Errorf("%s: %v is not terminal", c.uses, err)
	case err != nil && !strings.Contains(err.Error(), c.wantErr):
		t.Errorf("%s: %v\nwant it to contain %q", c.uses, err, c.wantErr)
	case err != nil && strings.Contains(err.Error(), absBase):
		t.Errorf("%s: %v shows an absolute path on the server", c.uses, err)
	}
	if strings.Contains(res.Message, absBase) {
		t.Errorf("%s: message %q shows an absolute path on the server", c.uses, res.Message)
	}
	for _, p := range []string{secretPath, filepath.Join(outside, "keep.txt")} {
		if b, err := os.ReadFile(p); err != nil || string(b) != secret {
			t.Errorf("%s changed %s outside the work dir: %q %v", c.uses, p, b, err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("%s created files outside the work dir: %v", c.uses, entries)
	}
	// Nothing in the work dir holds the secret: it was not rendered,
	// copied or downloaded in.
	walkErr := filepath.WalkDir(work, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		if b, _ := os.ReadFile(p); strings.Contains(string(b), secret) {
			t.Errorf("%s put the secret into %s", c.uses, p)
		}
		return nil
	})
	if walkErr != nil {
		t.Fatal(walkErr)
	}
	if err == nil && c.check != nil {
		c.check(t, sc)
	}
}

// A remote kustomize base: kustomize clones it into a temporary directory
// of its own, outside the work dir, so the build fails, and the clone is
// removed.
func TestKustomizeBuildRemoteBase(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // not parallel: kustomize's clone goes to os.TempDir
	git := testenv.GitServer(t)
	git.CreateRepo(t, "bases")
	git.Seed(t, "bases", map[string]string{"base/kustomization.yaml": "resources: []\n"}, "init")
	sc := newContext(t, map[string]any{"path": "overlay", "outPath": "out.yaml"})
	write(t, sc, "overlay/kustomization.yaml", "resources:\n  - "+git.URL("bases")+"//base?ref=main\n")
	_, err := Run(context.Background(), Builtins()["kustomize-build"], sc)
	t.Logf("kustomize-build: %v", err)
	if err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), "leaves the work dir") {
		t.Fatalf("a remote base: %v", err)
	}
	if entries, _ := filepath.Glob(filepath.Join(tmp, "kustomize-*")); len(entries) != 0 {
		t.Fatalf("kustomize's clone was left behind: %v", entries)
	}
}
