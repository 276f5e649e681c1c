package conformance

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestDocsUpToDate fails when docs/kargo-compatibility.md is not what the
// tables render: run make docs.
func TestDocsUpToDate(t *testing.T) {
	t.Parallel()
	kinds, err := Kinds()
	if err != nil {
		t.Fatal(err)
	}
	steps, err := Steps()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "docs", "kargo-compatibility.md")
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run make docs", err)
	}
	if want := Render(kinds, steps); !bytes.Equal(have, want) {
		t.Fatalf("%s is stale: run make docs and commit the result", path)
	}
}

func TestTablesParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		data string
		ok   bool
	}{
		{"valid", "- name: A\n  entries:\n    - {path: spec, status: acted}\n", true},
		{"unknown status", "- name: A\n  entries:\n    - {path: spec, status: maybe}\n", false},
		{"warned without note", "- name: A\n  entries:\n    - {path: spec, status: warned}\n", false},
		{"twice", "- name: A\n  entries:\n    - {path: spec, status: acted}\n    - {path: spec, status: acted}\n", false},
		{"unknown key", "- name: A\n  entries:\n    - {path: spec, status: acted, why: x}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTable("t.yaml", []byte(tc.data))
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func TestCovers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		prefix, path string
		want         bool
	}{
		{"spec", "spec.interval", true},
		{"spec.sub", "spec.subscriptions", false},
		{"spec.subscriptions", "spec.subscriptions[].git", true},
		{"status.holds", "status.holds{}.origin", true},
		{"a.b", "a.b", true},
	} {
		if got := Covers(tc.prefix, tc.path); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v", tc.prefix, tc.path, got)
		}
	}
	if got := Generic(`spec.subscriptions[0].git.x[12]["a.b"]`); got != `spec.subscriptions[].git.x[]["a.b"]` {
		t.Errorf("Generic = %s", got)
	}
}
