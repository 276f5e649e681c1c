package gitrepo_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery/internal/gitrepo"
)

func ids(res model.GitDiscoveryResult) []string {
	out := make([]string, len(res.Commits))
	for i, c := range res.Commits {
		out[i] = c.ID
		if c.Tag != "" {
			out[i] = c.Tag
		}
	}
	return out
}

func TestStrategiesAndFilters(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t, testenv.WithBasicAuth("bot", "pw"))
	url := g.CreateRepo(t, "app")
	c1 := g.Seed(t, "app", map[string]string{"README.md": "1"}, "docs: readme")
	c2 := g.Seed(t, "app", map[string]string{"charts/app/values.yaml": "v: 2"}, "feat: chart")
	c3 := g.Seed(t, "app", map[string]string{"src/main.go": "package main"}, "fix: code")
	c4 := g.Seed(t, "app", map[string]string{"src/main_test.go": "package main"}, "test: more")
	g.Tag(t, "app", "v1.0.0", c1)
	g.Tag(t, "app", "v1.1.0", c2)
	g.Tag(t, "app", "v1.10.0", c3)
	g.Tag(t, "app", "v2.0.0-rc.1", c4)
	g.Tag(t, "app", "nightly", c4)
	// An annotated tag made "later" than every commit.
	cmd := exec.Command("git", "tag", "-a", "-m", "release two", "v0.9.0", c2)
	cmd.Dir = g.Path("app")
	cmd.Env = append(testenv.GitEnv(t.TempDir()), "GIT_COMMITTER_DATE=2030-01-01T00:00:00Z")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}

	cr := &creds.Credentials{Username: "bot", Password: "pw"}
	c := gitrepo.New(t.TempDir())
	tests := []struct {
		name string
		sub  model.GitSubscription
		want []string
	}{
		{"branch", model.GitSubscription{}, []string{c4, c3, c2, c1}},
		{"branch limit", model.GitSubscription{Branch: "main", DiscoveryLimit: 2}, []string{c4, c3}},
		{"include prefix", model.GitSubscription{IncludePaths: []string{"src"}}, []string{c4, c3}},
		{"include glob, exclude regex", model.GitSubscription{IncludePaths: []string{"glob:src/*.go"}, ExcludePaths: []string{`regex:_test\.go$`}}, []string{c3}},
		{"include exact", model.GitSubscription{IncludePaths: []string{"charts/app/values.yaml"}}, []string{c2}},
		{"glob doublestar", model.GitSubscription{IncludePaths: []string{"glob:**/values.yaml"}}, []string{c2}},
		{"expression on commits", model.GitSubscription{ExpressionFilter: `subject startsWith 'fix' || subject startsWith 'feat'`}, []string{c3, c2}},
		{"semver", model.GitSubscription{CommitSelectionStrategy: model.CommitSelectionStrategySemVer, StrictSemvers: true}, []string{"v2.0.0-rc.1", "v1.10.0", "v1.1.0", "v1.0.0", "v0.9.0"}},
		{"semver constraint", model.GitSubscription{CommitSelectionStrategy: model.CommitSelectionStrategySemVer, SemverConstraint: "~1.1", StrictSemvers: true}, []string{"v1.1.0"}},
		{"lexical allow", model.GitSubscription{CommitSelectionStrategy: model.CommitSelectionStrategyLexical, AllowTagsRegexes: []string{`^v1`}}, []string{"v1.10.0", "v1.1.0", "v1.0.0"}},
		{"lexical ignore", model.GitSubscription{CommitSelectionStrategy: model.CommitSelectionStrategyLexical, IgnoreTagsRegexes: []string{`^v`}}, []string{"nightly"}},
		{"tag expression", model.GitSubscription{CommitSelectionStrategy: model.CommitSelectionStrategyLexical, ExpressionFilter: `annotation == 'release two' && tagger contains 'Caravan' && creatorDate.Year() == 2030`}, []string{"v0.9.0"}},
		{"since the past keeps all", model.GitSubscription{Since: "2000-01-01T00:00:00Z"}, []string{c4, c3, c2, c1}},
		{"since the future drops old commits", model.GitSubscription{Since: "2029-01-01T00:00:00Z"}, nil},
		{"since keeps newer tags", model.GitSubscription{CommitSelectionStrategy: model.CommitSelectionStrategySemVer, StrictSemvers: true, Since: "2029-01-01T00:00:00Z"}, []string{"v0.9.0"}},
		{"tag paths", model.GitSubscription{CommitSelectionStrategy: model.CommitSelectionStrategySemVer, StrictSemvers: true, IncludePaths: []string{"charts"}}, []string{"v1.1.0", "v0.9.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := tt.sub
			sub.RepoURL = url
			res, err := c.Discover(t.Context(), "p", sub, cr)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(res); !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	// NewestTag orders by creation: the annotated tag was made last.
	res, err := c.Discover(t.Context(), "p", model.GitSubscription{RepoURL: url, CommitSelectionStrategy: model.CommitSelectionStrategyNewestTag, DiscoveryLimit: 1}, cr)
	if err != nil || len(res.Commits) != 1 || res.Commits[0].Tag != "v0.9.0" || res.Commits[0].ID != c2 {
		t.Fatalf("newest tag: %+v, %v", res.Commits, err)
	}
}

// Unchanged refs cost one ls-remote and no fetch; a new commit costs one
// incremental fetch; a hinted refresh costs one fetch and no ls-remote.
func TestMirrorFetchesOnlyOnChange(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t)
	url := g.CreateRepo(t, "mirror")
	g.Seed(t, "mirror", map[string]string{"a": "1"}, "one")
	c := gitrepo.New(t.TempDir())
	sub := model.GitSubscription{RepoURL: url}
	if _, err := c.Discover(t.Context(), "p", sub, nil); err != nil {
		t.Fatal(err)
	}
	ls, fetches := c.Stats()
	if ls != 1 || fetches != 1 {
		t.Fatalf("first discovery: %d ls-remote, %d fetches", ls, fetches)
	}
	before := g.Requests()
	if _, err := c.Discover(t.Context(), "p", sub, nil); err != nil {
		t.Fatal(err)
	}
	ls, fetches = c.Stats()
	if ls != 2 || fetches != 1 || g.Requests()-before != 1 {
		t.Fatalf("unchanged: %d ls-remote, %d fetches, %d requests", ls, fetches, g.Requests()-before)
	}
	head := g.Seed(t, "mirror", map[string]string{"a": "2"}, "two")
	res, err := c.Discover(t.Context(), "p", sub, nil)
	if err != nil || res.Commits[0].ID != head {
		t.Fatalf("after a push: %+v, %v", res.Commits, err)
	}
	if _, fetches = c.Stats(); fetches != 2 {
		t.Fatalf("%d fetches, want 2", fetches)
	}
	head = g.Seed(t, "mirror", map[string]string{"a": "3"}, "three")
	res, err = c.Refresh(t.Context(), "p", sub, nil, []string{head})
	if err != nil || res.Commits[0].ID != head {
		t.Fatalf("hinted: %+v, %v", res.Commits, err)
	}
	if ls, fetches = c.Stats(); ls != 3 || fetches != 3 {
		t.Fatalf("hinted refresh: %d ls-remote, %d fetches; want 3, 3", ls, fetches)
	}
}

func TestAuthErrors(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t, testenv.WithBasicAuth("bot", "pw"))
	url := g.CreateRepo(t, "secret")
	g.Seed(t, "secret", map[string]string{"a": "1"}, "one")
	c := gitrepo.New(t.TempDir())
	_, err := c.Discover(t.Context(), "p", model.GitSubscription{RepoURL: url}, nil)
	if !errors.Is(err, transport.ErrAuthenticationRequired) || !strings.Contains(gitrepo.Explain(err), "401") {
		t.Fatalf("no credentials: %v", err)
	}
	_, err = c.Discover(t.Context(), "p", model.GitSubscription{RepoURL: g.URL("nothing")}, &creds.Credentials{Username: "bot", Password: "pw"})
	if err == nil {
		t.Fatal("missing repository: no error")
	}
}

// TestMirrorsPerProjectAndCredentials: project A's mirror of a private
// repository, fetched with A's credentials, never answers project B: B
// without credentials gets the server's 401 even right after A's
// discovery, and the mirrors live apart. Local repository URLs are
// refused before anything is read.
func TestMirrorsPerProjectAndCredentials(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t, testenv.WithBasicAuth("bot", "pw"))
	url := g.CreateRepo(t, "private")
	head := g.Seed(t, "private", map[string]string{"a": "1"}, "one")
	dir := t.TempDir()
	// A mirror of the old, shared layout (a bare repository right below
	// dir) is removed when the client starts.
	legacy := filepath.Join(dir, "0a1b2c3d4e5f60718293a4b5")
	if err := os.MkdirAll(legacy, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(legacy, "HEAD"), []byte("ref: refs/heads/main\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := gitrepo.New(dir)
	if _, err := os.Stat(legacy); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("shared mirror of the old layout kept: %v", err)
	}
	sub := model.GitSubscription{RepoURL: url}
	a := &creds.Credentials{Username: "bot", Password: "pw"}

	res, err := c.Discover(t.Context(), "team-a", sub, a)
	if err != nil || len(res.Commits) == 0 || res.Commits[0].ID != head {
		t.Fatalf("project A: %+v %v", res, err)
	}
	for _, refresh := range []bool{false, true} {
		var err error
		if refresh {
			_, err = c.Refresh(t.Context(), "team-b", sub, nil, []string{head})
		} else {
			_, err = c.Discover(t.Context(), "team-b", sub, nil)
		}
		if !errors.Is(err, transport.ErrAuthenticationRequired) {
			t.Fatalf("project B without credentials (refresh %v): %v", refresh, err)
		}
	}
	paths := map[string]bool{
		c.MirrorPath("team-a", url, a):   true,
		c.MirrorPath("team-b", url, a):   true,
		c.MirrorPath("team-a", url, nil): true,
		c.MirrorPath("team-a", url, &creds.Credentials{Username: "bot", Password: "other"}): true,
	}
	if len(paths) != 4 {
		t.Fatalf("mirrors shared between projects or credentials: %v", paths)
	}
	if !strings.HasPrefix(c.MirrorPath("team-a", url, a), filepath.Join(dir, "team-a")+string(filepath.Separator)) {
		t.Fatalf("mirror %s is not below the project's folder", c.MirrorPath("team-a", url, a))
	}
	if p := c.MirrorPath("../../etc", url, nil); !strings.HasPrefix(p, dir+string(filepath.Separator)) || strings.Contains(p, "..") {
		t.Fatalf("a bad project name escapes: %s", p)
	}

	mirror := c.MirrorPath("team-a", url, a)
	for _, local := range []string{"file://" + mirror, mirror, "../team-a/" + filepath.Base(mirror)} {
		_, err := c.Discover(t.Context(), "team-b", model.GitSubscription{RepoURL: local}, nil)
		if !errors.Is(err, model.ErrRepoURL) {
			t.Fatalf("local repository %q: %v", local, err)
		}
	}
}
