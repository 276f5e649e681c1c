package gitdiff

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

func TestDiffAndLog(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t, testenv.WithBasicAuth("git", "s3cret"))
	url := g.CreateRepo(t, "deploy")
	c1 := g.Seed(t, "deploy", map[string]string{"overlays/prod/kustomization.yaml": "images:\n- name: app\n  newTag: 1.0.0\n", "README.md": "hi\n"}, "first")
	c2 := g.Seed(t, "deploy", map[string]string{"overlays/prod/kustomization.yaml": "images:\n- name: app\n  newTag: 1.0.1\n"}, "promote prod to 1.0.1")
	c3 := g.Seed(t, "deploy", map[string]string{"README.md": "hello\n"}, "docs")
	auth := &Auth{Username: "git", Password: "s3cret"}
	r := NewReader(8)
	ctx := context.Background()

	d, err := r.Diff(ctx, url, c2, auth)
	if err != nil {
		t.Fatal(err)
	}
	if d.Parent != c1 || !strings.Contains(d.Message, "promote prod") || len(d.Files) != 1 || d.Files[0].Path != "overlays/prod/kustomization.yaml" ||
		d.Files[0].Additions != 1 || d.Files[0].Deletions != 1 {
		t.Errorf("diff: %+v", d)
	}
	if !strings.Contains(d.Patch, "-  newTag: 1.0.0") || !strings.Contains(d.Patch, "+  newTag: 1.0.1") {
		t.Errorf("patch:\n%s", d.Patch)
	}
	// Cached: a second read needs no request.
	before := g.Requests()
	if _, err := r.Diff(ctx, url, c2, auth); err != nil || g.Requests() != before {
		t.Errorf("cached diff: %v, %d requests", err, g.Requests()-before)
	}
	// A cached diff of a private repository is not served to a caller
	// without its credentials (another project): it must fetch, and fails.
	for _, other := range []*Auth{nil, {Username: "git", Password: "guess"}} {
		if _, err := r.Diff(ctx, url, c2, other); err == nil {
			t.Errorf("cached diff served to other credentials %+v", other)
		}
	}
	// The first commit diffs against nothing.
	if d, err := r.Diff(ctx, url, c1, auth); err != nil || d.Parent != "" || len(d.Files) != 2 {
		t.Errorf("root commit: %+v %v", d, err)
	}
	cs, err := r.Log(ctx, url, c1, c3, auth, 10)
	if err != nil || len(cs) != 2 || cs[0].ID != c3 || cs[1].ID != c2 || cs[1].Message != "promote prod to 1.0.1" {
		t.Errorf("log: %+v %v", cs, err)
	}
	if cs, err := r.Log(ctx, url, c1, c3, auth, 1); err != nil || len(cs) != 1 {
		t.Errorf("log limit: %+v %v", cs, err)
	}
	for _, bad := range []string{"0000000000000000000000000000000000000000", "not-a-sha"} {
		if _, err := r.Diff(ctx, url, bad, auth); !errors.Is(err, ErrNotFound) {
			t.Errorf("diff %s: %v", bad, err)
		}
	}
	if _, err := r.Diff(ctx, url, c3, &Auth{Username: "git", Password: "wrong"}); err == nil || strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong credentials: %v", err)
	}
}

func TestCapped(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	w := &capped{w: &b, left: 5}
	if _, err := w.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("defg")); !errors.Is(err, errCapped) || b.String() != "abcde" || !w.cut {
		t.Errorf("capped: %q %v", b.String(), err)
	}
}
