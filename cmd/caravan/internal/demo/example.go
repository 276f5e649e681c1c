package demo

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/caravan-cd/caravan/pkg/model"
)

// An example of examples/ runs offline against a running demo: its
// images and charts are pushed to the demo registry, its deployment
// repository is seeded from the example's repo/ folder into the demo git
// server, and its manifests are applied with every URL pointing there.
// `caravan demo example NAME` does it; this file plans and sets it up.

// Endpoints are where a running demo serves, recorded in the demo dir so
// that `caravan demo` verbs find them.
type Endpoints struct {
	// Registry is the demo registry's host:port.
	Registry string `json:"registry"`
	// Git is the demo git server's base URL (http://host:port).
	Git string `json:"git"`
	// API is the Caravan API the demo loaded itself into.
	API string `json:"api,omitempty"`
}

func endpointsFile(dir string) string { return filepath.Join(dir, "endpoints.json") }

func writeEndpoints(dir string, e Endpoints) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(endpointsFile(dir), append(b, '\n'), 0o644)
}

// ReadEndpoints reads the endpoints of the demo whose files are in dir.
func ReadEndpoints(dir string) (Endpoints, error) {
	var e Endpoints
	b, err := os.ReadFile(endpointsFile(dir))
	if errors.Is(err, os.ErrNotExist) {
		return e, fmt.Errorf("no demo in %s: start it with 'make run' (CARAVAN_DEMO=true caravan server), or set CARAVAN_DATA_DIR to its data dir", dir)
	}
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%s: %w", endpointsFile(dir), err)
	}
	return e, nil
}

// Artifact is an image or a chart pushed to the demo registry.
type Artifact struct {
	// Path is the repository below the registry host (example/guestbook).
	Path string `json:"path"`
	// Tags are the tags (chart versions) pushed.
	Tags []string `json:"tags"`
	// Chart marks a Helm chart (an OCI artifact) rather than an image.
	Chart bool `json:"chart,omitempty"`
}

// Seed is a deployment repository the example needs.
type Seed struct {
	// URL is the repository as the example names it.
	URL string
	// Repo is the bare repository's path below the demo git root.
	Repo string
	// From is the folder of the example seeding it ("" for an empty one).
	From string
}

// Rewrite is one URL the example names, and what it becomes offline.
type Rewrite struct {
	What, From, To string
}

// Offline is an example planned against a running demo.
type Offline struct {
	Name string
	// Project is the example's project.
	Project string
	// Warehouses are the example's warehouses, refreshed once set up.
	Warehouses []string
	// Manifests are the example's documents with every URL rewritten.
	Manifests []byte
	Artifacts []Artifact
	Seeds     []Seed
	Rewrites  []Rewrite
	replace   *strings.Replacer
}

// Examples lists the examples of dir that run offline: the folders with
// manifests (the demo itself is the demo).
func Examples(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("examples: %w (run from the repository root, or pass --examples)", err)
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "demo" {
			continue
		}
		if files, _ := manifestFiles(filepath.Join(dir, e.Name())); len(files) > 0 {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// manifestFiles are the example's manifests: its own .yaml files (its
// repo/ folder holds the deployment repository, not manifests).
func manifestFiles(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	return files, nil
}

var gitURL = regexp.MustCompile(`https?://[^\s"'{}$]+?\.git\b`)

// PlanExample reads the example in dir and plans it against the demo at e.
func PlanExample(dir string, e Endpoints) (*Offline, error) {
	o := &Offline{Name: filepath.Base(dir)}
	files, err := manifestFiles(dir)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("example %s: no manifests (*.yaml) in %s", o.Name, dir)
	}
	var text strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		text.WriteString("---\n")
		text.Write(b)
		text.WriteString("\n")
	}
	dec, err := model.Decode([]byte(text.String()))
	if err != nil {
		return nil, fmt.Errorf("example %s: %w", o.Name, err)
	}
	var pairs []string
	seen := map[string]bool{}
	rewrite := func(what, from, to string) {
		if seen[from] {
			return
		}
		seen[from] = true
		pairs = append(pairs, from, to)
		o.Rewrites = append(o.Rewrites, Rewrite{What: what, From: from, To: to})
	}
	for _, d := range dec.Documents {
		switch obj := d.Object.(type) {
		case *model.Project:
			o.Project = obj.Name
		case *model.Warehouse:
			o.Warehouses = append(o.Warehouses, obj.Name)
			for _, sub := range obj.Spec.Subscriptions {
				switch {
				case sub.Image != nil:
					path, err := repoPath(sub.Image.RepoURL)
					if err != nil {
						return nil, err
					}
					tags, err := tagsFor(sub.Image.Constraint)
					if err != nil {
						return nil, fmt.Errorf("warehouse %s: image %s: %w", obj.Name, sub.Image.RepoURL, err)
					}
					o.Artifacts = append(o.Artifacts, Artifact{Path: path, Tags: tags})
					rewrite("image", sub.Image.RepoURL, e.Registry+"/"+path)
				case sub.Chart != nil:
					if !strings.HasPrefix(sub.Chart.RepoURL, "oci://") {
						return nil, fmt.Errorf("warehouse %s: chart repository %s: the demo serves OCI charts only", obj.Name, sub.Chart.RepoURL)
					}
					path, err := repoPath(strings.TrimPrefix(sub.Chart.RepoURL, "oci://"))
					if err != nil {
						return nil, err
					}
					tags, err := tagsFor(sub.Chart.SemverConstraint)
					if err != nil {
						return nil, fmt.Errorf("warehouse %s: chart %s: %w", obj.Name, sub.Chart.RepoURL, err)
					}
					o.Artifacts = append(o.Artifacts, Artifact{Path: path, Tags: tags, Chart: true})
					rewrite("chart", sub.Chart.RepoURL, "oci://"+e.Registry+"/"+path)
				}
			}
		case *model.Stage:
			if v := obj.Spec.Verification; v != nil {
				for _, a := range v.Args {
					if isHTTP(a.Value) && !gitURL.MatchString(a.Value) {
						rewrite("health", a.Value, e.Git+"/healthz")
					}
				}
			}
		case *model.AnalysisTemplate:
			for _, m := range obj.Spec.Metrics {
				if w := m.Provider.Web; w != nil && isHTTP(w.URL) && !strings.Contains(w.URL, "{{") {
					rewrite("health", w.URL, e.Git+"/healthz")
				}
			}
		}
	}
	if o.Project == "" {
		return nil, fmt.Errorf("example %s: no Project in its manifests", o.Name)
	}
	for _, u := range gitURL.FindAllString(text.String(), -1) {
		if seen[u] {
			continue
		}
		base := strings.TrimSuffix(u[strings.LastIndex(u, "/")+1:], ".git")
		seed := Seed{URL: u, Repo: filepath.Join(o.Name, base+".git")}
		for _, from := range []string{filepath.Join(dir, "repo", base), filepath.Join(dir, "repo")} {
			if info, err := os.Stat(from); err == nil && info.IsDir() {
				seed.From = from
				break
			}
		}
		o.Seeds = append(o.Seeds, seed)
		rewrite("git", u, strings.TrimSuffix(e.Git, "/")+"/"+filepath.ToSlash(seed.Repo))
	}
	// The longest first, so that no URL is rewritten inside a longer one.
	byLen := make([][2]string, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		byLen = append(byLen, [2]string{pairs[i], pairs[i+1]})
	}
	sort.SliceStable(byLen, func(i, j int) bool { return len(byLen[i][0]) > len(byLen[j][0]) })
	var args []string
	for _, p := range byLen {
		args = append(args, p[0], p[1])
	}
	o.replace = strings.NewReplacer(args...)
	o.Manifests = []byte(o.replace.Replace(text.String()))
	return o, nil
}

func isHTTP(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// repoPath is an image repository's path below its registry host.
func repoPath(repo string) (string, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return "", fmt.Errorf("repository %q: %w", repo, err)
	}
	return r.RepositoryStr(), nil
}

// tagsFor returns two semver tags satisfying constraint ("" any): the
// first patch release of the lowest major that does, and the next one, so
// that a warehouse discovers two pieces of freight.
func tagsFor(constraint string) ([]string, error) {
	if constraint == "" {
		return []string{"1.0.0", "1.0.1"}, nil
	}
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return nil, fmt.Errorf("constraint %q: %w", constraint, err)
	}
	for major := uint64(0); major <= 100; major++ {
		for _, minor := range []uint64{0, 1, 10} {
			v := semver.New(major, minor, 0, "", "")
			next := v.IncPatch()
			if c.Check(v) && c.Check(&next) {
				return []string{v.String(), next.String()}, nil
			}
		}
	}
	return nil, fmt.Errorf("constraint %q: no version 0.0.0 to 100.10.1 satisfies it", constraint)
}

// Setup pushes the example's images and charts to the demo registry at
// registry, seeds its repositories below the demo's git root, and
// records the artifacts in the demo dir so that a restarted demo (its
// registry keeps images in memory) pushes them again.
func (o *Offline) Setup(ctx context.Context, demoDir, registry string) error {
	demoDir, err := filepath.Abs(demoDir)
	if err != nil {
		return err
	}
	for _, a := range o.Artifacts {
		if err := pushArtifact(ctx, registry, a); err != nil {
			return err
		}
	}
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return fmt.Errorf("the demo needs the git CLI: %w", err)
	}
	g := git{path: gitPath, home: demoDir}
	for _, s := range o.Seeds {
		bare := filepath.Join(demoDir, "git", s.Repo)
		if err := os.MkdirAll(filepath.Dir(bare), 0o750); err != nil {
			return err
		}
		from := s.From
		if from == "" {
			if from, err = os.MkdirTemp("", "caravan-empty-repo-"); err != nil {
				return err
			}
			defer func() { _ = os.RemoveAll(from) }()
			readme := "# " + filepath.Base(s.Repo) + "\n\nSeeded empty by caravan demo example " + o.Name + ".\n"
			if err := os.WriteFile(filepath.Join(from, "README.md"), []byte(readme), 0o644); err != nil {
				return err
			}
		}
		if _, err := initRepo(ctx, g, bare, from, o.replace); err != nil {
			return fmt.Errorf("seed %s: %w", s.URL, err)
		}
	}
	return recordArtifacts(demoDir, o.Artifacts)
}

// pushArtifact pushes every tag of a to the registry.
func pushArtifact(ctx context.Context, registry string, a Artifact) error {
	for _, tag := range a.Tags {
		ref, err := name.NewTag(registry+"/"+a.Path+":"+strings.ReplaceAll(tag, "+", "_"), name.Insecure)
		if err != nil {
			return err
		}
		var img v1.Image
		if a.Chart {
			img, err = chartImage(a.Path[strings.LastIndex(a.Path, "/")+1:], tag)
		} else {
			img, err = Image(tag)
		}
		if err != nil {
			return err
		}
		if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
			return fmt.Errorf("push %s: %w (is the demo server running?)", ref, err)
		}
	}
	return nil
}

// Helm's OCI media types.
const (
	helmConfigType = types.MediaType("application/vnd.cncf.helm.config.v1+json")
	helmChartType  = types.MediaType("application/vnd.cncf.helm.chart.content.v1.tar.gz")
)

// chartImage is a minimal Helm chart of that name and version as an OCI
// artifact, the way `helm push` stores one (the same bytes every time).
func chartImage(chart, version string) (v1.Image, error) {
	meta := fmt.Sprintf("apiVersion: v2\nname: %s\nversion: %s\ndescription: a chart of the Caravan demo\n", chart, version)
	var tgz bytes.Buffer
	zw := gzip.NewWriter(&tgz)
	zw.ModTime = epoch
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: chart + "/Chart.yaml", Mode: 0o644, Size: int64(len(meta)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write([]byte(meta)); err != nil {
		return nil, err
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		return nil, err
	}
	cfg, err := json.Marshal(map[string]string{"apiVersion": "v2", "name": chart, "version": version})
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: static.NewLayer(tgz.Bytes(), helmChartType), MediaType: helmChartType})
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, helmConfigType)
	return &rawConfig{Image: img, config: cfg}, nil
}

// rawConfig replaces an image's config blob with raw bytes (a Helm
// config is not an image config).
type rawConfig struct {
	v1.Image
	config []byte
}

func (r *rawConfig) RawConfigFile() ([]byte, error) { return r.config, nil }

func (r *rawConfig) ConfigName() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(r.config))
	return h, err
}

func (r *rawConfig) Manifest() (*v1.Manifest, error) {
	m, err := r.Image.Manifest()
	if err != nil {
		return nil, err
	}
	m = m.DeepCopy()
	h, err := r.ConfigName()
	if err != nil {
		return nil, err
	}
	m.Config = v1.Descriptor{MediaType: helmConfigType, Size: int64(len(r.config)), Digest: h}
	return m, nil
}

func (r *rawConfig) RawManifest() ([]byte, error) {
	m, err := r.Manifest()
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

func (r *rawConfig) Digest() (v1.Hash, error) {
	b, err := r.RawManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	h, _, err := v1.SHA256(bytes.NewReader(b))
	return h, err
}

func (r *rawConfig) Size() (int64, error) {
	b, err := r.RawManifest()
	return int64(len(b)), err
}

// artifactsFile records the artifacts examples pushed.
func artifactsFile(dir string) string { return filepath.Join(dir, "artifacts.json") }

// recordArtifacts adds as to the demo's record of pushed artifacts.
func recordArtifacts(dir string, as []Artifact) error {
	all := readArtifacts(dir)
	for _, a := range as {
		i := slices.IndexFunc(all, func(b Artifact) bool { return b.Path == a.Path && b.Chart == a.Chart })
		if i < 0 {
			all = append(all, a)
			continue
		}
		for _, t := range a.Tags {
			if !slices.Contains(all[i].Tags, t) {
				all[i].Tags = append(all[i].Tags, t)
			}
		}
	}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(artifactsFile(dir), append(b, '\n'), 0o644)
}

func readArtifacts(dir string) []Artifact {
	var as []Artifact
	if b, err := os.ReadFile(artifactsFile(dir)); err == nil {
		_ = json.Unmarshal(b, &as)
	}
	return as
}

// repushArtifacts pushes what examples pushed before a restart again.
func repushArtifacts(ctx context.Context, dir, registry string) error {
	for _, a := range readArtifacts(dir) {
		if err := pushArtifact(ctx, registry, a); err != nil {
			return err
		}
	}
	return nil
}
