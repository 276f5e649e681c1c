package testenv_test

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

func TestRegistryPushAndGet(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)

	type push struct{ repo, tag, digest string }
	var (
		mu     sync.Mutex
		pushes []push
	)
	reg.OnPush(func(repo, tag, digest string) {
		mu.Lock()
		defer mu.Unlock()
		pushes = append(pushes, push{repo, tag, digest})
	})

	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	digest := reg.PushImage(t, "team/app", "v1.0.0", testenv.Created(created))
	if got := reg.Count(http.MethodPut, "/v2/team/app/manifests/"); got != 1 {
		t.Fatalf("%d manifest PUTs, want 1: %v", got, reg.Requests())
	}
	mu.Lock()
	if len(pushes) != 1 || pushes[0] != (push{"team/app", "v1.0.0", digest.String()}) {
		t.Fatalf("OnPush saw %v, want one push of team/app:v1.0.0@%s", pushes, digest)
	}
	mu.Unlock()

	reg.ResetRequests()
	ref, err := name.ParseReference(reg.Repo("team/app")+":v1.0.0", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != digest {
		t.Fatalf("digest %s, want %s", desc.Digest, digest)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Created.Equal(created) {
		t.Fatalf("created %s, want %s", cfg.Created.Time, created)
	}
	if got := reg.Count(http.MethodGet, "/v2/team/app/manifests/v1.0.0"); got != 1 {
		t.Fatalf("%d manifest GETs, want 1: %v", got, reg.Requests())
	}
	if got := reg.Count("", "/v2/other/"); got != 0 {
		t.Fatalf("%d requests for another repository", got)
	}
}

func TestRegistryPushIndex(t *testing.T) {
	t.Parallel()
	reg := testenv.Registry(t)
	digest := reg.PushIndex(t, "multi", "latest", []string{"linux/amd64", "linux/arm64/v8"})

	ref, err := name.ParseReference(reg.Repo("multi")+":latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := idx.Digest(); err != nil || got != digest {
		t.Fatalf("index digest %s (%v), want %s", got, err, digest)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, d := range m.Manifests {
		platforms = append(platforms, d.Platform.String())
	}
	if len(platforms) != 2 || platforms[0] != "linux/amd64" || platforms[1] != "linux/arm64/v8" {
		t.Fatalf("platforms %v", platforms)
	}
}
