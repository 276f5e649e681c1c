package gitmirror

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

func TestMirrorFetchesIncrementallyAndChecksOut(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t, testenv.WithBasicAuth("u", "p4ssw0rd-xyz"))
	url := g.CreateRepo(t, "app")
	first := g.Seed(t, "app", map[string]string{"a.txt": "one"}, "first")
	g.Tag(t, "app", "v1", first)
	m, err := NewManager(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	auth := &Auth{Username: "u", Password: "p4ssw0rd-xyz"}
	ctx := context.Background()
	mi, err := m.Sync(ctx, "demo", url, auth)
	if err != nil {
		t.Fatal(err)
	}
	// Up to date: one ref advertisement, no pack.
	before := g.Requests()
	if _, err := m.Sync(ctx, "demo", url, auth); err != nil {
		t.Fatal(err)
	}
	if n := g.Requests() - before; n != 1 {
		t.Fatalf("an up-to-date fetch made %d requests, want 1", n)
	}
	second := g.Seed(t, "app", map[string]string{"a.txt": "two"}, "second")
	if _, err := m.Sync(ctx, "demo", url, auth); err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]CheckoutOptions{
		"branch": {Branch: "main"},
		"commit": {Commit: first},
		"tag":    {Tag: "v1"},
	} {
		dir := filepath.Join(t.TempDir(), name)
		r, err := mi.Checkout(ctx, dir, o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, head := "one", first
		if name == "branch" {
			want, head = "two", second
		}
		got, _ := os.ReadFile(filepath.Join(dir, "a.txt"))
		if string(got) != want || r.Head().String() != head {
			t.Fatalf("%s: a.txt %q at %s, want %q at %s", name, got, r.Head(), want, head)
		}
	}
	if _, err := mi.Checkout(ctx, t.TempDir(), CheckoutOptions{Branch: "nope"}); err == nil {
		t.Fatal("a missing branch checked out without create")
	}
	if _, err := m.Sync(ctx, "demo", url, &Auth{Username: "u", Password: "wrong-secret-456"}); err == nil {
		t.Fatal("wrong credentials fetched")
	} else if s := err.Error(); strings.Contains(s, "wrong-secret-456") {
		t.Fatalf("the password is in the error: %s", s)
	}
}
