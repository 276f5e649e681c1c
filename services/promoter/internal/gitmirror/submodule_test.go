package gitmirror

import (
	"errors"
	"testing"
	"time"
)

func TestResolveSubmoduleURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ repo, sub, want string }{
		{"https://git.example.com/acme/app.git", "https://git.example.com/acme/lib.git", "https://git.example.com/acme/lib.git"},
		{"https://git.example.com/acme/app", "../lib", "https://git.example.com/acme/lib"},
		{"https://git.example.com/acme/app/", "./vendor/lib", "https://git.example.com/acme/app/vendor/lib"},
		{"https://git.example.com/acme/app", "../../other/lib.git", "https://git.example.com/other/lib.git"},
	} {
		got, err := resolveSubmoduleURL(tt.repo, tt.sub)
		if err != nil || got != tt.want {
			t.Errorf("resolveSubmoduleURL(%q, %q) = %q, %v; want %q", tt.repo, tt.sub, got, err, tt.want)
		}
	}
}

// An annotated tag stays in the work tree until PushTag; a tag the remote
// has, or the work tree made already, is ErrTagExists unless force.
func TestTagAndPushTag(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t, map[string]string{"a.txt": "a\n"})
	f.git.Tag(t, "app", "v0", f.git.Head(t, "app"))
	r := f.checkout(t, CheckoutOptions{Branch: "main"})
	sig := Signature{Name: "t", Email: "t@example.invalid", When: time.Unix(1_700_000_000, 0)}
	if _, err := r.Tag("v0", "again", sig, false); !errors.Is(err, ErrTagExists) {
		t.Fatalf("a tag the remote has: %v", err)
	}
	if _, err := r.Tag("v1", "", sig, false); err == nil {
		t.Fatal("a tag without message")
	}
	h, err := r.Tag("v1", "Release 1", sig, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Tag("v1", "twice", sig, false); !errors.Is(err, ErrTagExists) {
		t.Fatalf("a tag made twice: %v", err)
	}
	if err := r.PushTag(t.Context(), "v2"); err == nil {
		t.Fatal("pushed a tag the work tree does not have")
	}
	if err := r.PushTag(t.Context(), "v1"); err != nil {
		t.Fatal(err)
	}
	if got := f.git.Run(t, f.git.Path("app"), "rev-parse", "refs/tags/v1"); got != h.String() {
		t.Fatalf("remote tag v1 at %s, want the tag object %s", got, h)
	}
	// Pushing it again (a replay after a crash) is no error.
	if err := r.PushTag(t.Context(), "v1"); err != nil {
		t.Fatalf("the same tag again: %v", err)
	}
	// A tag replaced with force is refused by the remote's.
	if _, err := r.Tag("v1", "moved", sig, true); err != nil {
		t.Fatal(err)
	}
	if err := r.PushTag(t.Context(), "v1"); !errors.Is(err, ErrTagExists) {
		t.Fatalf("a different tag over the remote's: %v", err)
	}
}
