//go:build e2e

package discovery_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery/internal/images"
)

// A repository with 10,000 tags: SemVer discovery lists them in pages and
// resolves only discoveryLimit of them; NewestBuild reads the (shared)
// config blob once and, re-discovering, not at all.
func TestE2ETenThousandTags(t *testing.T) {
	reg := testenv.Registry(t)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	first, err := name.NewTag(reg.Repo("big/app")+":seed", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(first, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	tags := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var pushErr error
	for range 8 {
		wg.Go(func() {
			for tag := range tags {
				ref, err := name.NewTag(reg.Repo("big/app")+":"+tag, name.Insecure)
				if err == nil {
					err = remote.Tag(ref, img, remote.WithContext(t.Context())) // the manifest only
				}
				if err != nil {
					mu.Lock()
					pushErr = err
					mu.Unlock()
				}
			}
		})
	}
	for i := range 10000 {
		tags <- fmt.Sprintf("v%d.%d.%d", i/1000, (i/10)%100, i%10)
	}
	close(tags)
	wg.Wait()
	if pushErr != nil {
		t.Fatal(pushErr)
	}
	c := images.New(images.Options{Parallelism: 8})
	reg.ResetRequests()
	res, err := c.Discover(t.Context(), model.ImageSubscription{RepoURL: reg.Repo("big/app"), StrictSemvers: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.References) != 20 || res.References[0].Tag != "v9.99.9" {
		t.Fatalf("got %d references, first %+v", len(res.References), res.References[0])
	}
	lists, heads := reg.Count(http.MethodGet, "/v2/big/app/tags/list"), reg.Count(http.MethodHead, "/v2/big/app/manifests/")
	t.Logf("SemVer over 10,000 tags: %d tag-list pages, %d manifest HEADs, %d requests in all", lists, heads, len(reg.Requests()))
	if heads != 20 || lists != 1 {
		t.Fatalf("%d HEADs (want 20), %d tag lists (want 1)", heads, lists)
	}

	sub := model.ImageSubscription{RepoURL: reg.Repo("big/app"), ImageSelectionStrategy: model.ImageSelectionStrategyNewestBuild}
	reg.ResetRequests()
	if _, err := c.Discover(t.Context(), sub, nil); err != nil {
		t.Fatal(err)
	}
	if blobs := reg.Count(http.MethodGet, "/v2/big/app/blobs/"); blobs > 8 {
		t.Fatalf("NewestBuild read the shared config blob %d times", blobs)
	}
	reg.ResetRequests()
	if _, err := c.Discover(t.Context(), sub, nil); err != nil {
		t.Fatal(err)
	}
	if blobs := reg.Count("", "/v2/big/app/blobs/"); blobs != 0 {
		t.Fatalf("re-discovery read %d blobs, want 0", blobs)
	}
}
