// Package images discovers the images of a Warehouse's image subscription
// in an OCI registry, with Kargo's selection strategies (SemVer, Lexical,
// NewestBuild, Digest), tag filters, platform constraints and discovery
// limit.
//
// Requests are rate limited per registry host, authenticated transports are
// reused across discoveries (no token exchange or ping per call), and what
// is learnt from immutable manifests (build date, platform) is cached by
// digest, so re-discovering unchanged tags fetches no config blobs. A
// subscription with cacheByTag declares its tags immutable: a tag already
// resolved costs no request at all. Without it, a tag costs one HEAD,
// unless the registry sent its digest with the tag list (listed.go).
package images

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/discovery/internal/ratelimit"
)

// Options configure a Client.
type Options struct {
	// Hosts limits the request rate per registry host (nil: unlimited).
	Hosts *ratelimit.Hosts
	// CacheSize bounds the metadata cache and the tag cache (entries
	// each).
	CacheSize int
	// Transport is the base HTTP transport (nil: a clone of
	// http.DefaultTransport).
	Transport http.RoundTripper
	// Parallelism bounds concurrent manifest requests of one discovery
	// (0: 8, the service's default).
	Parallelism int
}

// DefaultParallelism is the number of concurrent manifest requests of one
// discovery when Options.Parallelism is 0.
const DefaultParallelism = 8

// Client discovers images. It is safe for concurrent use.
type Client struct {
	hosts       *ratelimit.Hosts
	base        http.RoundTripper
	insecure    http.RoundTripper
	cache       *cache[metadata]
	tags        *cache[string] // "<repository>:<tag>" → digest
	parallelism int
	// baseline resolves as discovery did before it remembered tags; set
	// only by NewBaseline (export_test.go), the benchmarks' baseline.
	baseline bool

	mu      sync.Mutex
	pullers map[string]*remote.Puller
}

// New returns a Client.
func New(o Options) *Client {
	base := o.Transport
	insecure := o.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		base = t
		it := t.Clone()
		it.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // only for subscriptions with insecureSkipTLSVerify
		insecure = it
	}
	if o.Parallelism <= 0 {
		o.Parallelism = DefaultParallelism
	}
	if o.Hosts == nil {
		o.Hosts = ratelimit.New(0, 1)
	}
	return &Client{
		hosts:       o.Hosts,
		base:        base,
		insecure:    insecure,
		cache:       newCache[metadata](max(o.CacheSize, 1000)),
		tags:        newCache[string](max(o.CacheSize, 1000)),
		parallelism: o.Parallelism,
		pullers:     map[string]*remote.Puller{},
	}
}

// CachedEntries is the number of manifests whose metadata is cached.
func (c *Client) CachedEntries() int { return c.cache.Len() }

// Repository parses repoURL, using plain HTTP for loopback registries.
func Repository(repoURL string) (name.Repository, error) {
	repo, err := name.NewRepository(repoURL)
	if err != nil {
		return repo, fmt.Errorf("image repository %q: %w", repoURL, err)
	}
	if isLoopback(repo.RegistryStr()) {
		return name.NewRepository(repoURL, name.Insecure)
	}
	return repo, nil
}

func isLoopback(host string) bool {
	h := host
	if i := strings.LastIndex(host, ":"); i >= 0 && !strings.HasSuffix(host, "]") {
		h = host[:i]
	}
	h = strings.Trim(h, "[]")
	return h == "localhost" || h == "::1" || strings.HasPrefix(h, "127.")
}

// puller returns the reusable puller of a registry and credential pair.
func (c *Client) puller(repo name.Repository, cr *creds.Credentials, skipTLS bool) (*remote.Puller, error) {
	sum := sha256.Sum256([]byte(cr.Key()))
	key := fmt.Sprintf("%s|%t|%s", repo.RegistryStr(), skipTLS, hex.EncodeToString(sum[:8]))
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.pullers[key]; ok {
		return p, nil
	}
	base := c.base
	if skipTLS {
		base = c.insecure
	}
	auth := authn.Anonymous
	if cr != nil {
		auth = &authn.Basic{Username: cr.Username, Password: cr.Password}
	}
	p, err := remote.NewPuller(
		remote.WithTransport(&listTransport{base: &ratelimit.Transport{Hosts: c.hosts, Base: base}}),
		remote.WithAuth(auth),
		remote.WithRetryBackoff(remote.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 2}),
		// No "n": a registry that paginates says so with a Link header,
		// which is followed; one that does not (go-containerregistry's
		// own) then returns every tag instead of silently the first page.
		remote.WithPageSize(0),
	)
	if err != nil {
		return nil, err
	}
	c.pullers[key] = p
	return p, nil
}

// subscription is an image subscription prepared for discovery.
type subscription struct {
	sub      model.ImageSubscription
	repo     name.Repository
	puller   *remote.Puller
	filter   *TagFilter
	platform *v1.Platform
	limit    int
	// listed holds the digests the registry sent with the tag list of
	// this discovery (listed.go), if it sends them.
	listed *listed
}

func (c *Client) prepare(sub model.ImageSubscription, cr *creds.Credentials) (*subscription, error) {
	repo, err := Repository(sub.RepoURL)
	if err != nil {
		return nil, err
	}
	p, err := c.puller(repo, cr, sub.InsecureSkipTLSVerify)
	if err != nil {
		return nil, err
	}
	if sub.ImageSelectionStrategy == "" {
		sub.ImageSelectionStrategy = model.ImageSelectionStrategySemVer
	}
	f, err := NewTagFilter(sub.AllowTags, sub.AllowTagsRegexes, sub.IgnoreTags, sub.IgnoreTagsRegexes,
		sub.EffectiveConstraint(), sub.StrictSemvers, sub.ImageSelectionStrategy == model.ImageSelectionStrategySemVer)
	if err != nil {
		return nil, err
	}
	s := &subscription{sub: sub, repo: repo, puller: p, filter: f, limit: Limit(sub.DiscoveryLimit)}
	if sub.Platform != "" {
		pl, err := v1.ParsePlatform(sub.Platform)
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", sub.Platform, err)
		}
		s.platform = pl
	}
	return s, nil
}

// Limit applies discoveryLimit's default (20) and maximum (100).
func Limit(n int32) int {
	switch {
	case n <= 0:
		return model.DefaultDiscoveryLimit
	case n > model.MaxDiscoveryLimit:
		return model.MaxDiscoveryLimit
	}
	return int(n)
}

// needsMetadata: the strategy or platform needs more than the digest.
func (s *subscription) needsMetadata() bool {
	return s.platform != nil || s.sub.ImageSelectionStrategy == model.ImageSelectionStrategyNewestBuild
}

// Discover lists the subscription's images, newest first, at most
// discoveryLimit of them.
func (c *Client) Discover(ctx context.Context, sub model.ImageSubscription, cr *creds.Credentials) (model.ImageDiscoveryResult, error) {
	result := model.ImageDiscoveryResult{RepoURL: sub.RepoURL, Platform: sub.Platform, References: []model.DiscoveredImageReference{}}
	s, err := c.prepare(sub, cr)
	if err != nil {
		return result, err
	}
	if s.sub.ImageSelectionStrategy == model.ImageSelectionStrategyDigest {
		tag := s.sub.EffectiveConstraint()
		if tag == "" {
			return result, errors.New("the Digest strategy needs constraint to name the tag to follow")
		}
		ref, ok, err := c.resolve(ctx, s, tag, "")
		if err != nil {
			return result, err
		}
		if ok {
			result.References = append(result.References, ref)
		}
		return result, nil
	}
	listCtx, l := withListed(ctx)
	tags, err := s.puller.List(listCtx, s.repo)
	if err != nil {
		return result, fmt.Errorf("list tags of %s: %w", s.repo, err)
	}
	s.listed = l
	cands := SelectTags(tags, s.filter, s.sub.ImageSelectionStrategy)
	if s.sub.ImageSelectionStrategy == model.ImageSelectionStrategyNewestBuild {
		refs, err := c.resolveAll(ctx, s, cands)
		if err != nil {
			return result, err
		}
		Order(refs, s.sub.ImageSelectionStrategy, s.sub.StrictSemvers)
		result.References = refs[:min(len(refs), s.limit)]
		return result, nil
	}
	// SemVer and Lexical: candidates are ordered already; resolve them in
	// batches until the limit is reached (a platform may skip some).
	for len(cands) > 0 && len(result.References) < s.limit {
		n := min(len(cands), s.limit-len(result.References))
		refs, err := c.resolveAll(ctx, s, cands[:n])
		if err != nil {
			return result, err
		}
		result.References = append(result.References, refs...)
		cands = cands[n:]
	}
	return result, nil
}

// resolveAll resolves candidates concurrently, keeping their order and
// dropping those without the platform.
func (c *Client) resolveAll(ctx context.Context, s *subscription, cands []Candidate) ([]model.DiscoveredImageReference, error) {
	type res struct {
		ref model.DiscoveredImageReference
		ok  bool
		err error
	}
	out := make([]res, len(cands))
	sem := make(chan struct{}, c.parallelism)
	var wg sync.WaitGroup
	for i, cand := range cands {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ref, ok, err := c.resolveCandidate(ctx, s, cand.Tag)
			out[i] = res{ref, ok, err}
		}()
	}
	wg.Wait()
	refs := make([]model.DiscoveredImageReference, 0, len(cands))
	for _, r := range out {
		if r.err != nil {
			return nil, r.err
		}
		if r.ok {
			refs = append(refs, r.ref)
		}
	}
	return refs, nil
}

// resolveCandidate resolves a listed tag with the fewest requests its
// subscription allows: none for a tag cacheByTag already knows, nor for
// one whose digest the tag list sent (beyond its metadata when a new
// digest needs it); one HEAD for a tag seen before whose digest's metadata
// is cached (its digest may have moved, so it is asked, but an unchanged
// digest needs no manifest body or config blob); otherwise as resolve
// does.
func (c *Client) resolveCandidate(ctx context.Context, s *subscription, tag string) (model.DiscoveredImageReference, bool, error) {
	if c.baseline {
		return c.resolve(ctx, s, tag, "")
	}
	if d := c.knownDigest(s, tag); d != "" {
		return c.resolve(ctx, s, tag, d)
	}
	if d := s.listed.get(tag); d != "" {
		return c.resolve(ctx, s, tag, d)
	}
	if !s.needsMetadata() {
		return c.resolve(ctx, s, tag, "") // one HEAD either way
	}
	seen, ok := c.tags.get(s.repo.String() + ":" + tag)
	if !ok {
		return c.resolve(ctx, s, tag, "") // new: one GET yields digest and manifest
	}
	if _, ok := c.cache.get(cacheKey(seen, s.platform)); !ok {
		return c.resolve(ctx, s, tag, "")
	}
	d, err := s.puller.Head(ctx, s.repo.Tag(tag))
	if err != nil {
		return model.DiscoveredImageReference{Tag: tag}, false, fmt.Errorf("resolve %s:%s: %w", s.repo, tag, err)
	}
	// The digest's metadata is cached when unchanged; a moved tag costs a
	// GET by digest (and its config blob when not cached).
	return c.resolve(ctx, s, tag, d.Digest.String())
}

// resolve finds tag's digest (when digest is "") and, when the
// subscription needs it, the build date and platform match. ok is false
// when the image does not offer the platform.
//
// Requests: digest unknown and no metadata needed: one HEAD. Metadata
// needed: one manifest GET (which also yields the digest), then, unless
// the digest is cached, the config blob (for an index with a platform and
// NewestBuild, the platform's manifest and its config blob).
func (c *Client) resolve(ctx context.Context, s *subscription, tag, digest string) (model.DiscoveredImageReference, bool, error) {
	ref, ok, err := c.resolveTag(ctx, s, tag, digest)
	if err == nil && ref.Digest != "" {
		c.tags.put(s.repo.String()+":"+tag, ref.Digest)
	}
	return ref, ok, err
}

func (c *Client) resolveTag(ctx context.Context, s *subscription, tag, digest string) (model.DiscoveredImageReference, bool, error) {
	ref := model.DiscoveredImageReference{Tag: tag, Digest: digest}
	if !s.needsMetadata() {
		if digest == "" {
			d, err := s.puller.Head(ctx, s.repo.Tag(tag))
			if err != nil {
				return ref, false, fmt.Errorf("resolve %s:%s: %w", s.repo, tag, err)
			}
			ref.Digest = d.Digest.String()
		}
		if m, ok := c.cache.get(cacheKey(ref.Digest, s.platform)); ok && m.hasCreated {
			ref.CreatedAt = model.NewTime(m.created)
		}
		return ref, true, nil
	}
	if digest != "" {
		if m, ok := c.cache.get(cacheKey(digest, s.platform)); ok && (m.hasCreated || !s.needsCreated()) {
			return withMeta(ref, m), m.match, nil
		}
	}
	var target name.Reference = s.repo.Tag(tag)
	if digest != "" {
		target = s.repo.Digest(digest)
	}
	desc, err := s.puller.Get(ctx, target)
	if err != nil {
		return ref, false, fmt.Errorf("resolve %s:%s: %w", s.repo, tag, err)
	}
	ref.Digest = desc.Digest.String()
	key := cacheKey(ref.Digest, s.platform)
	if m, ok := c.cache.get(key); ok && (m.hasCreated || !s.needsCreated()) {
		return withMeta(ref, m), m.match, nil
	}
	m, err := c.inspect(ctx, s, desc)
	if err != nil {
		return ref, false, fmt.Errorf("inspect %s:%s: %w", s.repo, tag, err)
	}
	c.cache.put(key, m)
	return withMeta(ref, m), m.match, nil
}

// knownDigest is the digest tag had when it was last resolved, if the
// subscription declares its tags immutable (cacheByTag); "" otherwise.
// The Digest strategy follows a tag that moves: it always asks.
func (c *Client) knownDigest(s *subscription, tag string) string {
	if !s.sub.CacheByTag || s.sub.ImageSelectionStrategy == model.ImageSelectionStrategyDigest {
		return ""
	}
	d, _ := c.tags.get(s.repo.String() + ":" + tag)
	return d
}

func (s *subscription) needsCreated() bool {
	return s.sub.ImageSelectionStrategy == model.ImageSelectionStrategyNewestBuild
}

func withMeta(ref model.DiscoveredImageReference, m metadata) model.DiscoveredImageReference {
	if m.hasCreated {
		ref.CreatedAt = model.NewTime(m.created)
	}
	return ref
}

func cacheKey(digest string, p *v1.Platform) string {
	if p == nil {
		return digest
	}
	return digest + "|" + p.String()
}

// inspect reads the platform match and build date of a manifest.
func (c *Client) inspect(ctx context.Context, s *subscription, desc *remote.Descriptor) (metadata, error) {
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return metadata{}, err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return metadata{}, err
		}
		var child *v1.Descriptor
		for i := range im.Manifests {
			d := &im.Manifests[i]
			if d.Platform == nil {
				continue
			}
			if s.platform != nil && d.Platform.Satisfies(*s.platform) {
				child = d
				break
			}
			if s.platform == nil && child == nil {
				child = d // NewestBuild without a platform: the first image
			}
		}
		if child == nil {
			return metadata{match: s.platform == nil}, nil
		}
		if !s.needsCreated() {
			return metadata{match: true}, nil
		}
		cd, err := s.puller.Get(ctx, s.repo.Digest(child.Digest.String()))
		if err != nil {
			return metadata{}, err
		}
		return configMeta(cd, nil)
	}
	return configMeta(desc, s.platform)
}

// configMeta reads an image's config blob: its build date and, with
// platform set, whether it was built for it.
func configMeta(desc *remote.Descriptor, platform *v1.Platform) (metadata, error) {
	img, err := desc.Image()
	if err != nil {
		return metadata{}, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return metadata{}, err
	}
	m := metadata{match: true, created: cfg.Created.UTC(), hasCreated: true}
	if platform != nil {
		p := cfg.Platform()
		m.match = p != nil && p.Satisfies(*platform)
	}
	return m, nil
}

// ListTags lists every tag of repoURL (an image or OCI chart repository);
// skipTLS skips certificate verification.
func (c *Client) ListTags(ctx context.Context, repoURL string, cr *creds.Credentials, skipTLS bool) ([]string, error) {
	repo, err := Repository(repoURL)
	if err != nil {
		return nil, err
	}
	p, err := c.puller(repo, cr, skipTLS)
	if err != nil {
		return nil, err
	}
	tags, err := p.List(ctx, repo)
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", repo, err)
	}
	return tags, nil
}
