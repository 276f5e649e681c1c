package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/go-git/go-git/v5/plumbing"
)

// repoFixture is a git server with one seeded repository and a manager.
type repoFixture struct {
	git  *testenv.Git
	url  string
	m    *Manager
	auth *Auth
}

func newRepoFixture(t *testing.T, files map[string]string) *repoFixture {
	t.Helper()
	g := testenv.GitServer(t, testenv.WithBasicAuth("u", "pw-123456"))
	url := g.CreateRepo(t, "app")
	g.Seed(t, "app", files, "init")
	m, err := NewManager(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &repoFixture{git: g, url: url, m: m, auth: &Auth{Username: "u", Password: "pw-123456"}}
}

// checkout syncs the mirror and checks main out into a new directory.
func (f *repoFixture) checkout(t *testing.T, o CheckoutOptions) *Repo {
	t.Helper()
	mi, err := f.m.Sync(t.Context(), "demo", f.url, f.auth)
	if err != nil {
		t.Fatal(err)
	}
	r, err := mi.Checkout(t.Context(), filepath.Join(t.TempDir(), "src"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func write(t *testing.T, r *Repo, name, content string) {
	t.Helper()
	p := filepath.Join(r.Dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func commit(t *testing.T, r *Repo, msg string) {
	t.Helper()
	h, err := r.Commit(msg, Signature{Name: "t", Email: "t@example.invalid", When: time.Unix(1_700_000_000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if h.IsZero() {
		t.Fatalf("%s: nothing to commit", msg)
	}
}

func (f *repoFixture) count(t *testing.T) int {
	t.Helper()
	var n int
	_, _ = fmt.Sscan(f.git.Run(t, f.git.Path("app"), "rev-list", "--count", "main"), &n)
	return n
}

func TestConcurrentPushesAllLand(t *testing.T) {
	t.Parallel()
	const n = 20
	files := map[string]string{"shared.yaml": ""}
	for i := range n {
		files[fmt.Sprintf("env/s%02d/values.yaml", i)] = "tag: 1.0.0\n"
		files["shared.yaml"] += fmt.Sprintf("s%02d: 1.0.0\n\n", i)
	}
	f := newRepoFixture(t, files)
	repos := make([]*Repo, n)
	for i := range n {
		repos[i] = f.checkout(t, CheckoutOptions{Branch: "main"})
		// Each changes its own file and its own line of a shared file.
		write(t, repos[i], fmt.Sprintf("env/s%02d/values.yaml", i), "tag: 2.0.0\n")
		shared, _ := os.ReadFile(filepath.Join(repos[i].Dir, "shared.yaml"))
		write(t, repos[i], "shared.yaml", strings.Replace(string(shared), fmt.Sprintf("s%02d: 1.0.0", i), fmt.Sprintf("s%02d: 2.0.0", i), 1))
		commit(t, repos[i], fmt.Sprintf("promote s%02d", i))
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, r := range repos {
		wg.Go(func() {
			_, errs[i] = r.Push(t.Context(), "main", false, 10)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("push %d: %v", i, err)
		}
	}
	if got := f.count(t); got != n+1 {
		t.Fatalf("main has %d commits, want %d (one per push)", got, n+1)
	}
	shared := f.git.Show(t, "app", "main", "shared.yaml")
	for i := range n {
		if got := f.git.Show(t, "app", "main", fmt.Sprintf("env/s%02d/values.yaml", i)); got != "tag: 2.0.0" {
			t.Errorf("s%02d: %q", i, got)
		}
		if !strings.Contains(shared, fmt.Sprintf("s%02d: 2.0.0", i)) {
			t.Errorf("shared.yaml lost s%02d's change:\n%s", i, shared)
		}
	}
	// A work tree follows its replayed commit.
	for _, r := range repos {
		if clean, err := r.Clean(); err != nil || !clean {
			t.Fatalf("work tree after push: clean %v, %v", clean, err)
		}
	}
}

func TestTwoLocalCommitsOnOneFileReplay(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t, map[string]string{"values.yaml": "a: 1\nb: 1\nc: 1\nd: 1\ne: 1\n"})
	r := f.checkout(t, CheckoutOptions{Branch: "main"})
	// Another work tree pushes first: the queue knows the branch's tip
	// and the server's capabilities, and the next push goes without an
	// advertisement.
	r0 := f.checkout(t, CheckoutOptions{Branch: "main"})
	write(t, r0, "other.txt", "x\n")
	commit(t, r0, "other")
	if _, err := r0.Push(t.Context(), "main", false, 5); err != nil {
		t.Fatal(err)
	}
	write(t, r, "values.yaml", "a: 2\nb: 1\nc: 1\nd: 1\ne: 1\n")
	commit(t, r, "first")
	write(t, r, "values.yaml", "a: 3\nb: 1\nc: 1\nd: 1\ne: 1\n")
	commit(t, r, "second")
	// The branch moves on behind the queue's back: another line of the
	// same file. The push is refused, fetched and replayed.
	f.git.Seed(t, "app", map[string]string{"values.yaml": "a: 1\nb: 1\nc: 1\nd: 1\ne: 9\n"}, "elsewhere")
	if _, err := r.Push(t.Context(), "main", false, 5); err != nil {
		t.Fatalf("push: %v", err)
	}
	if got := f.git.Show(t, "app", "main", "values.yaml"); got != "a: 3\nb: 1\nc: 1\nd: 1\ne: 9" {
		t.Fatalf("values.yaml:\n%s", got)
	}
	if got := f.git.Run(t, f.git.Path("app"), "log", "--format=%s", "main"); got != "second\nfirst\nelsewhere\nother\ninit" {
		t.Fatalf("history:\n%s", got)
	}
}

func TestSameLineConflictIsTerminal(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t, map[string]string{"values.yaml": "tag: 1\nother: 1\n"})
	r := f.checkout(t, CheckoutOptions{Branch: "main"})
	write(t, r, "values.yaml", "tag: 2\nother: 1\n")
	commit(t, r, "promote")
	head := f.git.Seed(t, "app", map[string]string{"values.yaml": "tag: 3\nother: 1\n"}, "by hand")
	_, err := r.Push(t.Context(), "main", false, 5)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "values.yaml") {
		t.Fatalf("push: %v, want a conflict on values.yaml", err)
	}
	if got := f.git.Head(t, "app"); got != head {
		t.Fatal("a conflicting push moved main")
	}
}

func TestReplayPushesNoEmptyCommit(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t, map[string]string{"values.yaml": "tag: 1\n"})
	// A promotion pushed, then died before it recorded the push; others
	// pushed after it.
	first := f.checkout(t, CheckoutOptions{Branch: "main"})
	write(t, first, "values.yaml", "tag: 2\n")
	commit(t, first, "promote")
	if _, err := first.Push(t.Context(), "main", false, 5); err != nil {
		t.Fatal(err)
	}
	f.git.Seed(t, "app", map[string]string{"other.yaml": "x\n"}, "someone else")
	before := f.count(t)
	// Resumed, it makes the same change again with a commit of another
	// time (its hash differs) on the commit it started from.
	mi, err := f.m.Sync(t.Context(), "demo", f.url, f.auth)
	if err != nil {
		t.Fatal(err)
	}
	start := f.git.Run(t, f.git.Path("app"), "rev-parse", "main~2")
	old, err := mi.Checkout(t.Context(), filepath.Join(t.TempDir(), "old"), CheckoutOptions{Branch: "main", Commit: start})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	write(t, old, "values.yaml", "tag: 2\n")
	if _, err := old.Commit("promote", Signature{Name: "t", Email: "t@example.invalid", When: time.Unix(1_800_000_000, 0)}); err != nil {
		t.Fatal(err)
	}
	h, err := old.Push(t.Context(), "main", false, 5)
	if err != nil {
		t.Fatalf("replayed push: %v", err)
	}
	if got := f.count(t); got != before {
		t.Fatalf("the replayed push added %d commits", got-before)
	}
	if h.String() != f.git.Head(t, "app") {
		t.Fatalf("push returned %s, main is %s", h, f.git.Head(t, "app"))
	}
}

func TestSparseCheckout(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t, map[string]string{"env/dev/v.yaml": "a\n", "env/prod/v.yaml": "b\n", "README.md": "r\n"})
	r := f.checkout(t, CheckoutOptions{Branch: "main", Sparse: []string{"./env/dev"}})
	if _, err := os.Stat(filepath.Join(r.Dir, "env", "prod", "v.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file outside the sparse checkout was written: %v", err)
	}
	write(t, r, "env/dev/v.yaml", "a2\n")
	commit(t, r, "dev")
	if _, err := r.Push(t.Context(), "main", false, 5); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"env/dev/v.yaml": "a2", "env/prod/v.yaml": "b", "README.md": "r"} {
		if got := f.git.Show(t, "app", "main", p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	mi, _ := f.m.Sync(t.Context(), "demo", f.url, f.auth)
	for _, bad := range []string{"../x", "/etc", "env/*"} {
		if _, err := mi.Checkout(t.Context(), t.TempDir(), CheckoutOptions{Branch: "main", Sparse: []string{bad}}); err == nil {
			t.Errorf("sparse %q was accepted", bad)
		}
	}
}

func TestCommitDetectsChangesAndIgnores(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t, map[string]string{"a.txt": "one\n", ".gitignore": "*.tmp\nbuild/\n", "run.sh": "#!/bin/sh\n"})
	r := f.checkout(t, CheckoutOptions{Branch: "main"})
	if clean, err := r.Clean(); err != nil || !clean {
		t.Fatalf("fresh checkout: clean %v, %v", clean, err)
	}
	// Same size, written within the same clock tick as the checkout.
	write(t, r, "a.txt", "two\n")
	write(t, r, "x.tmp", "ignored\n")
	write(t, r, "build/out.yaml", "ignored\n")
	if err := os.Chmod(filepath.Join(r.Dir, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	commit(t, r, "change")
	if _, err := r.Push(t.Context(), "main", false, 5); err != nil {
		t.Fatal(err)
	}
	if got := f.git.Show(t, "app", "main", "a.txt"); got != "two" {
		t.Fatalf("a.txt = %q", got)
	}
	if got := f.git.Run(t, f.git.Path("app"), "ls-tree", "--name-only", "-r", "main"); got != ".gitignore\na.txt\nrun.sh" {
		t.Fatalf("files on main:\n%s", got)
	}
	if got := f.git.Run(t, f.git.Path("app"), "ls-tree", "main", "run.sh"); !strings.HasPrefix(got, "100755") {
		t.Fatalf("run.sh lost its executable bit: %s", got)
	}
	if h, err := r.Commit("nothing", Signature{}); err != nil || !h.IsZero() {
		t.Fatalf("a commit without changes: %s, %v", h, err)
	}
}

func TestMirrorsKeyedByProjectAndCredentials(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t, map[string]string{"a.txt": "x\n"})
	ctx := t.Context()
	a, err := f.m.Sync(ctx, "team-a", f.url, f.auth)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.m.Sync(ctx, "team-a", f.url, f.auth)
	if err != nil {
		t.Fatal(err)
	}
	if a != again {
		t.Fatal("one project's mirror of one repository with the same credentials was not reused")
	}
	b, err := f.m.Sync(ctx, "team-b", f.url, f.auth)
	if err != nil {
		t.Fatal(err)
	}
	if a == b || a.dir == b.dir {
		t.Fatal("two projects share a mirror")
	}
	// Other credentials never reuse what a fetch with these brought.
	if _, err := f.m.Sync(ctx, "team-a", f.url, &Auth{Username: "u", Password: "wrong-pw-987"}); err == nil {
		t.Fatal("a fetch with wrong credentials was served from the mirror fetched with the right ones")
	}
	if _, err := f.m.Sync(ctx, "team-a", f.url, nil); err == nil {
		t.Fatal("an anonymous fetch was served from the mirror fetched with credentials")
	}
	// Directory names tell nothing about the credentials.
	entries, _ := os.ReadDir(f.m.dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), "pw-123456") || strings.Contains(e.Name(), "team") {
			t.Fatalf("mirror directory %q", e.Name())
		}
	}
}

func TestMirrorsEvictedBeyondBudget(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t)
	dir := t.TempDir()
	// A budget of about one mirror.
	m, err := NewManager(dir, Options{MaxBytes: 1, CacheMaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var urls []string
	for i := range 3 {
		name := fmt.Sprintf("r%d", i)
		urls = append(urls, g.CreateRepo(t, name))
		g.Seed(t, name, map[string]string{"a.txt": strings.Repeat("x", 4096)}, "init")
	}
	first, err := m.Sync(ctx, "p", urls[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	// A mirror a work tree uses stays.
	r, err := first.Checkout(ctx, filepath.Join(t.TempDir(), "w"), CheckoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Sync(ctx, "p", urls[1], nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(first.dir); err != nil {
		t.Fatalf("a mirror in use was deleted: %v", err)
	}
	r.Close()
	if _, err := m.Sync(ctx, "p", urls[2], nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(first.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the least recently used idle mirror is still on disk: %v", err)
	}
	if got := m.Bytes(); got == 0 {
		t.Fatal("the newest mirror was evicted too")
	}
	// An evicted mirror is fetched again when needed.
	if _, err := m.Sync(ctx, "p", urls[0], nil); err != nil {
		t.Fatal(err)
	}
	// A restarted manager counts the mirrors on disk against its budget.
	m2, err := NewManager(dir, Options{MaxBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(m2.cold); n > 1 {
		t.Fatalf("a new manager kept %d mirrors over its budget", n)
	}
	if m.CacheBytes() > 1<<20 {
		t.Fatalf("the object cache holds %d bytes over its budget", m.CacheBytes())
	}
}

func TestCachedObjectsStayWithTheirMirror(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t, map[string]string{"secret.txt": "team a only\n"})
	ctx := t.Context()
	a, err := f.m.Sync(ctx, "team-a", f.url, f.auth)
	if err != nil {
		t.Fatal(err)
	}
	head := a.Ref("refs/heads/main")
	if _, err := a.store.get(head); err != nil {
		t.Fatal(err)
	}
	other := f.git.CreateRepo(t, "other")
	f.git.Seed(t, "other", map[string]string{"x": "y\n"}, "init")
	b, err := f.m.Sync(ctx, "team-b", other, f.auth)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.store.get(head); !errors.Is(err, plumbing.ErrObjectNotFound) {
		t.Fatalf("team b's mirror read team a's cached commit: %v", err)
	}
}

// A push the remote accepted moves the mirror's branch with it: the next
// sync finds the branch where the push left it and downloads nothing (one
// request: the advertisement), and a checkout starts at the pushed commit.
// A branch another writer moved is fetched as before.
func TestPushAdvancesMirror(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t, map[string]string{"a.txt": "a\n"})
	r := f.checkout(t, CheckoutOptions{Branch: "main"})
	write(t, r, "a.txt", "b\n")
	commit(t, r, "b")
	pushed, err := r.Push(t.Context(), "main", false, 5)
	if err != nil {
		t.Fatal(err)
	}
	before := f.git.Requests()
	next := f.checkout(t, CheckoutOptions{Branch: "main"})
	if n := f.git.Requests() - before; n != 1 {
		t.Errorf("sync after the push: %d requests, want 1", n)
	}
	if next.Head() != pushed {
		t.Fatalf("checkout at %s, want the pushed %s", next.Head(), pushed)
	}
	if b, err := os.ReadFile(filepath.Join(next.Dir, "a.txt")); err != nil || string(b) != "b\n" {
		t.Fatalf("a.txt = %q, %v", b, err)
	}
	other := f.git.Seed(t, "app", map[string]string{"c.txt": "c\n"}, "another writer")
	moved := f.checkout(t, CheckoutOptions{Branch: "main"})
	if moved.Head().String() != other {
		t.Fatalf("checkout at %s after another writer, want %s", moved.Head(), other)
	}
}

// TestPushDuringFetchIsRecorded: a push accepted while a fetch holds the
// mirror (one that began before the push) is recorded when that fetch
// ends, so the fetch after it downloads nothing.
func TestPushDuringFetchIsRecorded(t *testing.T) {
	t.Parallel()
	f := newRepoFixture(t, map[string]string{"a.txt": "a\n"})
	r := f.checkout(t, CheckoutOptions{Branch: "main"})
	write(t, r, "a.txt", "b\n")
	commit(t, r, "b")
	mi := r.mirror
	mi.fetchMu.Lock() // a fetch in progress
	pushed, err := r.Push(t.Context(), "main", false, 5)
	if err != nil {
		mi.fetchMu.Unlock()
		t.Fatal(err)
	}
	if mi.Ref(plumbing.NewBranchReferenceName("main")) == pushed {
		t.Error("the push was recorded while a fetch held the mirror")
	}
	mi.recordDeferred() // as that fetch does when it ends
	mi.fetchMu.Unlock()
	before := f.git.Requests()
	next := f.checkout(t, CheckoutOptions{Branch: "main"})
	if n := f.git.Requests() - before; n != 1 {
		t.Errorf("sync after the push: %d requests, want 1 (the advertisement)", n)
	}
	if next.Head() != pushed {
		t.Fatalf("checkout at %s, want the pushed %s", next.Head(), pushed)
	}
}
