package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Repository is the demo image's repository path in the registry.
const Repository = "demo/app"

// firstTag is the first tag the publisher pushes.
const firstTag = "1.0.0"

// keepTags is how many of the newest tags are pushed again after a restart
// (the registry keeps its images in memory).
const keepTags = 20

// epoch is the build date of the first tag; each next patch is a minute
// later, so images are the same bytes (and digests) every time.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// newRegistry starts an in-memory OCI registry on addr (falling back to a
// free port when addr is taken).
func newRegistry(addr string) (*http.Server, net.Listener, error) {
	ln, err := listen(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("demo registry: %w", err)
	}
	srv := &http.Server{
		Handler:           registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	return srv, ln, nil
}

// listen listens on addr, or on a free port of the same host when addr is
// taken.
func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	host, _, splitErr := net.SplitHostPort(addr)
	if splitErr != nil {
		return nil, err
	}
	return net.Listen("tcp", net.JoinHostPort(host, "0"))
}

// Image builds the demo image of tag: a single small layer and a config
// whose build date follows the version, so the same tag always has the
// same digest.
func Image(tag string) (v1.Image, error) {
	v, err := semver.StrictNewVersion(tag)
	if err != nil {
		return nil, fmt.Errorf("demo image tag %q: %w", tag, err)
	}
	layer := static.NewLayer([]byte("caravan demo app "+tag+"\n"), types.OCIUncompressedLayer)
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	minutes := v.Major()*100000 + v.Minor()*1000 + v.Patch()
	cf.Created = v1.Time{Time: epoch.Add(time.Duration(minutes) * time.Minute)}
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config.Labels = map[string]string{"org.opencontainers.image.version": tag, "org.opencontainers.image.title": "caravan demo app"}
	return mutate.ConfigFile(img, cf)
}

// Push pushes the demo image of tag to the repository ref (host:port/path).
func Push(ctx context.Context, repo, tag string) (string, error) {
	img, err := Image(tag)
	if err != nil {
		return "", err
	}
	ref, err := name.NewTag(repo+":"+tag, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// NextTag is the patch release after the newest semver tag of repo
// (firstTag when there is none).
func NextTag(ctx context.Context, repo string) (string, error) {
	r, err := name.NewRepository(repo, name.Insecure)
	if err != nil {
		return "", err
	}
	tags, err := remote.List(r, remote.WithContext(ctx))
	var terr *transport.Error
	if err != nil && (!errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound) {
		// A repository nothing was pushed to yet answers 404.
		return "", fmt.Errorf("list tags of %s: %w", repo, err)
	}
	return nextAfter(tags), nil
}

func nextAfter(tags []string) string {
	var newest *semver.Version
	for _, t := range tags {
		v, err := semver.StrictNewVersion(t)
		if err != nil {
			continue
		}
		if newest == nil || v.GreaterThan(newest) {
			newest = v
		}
	}
	if newest == nil {
		return firstTag
	}
	return newest.IncPatch().String()
}

// previousTags returns up to n tags ending with last, newest last.
func previousTags(last string, n int) []string {
	v, err := semver.StrictNewVersion(last)
	if err != nil {
		return nil
	}
	var out []string
	for i := 0; i < n; i++ {
		out = append([]string{v.String()}, out...)
		if v.Patch() == 0 {
			break
		}
		p := semver.New(v.Major(), v.Minor(), v.Patch()-1, "", "")
		v = p
	}
	return out
}

// lastTagFile records the newest tag pushed, so a restart pushes the
// recent ones again.
func lastTagFile(dir string) string { return filepath.Join(dir, "last-tag") }

func readLastTag(dir string) string {
	b, err := os.ReadFile(lastTagFile(dir))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func writeLastTag(dir, tag string) error {
	if cur := readLastTag(dir); cur != "" {
		a, errA := semver.StrictNewVersion(cur)
		b, errB := semver.StrictNewVersion(tag)
		if errA == nil && errB == nil && !b.GreaterThan(a) {
			return nil
		}
	}
	return writeFileAtomic(lastTagFile(dir), []byte(tag+"\n"), 0o644)
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	_, werr := tmp.Write(b)
	if err := errors.Join(werr, tmp.Chmod(mode), tmp.Close()); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
