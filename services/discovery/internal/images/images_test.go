package images_test

import (
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery/internal/images"
)

func tagsOf(refs []model.DiscoveredImageReference) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.Tag
	}
	return out
}

func TestDiscoverStrategies(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	digests := map[string]string{}
	for i, tag := range []string{"v1.0.0", "v1.2.0", "v2.0.0-rc.1", "latest", "1.1", "v1.10.0", "build-7"} {
		// Build dates do not follow version order: v1.0.0 is the newest build.
		created := base.Add(time.Duration(i) * time.Hour)
		if tag == "v1.0.0" {
			created = base.Add(100 * time.Hour)
		}
		digests[tag] = reg.PushImage(t, "team/app", tag, testenv.Created(created)).String()
	}
	repo := reg.Repo("team/app")
	tests := []struct {
		name string
		sub  model.ImageSubscription
		want []string
	}{
		{"semver strict", model.ImageSubscription{StrictSemvers: true}, []string{"v2.0.0-rc.1", "v1.10.0", "v1.2.0", "v1.0.0"}},
		{"semver lax", model.ImageSubscription{}, []string{"v2.0.0-rc.1", "v1.10.0", "v1.2.0", "1.1", "v1.0.0"}},
		{"semver constraint", model.ImageSubscription{StrictSemvers: true, Constraint: "^1.0.0"}, []string{"v1.10.0", "v1.2.0", "v1.0.0"}},
		{"deprecated semverConstraint", model.ImageSubscription{StrictSemvers: true, SemverConstraint: "<1.5"}, []string{"v1.2.0", "v1.0.0"}},
		{"semver ignore", model.ImageSubscription{StrictSemvers: true, IgnoreTagsRegexes: []string{`-rc`}, IgnoreTags: []string{"v1.2.0"}}, []string{"v1.10.0", "v1.0.0"}},
		{"semver limit", model.ImageSubscription{StrictSemvers: true, DiscoveryLimit: 2}, []string{"v2.0.0-rc.1", "v1.10.0"}},
		{"lexical", model.ImageSubscription{ImageSelectionStrategy: model.ImageSelectionStrategyLexical, AllowTagsRegexes: []string{`^v`}}, []string{"v2.0.0-rc.1", "v1.2.0", "v1.10.0", "v1.0.0"}},
		{"lexical allowTags", model.ImageSubscription{ImageSelectionStrategy: model.ImageSelectionStrategyLexical, AllowTags: `^b`}, []string{"build-7"}},
		{"newest build", model.ImageSubscription{ImageSelectionStrategy: model.ImageSelectionStrategyNewestBuild, DiscoveryLimit: 3}, []string{"v1.0.0", "build-7", "v1.10.0"}},
		{"digest", model.ImageSubscription{ImageSelectionStrategy: model.ImageSelectionStrategyDigest, Constraint: "latest"}, []string{"latest"}},
	}
	c := images.New(images.Options{Parallelism: 4})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sub := tt.sub
			sub.RepoURL = repo
			res, err := c.Discover(t.Context(), sub, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := tagsOf(res.References); !slices.Equal(got, tt.want) {
				t.Fatalf("tags %v, want %v", got, tt.want)
			}
			for _, r := range res.References {
				if r.Digest != digests[r.Tag] {
					t.Errorf("%s: digest %s, want %s", r.Tag, r.Digest, digests[r.Tag])
				}
			}
		})
	}
}

func TestPlatformThroughIndex(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	multi := reg.PushIndex(t, "team/multi", "v1.1.0", []string{"linux/amd64", "linux/arm64/v8"})
	reg.PushIndex(t, "team/multi", "v1.2.0", []string{"linux/amd64"})
	reg.PushImage(t, "team/multi", "v1.3.0") // random image: no platform in its config
	c := images.New(images.Options{})
	sub := model.ImageSubscription{RepoURL: reg.Repo("team/multi"), StrictSemvers: true, Platform: "linux/arm64/v8"}
	res, err := c.Discover(t.Context(), sub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := tagsOf(res.References); !slices.Equal(got, []string{"v1.1.0"}) {
		t.Fatalf("tags %v, want [v1.1.0]", got)
	}
	if res.References[0].Digest != multi.String() || res.Platform != "linux/arm64/v8" {
		t.Fatalf("got %+v, want the index digest %s", res, multi)
	}
	// Newest build over an index reads the platform's config blob.
	sub.ImageSelectionStrategy = model.ImageSelectionStrategyNewestBuild
	res, err = c.Discover(t.Context(), sub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.References) != 1 || res.References[0].CreatedAt == nil {
		t.Fatalf("newest build: %+v", res.References)
	}
}

func TestMetadataCachedByDigest(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	for i := range 30 {
		reg.PushImage(t, "team/cached", "t"+string(rune('a'+i%26))+string(rune('a'+i/26)), testenv.Created(time.Unix(int64(i)*3600, 0)))
	}
	c := images.New(images.Options{})
	sub := model.ImageSubscription{RepoURL: reg.Repo("team/cached"), ImageSelectionStrategy: model.ImageSelectionStrategyNewestBuild, DiscoveryLimit: 5}
	first, err := c.Discover(t.Context(), sub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if blobs := reg.Count(http.MethodGet, "/v2/team/cached/blobs/"); blobs != 30 {
		t.Fatalf("first discovery read %d config blobs, want 30", blobs)
	}
	reg.ResetRequests()
	second, err := c.Discover(t.Context(), sub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if blobs := reg.Count("", "/v2/team/cached/blobs/"); blobs != 0 {
		t.Fatalf("re-discovery of unchanged tags read %d blobs, want 0", blobs)
	}
	if !slices.Equal(tagsOf(first.References), tagsOf(second.References)) || c.CachedEntries() != 30 {
		t.Fatalf("first %v, second %v, cached %d", tagsOf(first.References), tagsOf(second.References), c.CachedEntries())
	}
}

func TestDigestStrategyFollowsTag(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	d1 := reg.PushImage(t, "team/mutable", "stable")
	c := images.New(images.Options{})
	sub := model.ImageSubscription{RepoURL: reg.Repo("team/mutable"), ImageSelectionStrategy: model.ImageSelectionStrategyDigest, Constraint: "stable"}
	res, err := c.Discover(t.Context(), sub, nil)
	if err != nil || len(res.References) != 1 || res.References[0].Digest != d1.String() {
		t.Fatalf("got %+v, %v; want %s", res, err, d1)
	}
	d2 := reg.PushImage(t, "team/mutable", "stable")
	res, err = c.Discover(t.Context(), sub, nil)
	if err != nil || res.References[0].Digest != d2.String() {
		t.Fatalf("after the move: %+v, %v; want %s", res, err, d2)
	}
	if _, err := c.Discover(t.Context(), model.ImageSubscription{RepoURL: sub.RepoURL, ImageSelectionStrategy: model.ImageSelectionStrategyDigest}, nil); err == nil {
		t.Fatal("Digest without a constraint: no error")
	}
}

// A hint costs at most two requests; a tag the filters reject costs none.
func TestEvaluateHintRequestCounts(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	c := images.New(images.Options{})
	tests := []struct {
		name      string
		sub       model.ImageSubscription
		tag       string
		withDig   bool
		wantTags  []string
		maxReqs   int
		wantNoReq bool
	}{
		{name: "semver with digest", sub: model.ImageSubscription{StrictSemvers: true}, tag: "v1.2.0", withDig: true, wantTags: []string{"v1.2.0", "v1.1.0", "v1.0.0"}},
		{name: "semver without digest", sub: model.ImageSubscription{StrictSemvers: true}, tag: "v1.3.0", wantTags: []string{"v1.3.0", "v1.1.0", "v1.0.0"}, maxReqs: 1},
		{name: "rejected by constraint", sub: model.ImageSubscription{StrictSemvers: true, Constraint: "<1.2"}, tag: "v1.4.0", wantTags: []string{"v1.1.0", "v1.0.0"}, wantNoReq: true},
		{name: "newest build", sub: model.ImageSubscription{ImageSelectionStrategy: model.ImageSelectionStrategyNewestBuild}, tag: "v0.9.0", wantTags: []string{"v0.9.0", "v1.1.0", "v1.0.0"}, maxReqs: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := "hint/" + strings.ReplaceAll(tt.name, " ", "-")
			for _, tag := range []string{"v1.0.0", "v1.1.0"} {
				reg.PushImage(t, repo, tag, testenv.Created(time.Now().Add(-time.Hour)))
			}
			sub := tt.sub
			sub.RepoURL = reg.Repo(repo)
			full, err := c.Discover(t.Context(), sub, nil)
			if err != nil {
				t.Fatal(err)
			}
			d := reg.PushImage(t, repo, tt.tag, testenv.Created(time.Now()))
			digest := ""
			if tt.withDig {
				digest = d.String()
			}
			reg.ResetRequests()
			next, _, err := c.Evaluate(t.Context(), sub, nil, full.References, tt.tag, digest)
			if err != nil {
				t.Fatal(err)
			}
			reqs := reg.Requests()
			if len(reqs) > tt.maxReqs || tt.wantNoReq && len(reqs) != 0 {
				t.Fatalf("%d requests %v, want at most %d", len(reqs), reqs, tt.maxReqs)
			}
			if got := tagsOf(next); !slices.Equal(got, tt.wantTags) {
				t.Fatalf("tags %v, want %v", got, tt.wantTags)
			}
			if next[0].Tag == tt.tag && next[0].Digest != d.String() {
				t.Fatalf("digest %s, want %s", next[0].Digest, d)
			}
		})
	}
}

// authRegistry is an in-process registry behind basic auth.
func authRegistry(t *testing.T, user, password string) *httptest.Server {
	t.Helper()
	backend := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestCredentialsAndErrors(t *testing.T) {
	t.Parallel()
	srv := authRegistry(t, "bot", "s3cret")
	host := strings.TrimPrefix(srv.URL, "http://")
	ref, err := name.NewTag(host+"/private/app:v1.0.0", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(512, 1)
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "bot", Password: "s3cret"})); err != nil {
		t.Fatal(err)
	}
	c := images.New(images.Options{})
	sub := model.ImageSubscription{RepoURL: host + "/private/app", StrictSemvers: true}
	res, err := c.Discover(t.Context(), sub, &creds.Credentials{Username: "bot", Password: "s3cret"})
	if err != nil || len(res.References) != 1 {
		t.Fatalf("with credentials: %+v, %v", res, err)
	}
	_, err = c.Discover(t.Context(), sub, nil)
	if err == nil || !strings.Contains(images.Explain(err), "401") {
		t.Fatalf("anonymous: %v (%s), want a 401 explanation", err, explain(err))
	}
	reg := testenv.Registry(t)
	_, err = c.Discover(t.Context(), model.ImageSubscription{RepoURL: reg.Repo("no/such")}, nil)
	if err == nil || !strings.Contains(images.Explain(err), "not found") {
		t.Fatalf("missing repo: %v (%s)", err, explain(err))
	}
	down := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(down.URL, "http://")
	down.Close()
	_, err = c.Discover(t.Context(), model.ImageSubscription{RepoURL: addr + "/x/y"}, nil)
	if err == nil || !strings.Contains(images.Explain(err), "unreachable") {
		t.Fatalf("registry down: %v (%s)", err, explain(err))
	}
}

func explain(err error) string {
	if err == nil {
		return ""
	}
	return images.Explain(err)
}

// cacheByTag declares tags immutable: a refresh without a hint lists the
// tags and resolves only the new one; without it every candidate is asked
// again, since any tag may have moved. A hint still asks, and updates
// what the cache remembers.
func TestCacheByTag(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	for i := range 30 {
		reg.PushImage(t, "team/immutable", fmt.Sprintf("v1.%d.0", i))
	}
	c := images.New(images.Options{})
	cached := model.ImageSubscription{RepoURL: reg.Repo("team/immutable"), CacheByTag: true}
	plain := model.ImageSubscription{RepoURL: reg.Repo("team/immutable")}
	for _, sub := range []model.ImageSubscription{cached, plain} {
		if _, err := c.Discover(t.Context(), sub, nil); err != nil {
			t.Fatal(err)
		}
	}
	d := reg.PushImage(t, "team/immutable", "v1.30.0")
	tests := []struct {
		name string
		sub  model.ImageSubscription
		reqs int
	}{
		{"cacheByTag", cached, 2},                           // the list, the new tag's HEAD
		{"without", plain, 1 + model.DefaultDiscoveryLimit}, // the list, a HEAD per candidate
	}
	for _, tt := range tests {
		reg.ResetRequests()
		res, err := c.Discover(t.Context(), tt.sub, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(reg.Requests()); n != tt.reqs {
			t.Errorf("%s: %d requests %v, want %d", tt.name, n, reg.Requests(), tt.reqs)
		}
		if res.References[0].Tag != "v1.30.0" || res.References[0].Digest != d.String() {
			t.Errorf("%s: newest %+v, want v1.30.0 at %s", tt.name, res.References[0], d)
		}
	}

	// A tag that moves anyway keeps its old digest under cacheByTag (the
	// subscription said it would not move) until it is resolved again: by
	// a hint, or by a subscription of the repository without cacheByTag.
	moved := reg.PushImage(t, "team/immutable", "v1.30.0")
	res, err := c.Discover(t.Context(), cached, nil)
	if err != nil || res.References[0].Digest != d.String() {
		t.Fatalf("cacheByTag after a retag: %+v, %v; want the cached %s", res.References[0], err, d)
	}
	res, err = c.Discover(t.Context(), plain, nil)
	if err != nil || res.References[0].Digest != moved.String() {
		t.Fatalf("without cacheByTag after a retag: %+v, %v; want %s", res.References[0], err, moved)
	}
	next, _, err := c.Evaluate(t.Context(), cached, nil, res.References, "v1.30.0", "")
	if err != nil || next[0].Digest != moved.String() {
		t.Fatalf("hint: %+v, %v; want %s", next[0], err, moved)
	}
	res, err = c.Discover(t.Context(), cached, nil)
	if err != nil || res.References[0].Digest != moved.String() {
		t.Fatalf("cacheByTag after the hint: %+v, %v; want %s", res.References[0], err, moved)
	}
}

// A registry that sends each tag's digest with the tag list (Google's
// Artifact Registry and Container Registry; testenv's ListDigests stands
// in for them, as they cannot run here) needs no HEAD per candidate
// without cacheByTag: a refresh is the list, plus what a new digest's
// metadata costs. A moved tag is seen in the list at once.
func TestListedDigests(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	reg.ListDigests(true)
	for i := range 30 {
		reg.PushImage(t, "team/listed", fmt.Sprintf("v1.%d.0", i), testenv.Created(time.Now().Add(time.Duration(i-60)*time.Minute)))
	}
	semver := model.ImageSubscription{RepoURL: reg.Repo("team/listed")}
	newest := model.ImageSubscription{RepoURL: reg.Repo("team/listed"), ImageSelectionStrategy: model.ImageSelectionStrategyNewestBuild}
	c := images.New(images.Options{})
	for _, sub := range []model.ImageSubscription{semver, newest} {
		if _, err := c.Discover(t.Context(), sub, nil); err != nil {
			t.Fatal(err)
		}
	}
	refresh := func(name string, sub model.ImageSubscription, reqs int, tag, digest string) {
		t.Helper()
		reg.ResetRequests()
		res, err := c.Discover(t.Context(), sub, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(reg.Requests()); n != reqs {
			t.Errorf("%s: %d requests %v, want %d", name, n, reg.Requests(), reqs)
		}
		if res.References[0].Tag != tag || res.References[0].Digest != digest {
			t.Errorf("%s: newest %+v, want %s at %s", name, res.References[0], tag, digest)
		}
	}
	d := reg.PushImage(t, "team/listed", "v1.30.0", testenv.Created(time.Now()))
	refresh("SemVer, a new tag", semver, 1, "v1.30.0", d.String())                   // the list
	refresh("NewestBuild, a new tag", newest, 3, "v1.30.0", d.String())              // the list, the new manifest and its config
	refresh("SemVer, nothing new", semver, 1, "v1.30.0", d.String())                 // the list
	moved := reg.PushImage(t, "team/listed", "v1.30.0", testenv.Created(time.Now())) // the tag moves
	refresh("SemVer, a moved tag", semver, 1, "v1.30.0", moved.String())
	refresh("NewestBuild, a moved tag", newest, 3, "v1.30.0", moved.String())

	// Without the extension, the same client asks each candidate again.
	reg.ListDigests(false)
	refresh("SemVer, a plain list", semver, 1+model.DefaultDiscoveryLimit, "v1.30.0", moved.String())
}

// Without cacheByTag, a strategy that needs metadata (NewestBuild, a
// platform) checks a tag it has seen with one HEAD: an unchanged digest's
// build date is cached, so no manifest body or config blob is fetched; a
// moved tag is fetched again. The baseline client fetches every manifest.
func TestNewestBuildHeadsKnownTags(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	for i := range 5 {
		reg.PushImage(t, "team/builds", fmt.Sprintf("b%d", i), testenv.Created(time.Now().Add(time.Duration(i-10)*time.Minute)))
	}
	sub := model.ImageSubscription{RepoURL: reg.Repo("team/builds"), ImageSelectionStrategy: model.ImageSelectionStrategyNewestBuild}
	c := images.New(images.Options{})
	old := images.NewBaseline(images.Options{})
	for _, cl := range []*images.Client{c, old} {
		if _, err := cl.Discover(t.Context(), sub, nil); err != nil {
			t.Fatal(err)
		}
	}
	newest := reg.PushImage(t, "team/builds", "b0", testenv.Created(time.Now())) // the oldest tag moves to the newest build
	methods := func(cl *images.Client) map[string]int {
		reg.ResetRequests()
		res, err := cl.Discover(t.Context(), sub, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.References[0].Tag != "b0" || res.References[0].Digest != newest.String() {
			t.Fatalf("newest %+v, want b0 at %s", res.References[0], newest)
		}
		m := map[string]int{}
		for _, r := range reg.Requests() {
			m[r.Method]++
		}
		return m
	}
	// The list, a HEAD per tag; the moved one's manifest and config blob.
	if got, want := methods(c), map[string]int{"GET": 3, "HEAD": 5}; !maps.Equal(got, want) {
		t.Errorf("HEAD-first: requests by method %v, want %v", got, want)
	}
	// The list, a GET per tag, the moved one's config blob.
	if got, want := methods(old), map[string]int{"GET": 7}; !maps.Equal(got, want) {
		t.Errorf("baseline: requests by method %v, want %v", got, want)
	}
}
