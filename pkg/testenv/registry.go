package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// OCIRegistry is go-containerregistry's in-memory registry served over
// plain HTTP on loopback, recording every request. It is safe for
// concurrent use.
type OCIRegistry struct {
	srv *httptest.Server

	mu          sync.Mutex
	requests    []Request
	onPush      []func(repo, tag, digest string)
	listDigests bool
}

// Request is one HTTP request the registry answered.
type Request struct {
	Method string
	Path   string // e.g. /v2/team/app/manifests/v1.0.0
	Status int
}

// Registry starts an empty OCI registry and stops it at test cleanup.
func Registry(t testing.TB) *OCIRegistry {
	t.Helper()
	r := &OCIRegistry{}
	backend := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httptest.NewServer(r.handler(backend))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *OCIRegistry) handler(backend http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		r.mu.Lock()
		withDigests := r.listDigests
		r.mu.Unlock()
		if withDigests && req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/tags/list") {
			listWithDigests(backend, sw, req)
		} else {
			backend.ServeHTTP(sw, req)
		}
		r.mu.Lock()
		r.requests = append(r.requests, Request{Method: req.Method, Path: req.URL.Path, Status: sw.status})
		hooks := slices.Clone(r.onPush)
		r.mu.Unlock()
		if req.Method != http.MethodPut || sw.status/100 != 2 {
			return
		}
		repo, ref, ok := parseManifestPath(req.URL.Path)
		if !ok {
			return
		}
		digest := sw.Header().Get("Docker-Content-Digest")
		tag := ref
		if strings.Contains(ref, ":") {
			tag, digest = "", ref
		}
		for _, fn := range hooks {
			fn(repo, tag, digest)
		}
	})
}

// ListDigests makes the tag list answer, beside "tags", a "manifest" map
// of each manifest's digest to its tags ({"sha256:…": {"tag": ["v1"],
// "mediaType": "…"}}), as Google's Artifact Registry and Container
// Registry extend it. They cannot run here; this stand-in lets discovery's
// use of the extension be tested. Off by default, as the distribution API
// has no such field.
func (r *OCIRegistry) ListDigests(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listDigests = on
}

// listWithDigests answers a tag list with the "manifest" map: the backend's
// list, each tag resolved with a HEAD the backend answers directly.
func listWithDigests(backend http.Handler, w http.ResponseWriter, req *http.Request) {
	rec := httptest.NewRecorder()
	backend.ServeHTTP(rec, req)
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &list) != nil {
		maps.Copy(w.Header(), rec.Header())
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	type info struct {
		Tag       []string `json:"tag"`
		MediaType string   `json:"mediaType"`
	}
	manifests := map[string]*info{}
	prefix := strings.TrimSuffix(req.URL.Path, "tags/list")
	for _, tag := range list.Tags {
		head := httptest.NewRecorder()
		backend.ServeHTTP(head, httptest.NewRequestWithContext(req.Context(), http.MethodHead, prefix+"manifests/"+tag, nil))
		d := head.Header().Get("Docker-Content-Digest")
		if d == "" {
			continue
		}
		if manifests[d] == nil {
			manifests[d] = &info{MediaType: head.Header().Get("Content-Type")}
		}
		manifests[d].Tag = append(manifests[d].Tag, tag)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"name": list.Name, "tags": list.Tags, "manifest": manifests})
}

// parseManifestPath splits /v2/<repo>/manifests/<reference>.
func parseManifestPath(path string) (repo, ref string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(rest, "/manifests/")
	if i <= 0 {
		return "", "", false
	}
	return rest[:i], rest[i+len("/manifests/"):], true
}

// statusWriter remembers the status code written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// OnPush registers fn to be called after every successful manifest PUT,
// as a registry webhook would fire. tag is empty for a push by digest. fn
// runs on the request's goroutine before the client sees the response, so
// it must not push to this registry itself.
func (r *OCIRegistry) OnPush(fn func(repo, tag, digest string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onPush = append(r.onPush, fn)
}

// Host is the registry's host:port, e.g. 127.0.0.1:38121.
func (r *OCIRegistry) Host() string {
	return strings.TrimPrefix(r.srv.URL, "http://")
}

// URL is the registry's base URL, e.g. http://127.0.0.1:38121.
func (r *OCIRegistry) URL() string { return r.srv.URL }

// Repo is the full repository name of name in this registry, e.g.
// 127.0.0.1:38121/team/app. Parse it with name.Insecure: the registry
// speaks plain HTTP.
func (r *OCIRegistry) Repo(name string) string {
	return r.Host() + "/" + strings.Trim(name, "/")
}

// Requests returns the requests answered so far, oldest first.
func (r *OCIRegistry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

// ResetRequests forgets the requests recorded so far.
func (r *OCIRegistry) ResetRequests() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}

// Count is the number of recorded requests with method ("" for any) whose
// path starts with pathPrefix, e.g. Count("GET", "/v2/team/app/tags/list").
func (r *OCIRegistry) Count(method, pathPrefix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, req := range r.requests {
		if (method == "" || req.Method == method) && strings.HasPrefix(req.Path, pathPrefix) {
			n++
		}
	}
	return n
}

// ImageOption changes an image before PushImage pushes it.
type ImageOption func(*v1.ConfigFile)

// Created sets the image's creation time, which "newest build" selection
// reads from the image config.
func Created(at time.Time) ImageOption {
	return func(c *v1.ConfigFile) { c.Created = v1.Time{Time: at} }
}

// Labels sets labels in the image config.
func Labels(labels map[string]string) ImageOption {
	return func(c *v1.ConfigFile) {
		if c.Config.Labels == nil {
			c.Config.Labels = map[string]string{}
		}
		for k, v := range labels {
			c.Config.Labels[k] = v
		}
	}
}

// PushImage pushes a small random single-layer image to repo (a name such
// as "team/app", not Repo's result) under tag and returns its manifest
// digest.
func (r *OCIRegistry) PushImage(t testing.TB, repo, tag string, opts ...ImageOption) v1.Hash {
	t.Helper()
	img := r.randomImage(t, opts)
	ref := r.ref(t, repo, tag)
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("testenv: push %s: %v", ref, err)
	}
	return digestOf(t, img)
}

// PushIndex pushes a multi-arch image index to repo under tag, with one
// random image per platform ("linux/amd64", "linux/arm64/v8", ...), and
// returns the index digest.
func (r *OCIRegistry) PushIndex(t testing.TB, repo, tag string, platforms []string, opts ...ImageOption) v1.Hash {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.DockerManifestList)
	for _, p := range platforms {
		platform, err := v1.ParsePlatform(p)
		if err != nil {
			t.Fatalf("testenv: platform %q: %v", p, err)
		}
		img := r.randomImage(t, append(opts, func(c *v1.ConfigFile) {
			c.OS, c.Architecture, c.Variant = platform.OS, platform.Architecture, platform.Variant
		}))
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: platform},
		})
	}
	ref := r.ref(t, repo, tag)
	if err := remote.WriteIndex(ref, idx, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("testenv: push index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("testenv: index digest: %v", err)
	}
	return d
}

func (r *OCIRegistry) ref(t testing.TB, repo, tag string) name.Tag {
	t.Helper()
	ref, err := name.NewTag(r.Repo(repo)+":"+tag, name.Insecure)
	if err != nil {
		t.Fatalf("testenv: reference %s:%s: %v", repo, tag, err)
	}
	return ref
}

func (r *OCIRegistry) randomImage(t testing.TB, opts []ImageOption) v1.Image {
	t.Helper()
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatalf("testenv: random image: %v", err)
	}
	if len(opts) == 0 {
		return img
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("testenv: image config: %v", err)
	}
	cfg = cfg.DeepCopy()
	for _, opt := range opts {
		opt(cfg)
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatalf("testenv: image config: %v", err)
	}
	return img
}

func digestOf(t testing.TB, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("testenv: image digest: %v", err)
	}
	return d
}

// String makes Request print compactly in test failures.
func (q Request) String() string {
	return fmt.Sprintf("%s %s %d", q.Method, q.Path, q.Status)
}
