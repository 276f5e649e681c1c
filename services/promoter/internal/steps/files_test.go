package steps

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// files lists the regular files below dir in the work dir (path → content).
func files(t *testing.T, sc *Context, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	root := filepath.Join(sc.Workspace.Dir.Path(), dir)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		out[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func keys(m map[string]string) string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestFileWrite(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		existing string // content of out/a.txt before, "" for none
		config   map[string]any
		wantErr  string
		wantMode fs.FileMode
	}{
		{name: "a new file is 0600 by default", config: map[string]any{"path": "out/a.txt", "contents": "hello\n"}, wantMode: 0o600},
		{name: "permissions", config: map[string]any{"path": "out/a.txt", "contents": "hello\n", "permissions": "0640"}, wantMode: 0o640},
		{name: "an existing file is kept without overwrite", existing: "old", config: map[string]any{"path": "out/a.txt", "contents": "hello\n"}, wantErr: "set overwrite"},
		{name: "overwrite replaces it", existing: "old", config: map[string]any{"path": "out/a.txt", "contents": "hello\n", "overwrite": true, "permissions": "0644"}, wantMode: 0o644},
		{name: "no executable files", config: map[string]any{"path": "out/a.txt", "contents": "x", "permissions": "0755"}, wantErr: "not executable"},
		{name: "no world-writable files", config: map[string]any{"path": "out/a.txt", "contents": "x", "permissions": "0662"}, wantErr: "world-writable"},
		{name: "an octal mode", config: map[string]any{"path": "out/a.txt", "contents": "x", "permissions": "rw"}, wantErr: "octal"},
		{name: "not into .git", config: map[string]any{"path": ".git/config", "contents": "x"}, wantErr: ".git"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newContext(t, tt.config)
			if tt.existing != "" {
				write(t, sc, "out/a.txt", tt.existing)
			}
			_, err := run(t, "file-write", sc)
			if tt.wantErr != "" {
				if err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				if tt.existing != "" && files(t, sc, "out")["a.txt"] != tt.existing {
					t.Fatal("the existing file changed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			info, err := os.Stat(filepath.Join(sc.Workspace.Dir.Path(), "out/a.txt"))
			if err != nil {
				t.Fatal(err)
			}
			if info.Mode().Perm() != tt.wantMode {
				t.Errorf("mode %v, want %v", info.Mode().Perm(), tt.wantMode)
			}
			if got := files(t, sc, "out")["a.txt"]; got != "hello\n" {
				t.Errorf("content %q", got)
			}
		})
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	tree := map[string]string{"out/a.yaml": "a", "out/b.yaml": "b", "out/c.txt": "c", "out/sub/d.yaml": "d", "keep.txt": "k"}
	tests := []struct {
		name    string
		config  map[string]any
		left    string
		wantErr string
	}{
		{"a path", map[string]any{"path": "out/sub"}, "keep.txt out/a.yaml out/b.yaml out/c.txt", ""},
		{"paths", map[string]any{"paths": []any{"out/a.yaml", "out/c.txt"}}, "keep.txt out/b.yaml out/sub/d.yaml", ""},
		{"globs", map[string]any{"paths": []any{"out/*.yaml"}, "pathsAreGlobs": true}, "keep.txt out/c.txt out/sub/d.yaml", ""},
		{"a missing path is fine", map[string]any{"path": "out/nothere"}, "keep.txt out/a.yaml out/b.yaml out/c.txt out/sub/d.yaml", ""},
		{"unless strict", map[string]any{"path": "out/nothere", "strict": true}, "", "does not exist"},
		{"a glob matching nothing, strict", map[string]any{"path": "out/*.json", "pathsAreGlobs": true, "strict": true}, "", "matches nothing"},
		{"path and paths", map[string]any{"path": "a", "paths": []any{"b"}}, "", "one of path and paths"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newContext(t, tt.config)
			for p, c := range tree {
				write(t, sc, p, c)
			}
			_, err := run(t, "delete", sc)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := keys(files(t, sc, ".")); got != tt.left {
				t.Fatalf("left %q, want %q", got, tt.left)
			}
		})
	}
}

func TestCopy(t *testing.T) {
	t.Parallel()
	tree := map[string]string{"src/a.yaml": "a", "src/notes.md": "n", "src/tmp/x.yaml": "x", "src/.git/HEAD": "ref", "src/sub/b.yaml": "b"}
	tests := []struct {
		name   string
		config map[string]any
		want   string
	}{
		{"a tree, .git left out", map[string]any{"inPath": "src", "outPath": "dst"}, "a.yaml notes.md sub/b.yaml tmp/x.yaml"},
		{"ignore patterns", map[string]any{"inPath": "src", "outPath": "dst", "ignore": "# docs\n*.md\ntmp/\n"}, "a.yaml sub/b.yaml"},
		{"a negated pattern", map[string]any{"inPath": "src", "outPath": "dst", "ignore": "*.yaml\n!sub/b.yaml"}, "notes.md sub/b.yaml"},
		{"a file", map[string]any{"inPath": "src/a.yaml", "outPath": "dst/copied.yaml"}, "copied.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newContext(t, tt.config)
			for p, c := range tree {
				write(t, sc, p, c)
			}
			if _, err := run(t, "copy", sc); err != nil {
				t.Fatal(err)
			}
			if got := keys(files(t, sc, "dst")); got != tt.want {
				t.Fatalf("copied %q, want %q", got, tt.want)
			}
		})
	}
}

// readTar lists a tar's entries (name → content, directories with a
// trailing slash and no content) and whether it was gzip-compressed.
func readTar(t *testing.T, b []byte) (map[string]string, bool) {
	t.Helper()
	var r io.Reader = bytes.NewReader(b)
	gz, err := gzip.NewReader(bytes.NewReader(b))
	zipped := err == nil
	if zipped {
		r = gz
	}
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, zipped
		}
		if err != nil {
			t.Fatal(err)
		}
		c, _ := io.ReadAll(tr)
		out[h.Name] = string(c)
	}
}

func TestTarAndUntar(t *testing.T) {
	t.Parallel()
	tree := map[string]string{"src/app/a.yaml": "a", "src/app/b.txt": "b", "src/app/deep/c.yaml": "c"}
	tests := []struct {
		name      string
		tar       map[string]any
		untar     map[string]any
		wantTar   string
		gzip      bool
		wantFiles string
	}{
		{name: "uncompressed by default", tar: map[string]any{"inPath": "src", "outPath": "a.tar"},
			wantTar: "app/ app/a.yaml app/b.txt app/deep/ app/deep/c.yaml", wantFiles: "app/a.yaml app/b.txt app/deep/c.yaml"},
		{name: "gzip", tar: map[string]any{"inPath": "src", "outPath": "a.tgz", "gzip": true}, gzip: true,
			wantTar: "app/ app/a.yaml app/b.txt app/deep/ app/deep/c.yaml", wantFiles: "app/a.yaml app/b.txt app/deep/c.yaml"},
		{name: "tar ignores", tar: map[string]any{"inPath": "src", "outPath": "a.tar", "ignore": "*.txt\ndeep"},
			wantTar: "app/ app/a.yaml", wantFiles: "app/a.yaml"},
		{name: "untar strips components", tar: map[string]any{"inPath": "src", "outPath": "a.tar"},
			untar:   map[string]any{"stripComponents": 1.0},
			wantTar: "app/ app/a.yaml app/b.txt app/deep/ app/deep/c.yaml", wantFiles: "a.yaml b.txt deep/c.yaml"},
		{name: "untar ignores", tar: map[string]any{"inPath": "src", "outPath": "a.tar"},
			untar:   map[string]any{"stripComponents": 1.0, "ignore": "deep/\n*.txt"},
			wantTar: "app/ app/a.yaml app/b.txt app/deep/ app/deep/c.yaml", wantFiles: "a.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newContext(t, tt.tar)
			for p, c := range tree {
				write(t, sc, p, c)
			}
			if _, err := run(t, "tar", sc); err != nil {
				t.Fatal(err)
			}
			out := tt.tar["outPath"].(string)
			b, err := sc.Workspace.Dir.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			entries, zipped := readTar(t, b)
			if got := keys(entries); got != tt.wantTar || zipped != tt.gzip {
				t.Fatalf("tar holds %q (gzip %v), want %q (gzip %v)", got, zipped, tt.wantTar, tt.gzip)
			}
			cfg := map[string]any{"inPath": out, "outPath": "dst"}
			for k, v := range tt.untar {
				cfg[k] = v
			}
			sc.Config = cfg
			if _, err := run(t, "untar", sc); err != nil {
				t.Fatal(err)
			}
			got := files(t, sc, "dst")
			if keys(got) != tt.wantFiles {
				t.Fatalf("untarred %q, want %q", keys(got), tt.wantFiles)
			}
		})
	}
}

func TestYAMLMerge(t *testing.T) {
	t.Parallel()
	const base = "# chart defaults\nimage:\n  repository: web\n  tag: 1.0.0\nports: [80, 443]\ndebug: true\n"
	const stage = "image:\n  tag: 1.1.0\nports: [8080]\ndebug: null\nextra: yes\n"
	tests := []struct {
		name    string
		config  map[string]any
		want    string
		message string
		wantErr string
	}{
		{
			name:    "later files win, lists are replaced, null deletes",
			config:  map[string]any{"inFiles": []any{"base.yaml", "stage.yaml"}, "outFile": "out/values.yaml"},
			want:    "# chart defaults\nimage:\n  repository: web\n  tag: 1.1.0\nports: [8080]\nextra: yes\n",
			message: "Merged YAML files to out/values.yaml\n\n- base.yaml\n- stage.yaml",
		},
		{
			name:    "a missing file fails",
			config:  map[string]any{"inFiles": []any{"base.yaml", "missing.yaml"}, "outFile": "out/values.yaml"},
			wantErr: "missing.yaml",
		},
		{
			name:    "unless ignoreMissingFiles",
			config:  map[string]any{"inFiles": []any{"base.yaml", "missing.yaml"}, "outFile": "out/values.yaml", "ignoreMissingFiles": true},
			want:    "# chart defaults\nimage:\n  repository: web\n  tag: 1.0.0\nports: [80, 443]\ndebug: true\n",
			message: "no YAML files merged",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newContext(t, tt.config)
			write(t, sc, "base.yaml", base)
			write(t, sc, "stage.yaml", stage)
			res, err := run(t, "yaml-merge", sc)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := files(t, sc, "out")["values.yaml"]; got != tt.want {
				t.Errorf("merged:\n%s\nwant:\n%s", got, tt.want)
			}
			if res.Output["commitMessage"] != tt.message {
				t.Errorf("commitMessage %q, want %q", res.Output["commitMessage"], tt.message)
			}
		})
	}
}

func TestParseSteps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		uses, file, content, expr string
		want                      any
	}{
		{"yaml-parse", "Chart.yaml", "name: web\nversion: 1.2.3\n", "version", "1.2.3"},
		{"json-parse", "package.json", `{"name": "web", "scripts": {"build": "go build"}}`, "scripts.build", "go build"},
		{"toml-parse", "app.toml", "[server]\nport = 8080\n", "server.port + 1", 8081.0},
		// Kargo's semverParse example: the version bumped from the parsed
		// file.
		{"yaml-parse", "Chart.yaml", "version: 1.2.3\n", "semverParse(version).IncMinor().String()", "1.3.0"},
	}
	for _, tt := range tests {
		sc := newContext(t, map[string]any{"path": tt.file, "outputs": []any{map[string]any{"name": "v", "fromExpression": tt.expr}}})
		write(t, sc, tt.file, tt.content)
		res, err := run(t, tt.uses, sc)
		if err != nil || res.Output["v"] != tt.want {
			t.Errorf("%s %s: %v %v, want %v", tt.uses, tt.expr, res.Output, err, tt.want)
		}
	}
}

// fakeStore records metadata and aliases: the engine's store stands
// behind these interfaces in production (see engine tests).
type fakeStore struct {
	stages, freight map[string]map[string]any
	aliases         map[string]string
}

func (f *fakeStore) SetStageMetadata(_ context.Context, _, stage string, v map[string]any) error {
	f.stages[stage] = v
	return nil
}

func (f *fakeStore) SetFreightMetadata(_ context.Context, _, freight string, v map[string]any) error {
	f.freight[freight] = v
	return nil
}

func (f *fakeStore) SetFreightAlias(_ context.Context, _, freight, alias string) error {
	f.aliases[freight] = alias
	return nil
}

func TestMetadataAliasFailAndComposeOutput(t *testing.T) {
	t.Parallel()
	store := &fakeStore{stages: map[string]map[string]any{}, freight: map[string]map[string]any{}, aliases: map[string]string{}}
	sc := newContext(t, nil)
	sc.Stage, sc.TargetFreight, sc.Metadata, sc.Aliases = "dev", "f1", store, store

	sc.Config = map[string]any{"updates": []any{
		map[string]any{"kind": "Stage", "name": "qa", "values": map[string]any{"approved": true}},
		map[string]any{"kind": "Freight", "values": map[string]any{"ticket": "OPS-1"}},
	}}
	if _, err := run(t, "set-metadata", sc); err != nil {
		t.Fatal(err)
	}
	if store.stages["qa"]["approved"] != true || store.freight["f1"]["ticket"] != "OPS-1" {
		t.Fatalf("metadata %+v", store)
	}
	sc.Config = map[string]any{"updates": []any{map[string]any{"kind": "Warehouse", "values": map[string]any{"a": 1.0}}}}
	if _, err := run(t, "set-metadata", sc); err == nil || !IsTerminal(err) {
		t.Fatalf("kind Warehouse: %v", err)
	}

	sc.Config = map[string]any{"name": "f2", "alias": "brave-owl"}
	if _, err := run(t, "set-freight-alias", sc); err != nil || store.aliases["f2"] != "brave-owl" {
		t.Fatalf("alias: %v %v", store.aliases, err)
	}
	sc.Config = map[string]any{"alias": "calm-fox"}
	if _, err := run(t, "set-freight-alias", sc); err != nil || store.aliases["f1"] != "calm-fox" {
		t.Fatalf("alias of the target freight: %v %v", store.aliases, err)
	}
	sc.Config = map[string]any{"freightName": "f1", "newAlias": "x"}
	if _, err := run(t, "set-freight-alias", sc); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("Caravan's old field names: %v", err)
	}

	sc.Config = map[string]any{"message": "not today"}
	if res, err := run(t, "fail", sc); err != nil || res.Status != "Failed" || res.Message != "not today" {
		t.Fatalf("fail: %+v %v", res, err)
	}
	sc.Config = map[string]any{"prURL": "https://x/1", "n": 2.0}
	if res, err := run(t, "compose-output", sc); err != nil || res.Output["prURL"] != "https://x/1" || res.Output["n"] != 2.0 {
		t.Fatalf("compose-output: %+v %v", res, err)
	}
}
