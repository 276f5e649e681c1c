package steps

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

// TestCatalogIsGenerated keeps pkg/model's StepCatalog (what apply checks)
// the registry's: one declaration of each step.
func TestCatalogIsGenerated(t *testing.T) {
	t.Parallel()
	want, err := CatalogSource(Builtins())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../../../pkg/model/stepcatalog.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("pkg/model/stepcatalog.go is stale: run go generate ./internal/steps in services/promoter")
	}
	for name, d := range Builtins() {
		if s := d.Schema(); !reflect.DeepEqual(s, model.StepCatalog[name]) {
			t.Errorf("%s: the catalog differs from the registry:\n%+v\n%+v", name, model.StepCatalog[name], s)
		}
	}
}

func TestSchemaFromConfig(t *testing.T) {
	t.Parallel()
	s := Builtins()["git-clone"].Schema()
	for path, want := range map[string]model.FieldType{
		"repoURL": model.FieldString, "checkout": model.FieldArray, "checkout[]": model.FieldObject,
		"checkout[].sparse": model.FieldArray, "checkout[].sparse[]": model.FieldString, "author.email": model.FieldString,
		"recurseSubmodules": model.FieldBool,
	} {
		if s.Fields[path] != want {
			t.Errorf("%s: %q, want %q", path, s.Fields[path], want)
		}
	}
	if want := []string{"author.email", "author.name", "checkout", "checkout[].path", "repoURL"}; !reflect.DeepEqual(s.Required, want) {
		t.Errorf("required %v, want %v", s.Required, want)
	}
	if m := Builtins()["set-metadata"].Schema().Fields; m["updates[].values{}"] != model.FieldAny {
		t.Errorf("a map's values: %v", m)
	}
	if s := Builtins()["compose-output"].Schema(); !s.Open {
		t.Errorf("compose-output is free-form: %+v", s)
	}
}

// A config is checked against the step's schema before the step runs:
// fields it does not take, at any depth, required ones missing, and
// Kargo properties Caravan does not act on are terminal errors naming
// them; an accepted difference runs.
func TestRunChecksTheConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		uses    string
		config  map[string]any
		wantErr string
	}{
		{"git-clone", map[string]any{"repoURL": "http://x", "checkout": []any{map[string]any{"path": "src", "sprase": []any{"a"}}}}, `config.checkout[0].sprase: unknown field`},
		{"git-clone", map[string]any{"repoURL": "http://x", "checkout": []any{map[string]any{"branch": "main"}}}, "config.checkout[0].path: is required"},
		{"git-clone", map[string]any{"repoURL": "http://x", "insecureSkipTLSVerify": true, "checkout": []any{map[string]any{"path": "src"}}}, "config.insecureSkipTLSVerify: not supported by Caravan"},
		{"git-tag", map[string]any{"path": "src", "tag": "v1"}, "config.message: is required"},
		{"file-write", map[string]any{"path": "a.txt", "contents": "x", "mode": "0644"}, `config.mode: unknown field for step "file-write"`},
	} {
		sc := newContext(t, tc.config)
		_, err := run(t, tc.uses, sc)
		if err == nil || !IsTerminal(err) || !bytes.Contains([]byte(err.Error()), []byte(tc.wantErr)) {
			t.Errorf("%s %v: %v, want a terminal error with %q", tc.uses, tc.config, err, tc.wantErr)
		}
	}
}

// TestEveryStepIsTested: each built-in step is run by some test of this
// package.
func TestEveryStepIsTested(t *testing.T) {
	t.Parallel()
	var src bytes.Buffer
	tests, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tests {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	for _, name := range Builtins().Names() {
		re := regexp.MustCompile(`(run\(t, |step\(t, sc, |uses:\s+|run\(|\{)"` + regexp.QuoteMeta(name) + `"`)
		if !re.Match(src.Bytes()) {
			t.Errorf("no test runs step %s", name)
		}
	}
}

// TestDocsNameEveryStep: docs/steps.md has a row for every step and names
// every difference.
func TestDocsNameEveryStep(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../../../docs/steps.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Builtins().Names() {
		if !bytes.Contains(doc, []byte("`"+name+"`")) {
			t.Errorf("docs/steps.md has no row for %s", name)
		}
		for path := range Builtins()[name].Differences {
			if !bytes.Contains(doc, []byte("`"+path+"`")) {
				t.Errorf("docs/steps.md does not name %s's difference %s", name, path)
			}
		}
	}
}

// TestEffectsAreDeclared: every step is either replayable (it only shapes
// the work dir), marked Effects (a dry run stops before it), or known to
// only read; a new step must be put in one of these.
func TestEffectsAreDeclared(t *testing.T) {
	t.Parallel()
	readOnly := map[string]bool{
		"compose-output": true, "fail": true, "http-download": true, "oci-download": true,
		"json-parse": true, "toml-parse": true, "yaml-parse": true,
	}
	for name, d := range Builtins() {
		switch {
		case d.Replay && d.Effects:
			t.Errorf("%s: replayed steps only shape the work dir; it cannot have effects", name)
		case !d.Replay && !d.Effects && !readOnly[name]:
			t.Errorf("%s: declare whether it has effects outside the work dir (Definition.Effects) or add it to the read-only steps here", name)
		}
	}
	for _, name := range []string{"git-push", "github-push", "git-open-pr", "git-wait-for-pr", "git-merge-pr", "http", "argocd-update", "oci-push"} {
		if !Builtins()[name].Effects {
			t.Errorf("%s must be marked Effects", name)
		}
	}
}
