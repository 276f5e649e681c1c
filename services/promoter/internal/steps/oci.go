package steps

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/model"
)

type ociPushConfig struct {
	SrcRef  string `json:"srcRef" step:"required"`
	DestRef string `json:"destRef" step:"required"`
	// Annotations are set on the pushed manifest; a key prefixed
	// "index:" goes on an index, "manifest:" (or no prefix) on an image.
	Annotations           map[string]string `json:"annotations"`
	InsecureSkipTLSVerify bool              `json:"insecureSkipTLSVerify"`
}

type ociDownloadConfig struct {
	ImageRef              string `json:"imageRef" step:"required"`
	OutPath               string `json:"outPath" step:"required"`
	MediaType             string `json:"mediaType"`
	AllowOverwrite        bool   `json:"allowOverwrite"`
	InsecureSkipTLSVerify bool   `json:"insecureSkipTLSVerify"`
}

// parseRef reads an image reference, with or without an oci:// prefix.
// Plain http is used for loopback registries.
func parseRef(ref string) (name.Reference, error) {
	if err := model.CheckRepoURL(model.RepoImage, ref); err != nil {
		return nil, Terminal(err)
	}
	ref = strings.TrimPrefix(ref, "oci://")
	var opts []name.Option
	host, _, _ := strings.Cut(ref, "/")
	if h := strings.Split(host, ":")[0]; h == "localhost" || h == "127.0.0.1" {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, Terminal(fmt.Errorf("image reference %q: %w", ref, err))
	}
	return r, nil
}

// ociOptions send registry requests for ref (raw, as configured) through
// the egress policy, with the project's credentials for its repository:
// of type helm for an oci:// reference, image otherwise, as Kargo.
func (sc *Context) ociOptions(ctx context.Context, raw string, ref name.Reference, insecure bool) ([]remote.Option, error) {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(sc.Egress.Transport(insecure))}
	if sc.RepoCredentials == nil {
		return opts, nil
	}
	credType, repoURL := model.CredTypeImage, ref.Context().String()
	if strings.HasPrefix(raw, "oci://") {
		credType, repoURL = model.CredTypeHelm, "oci://"+repoURL
	}
	c, err := sc.RepoCredentials(ctx, sc.Project, credType, repoURL)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", repoURL, err)
	}
	if c != nil && (c.Username != "" || c.Password != "") {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: c.Username, Password: c.Password}))
	}
	return opts, nil
}

// ociPush copies an image or index from srcRef to destRef, with
// annotations added. Outputs: image (destRef@digest), digest, tag.
func ociPush(ctx context.Context, sc *Context, cfg *ociPushConfig) (Result, error) {
	index, manifest := map[string]string{}, map[string]string{}
	for k, v := range cfg.Annotations {
		switch {
		case strings.HasPrefix(k, "index:"):
			index[strings.TrimPrefix(k, "index:")] = v
		default:
			manifest[strings.TrimPrefix(k, "manifest:")] = v
		}
	}
	src, err := parseRef(cfg.SrcRef)
	if err != nil {
		return Result{}, err
	}
	dst, err := parseRef(cfg.DestRef)
	if err != nil {
		return Result{}, err
	}
	opts, err := sc.ociOptions(ctx, cfg.SrcRef, src, cfg.InsecureSkipTLSVerify)
	if err != nil {
		return Result{}, err
	}
	dstOpts, err := sc.ociOptions(ctx, cfg.DestRef, dst, cfg.InsecureSkipTLSVerify)
	if err != nil {
		return Result{}, err
	}
	desc, err := remote.Get(src, opts...)
	if err != nil {
		return Result{}, fmt.Errorf("get %s: %w", src, err)
	}
	var digest v1.Hash
	if desc.MediaType.IsIndex() {
		if len(manifest) > 0 {
			return Result{}, Terminal(fmt.Errorf("%s is an index: annotate it with index: keys", cfg.SrcRef))
		}
		idx, err := desc.ImageIndex()
		if err != nil {
			return Result{}, err
		}
		if len(index) > 0 {
			idx = mutate.Annotations(idx, index).(v1.ImageIndex)
		}
		if digest, err = idx.Digest(); err != nil {
			return Result{}, err
		}
		if err := remote.WriteIndex(dst, idx, dstOpts...); err != nil {
			return Result{}, fmt.Errorf("push %s: %w", dst, err)
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			return Result{}, err
		}
		if len(manifest) > 0 {
			img = mutate.Annotations(img, manifest).(v1.Image)
		}
		if digest, err = img.Digest(); err != nil {
			return Result{}, err
		}
		if err := remote.Write(dst, img, dstOpts...); err != nil {
			return Result{}, fmt.Errorf("push %s: %w", dst, err)
		}
	}
	out := map[string]any{
		"image":  dst.Context().String() + "@" + digest.String(),
		"digest": digest.String(),
	}
	if t, ok := dst.(name.Tag); ok {
		out["tag"] = t.TagStr()
	}
	return Result{Output: out}, nil
}

// ociDownload writes one layer of an artifact (the one of mediaType, or
// the first) to outPath.
func ociDownload(ctx context.Context, sc *Context, cfg *ociDownloadConfig) (Result, error) {
	if err := sc.newPath(cfg.OutPath, cfg.AllowOverwrite); err != nil {
		return Result{}, err
	}
	ref, err := parseRef(cfg.ImageRef)
	if err != nil {
		return Result{}, err
	}
	opts, err := sc.ociOptions(ctx, cfg.ImageRef, ref, cfg.InsecureSkipTLSVerify)
	if err != nil {
		return Result{}, err
	}
	img, err := remote.Image(ref, opts...)
	if err != nil {
		return Result{}, fmt.Errorf("get %s: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return Result{}, err
	}
	for _, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return Result{}, err
		}
		if cfg.MediaType != "" && string(mt) != cfg.MediaType {
			continue
		}
		rc, err := l.Compressed()
		if err != nil {
			return Result{}, err
		}
		defer func() { _ = rc.Close() }()
		f, err := sc.Workspace.Dir.Create(cfg.OutPath, 0o644)
		if err != nil {
			return Result{}, fsError(fmt.Errorf("create %s: %w", cfg.OutPath, err))
		}
		if _, err := io.Copy(f, rc); err != nil {
			_ = f.Close()
			_ = sc.Workspace.Dir.RemoveAll(cfg.OutPath) // no partial file
			return Result{}, fmt.Errorf("download %s: %w", ref, egressError(err))
		}
		return Result{}, f.Close()
	}
	return Result{}, Terminal(fmt.Errorf("%s has no layer of media type %q", ref, cfg.MediaType))
}
