package steps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/promoter/internal/workdir"
	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/downloader"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/ignore"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/strvals"
)

// helmTemplate renders a chart with the Helm library, as `helm template`
// does, into outPath: one file when it ends in .yaml/.yml, otherwise one
// file per template under outPath.
func helmTemplate(ctx context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path        string   `json:"path"`
		OutPath     string   `json:"outPath"`
		ReleaseName string   `json:"releaseName"`
		Namespace   string   `json:"namespace"`
		ValuesFiles []string `json:"valuesFiles"`
		SetValues   []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"setValues"`
		IncludeCRDs  bool     `json:"includeCRDs"`
		DisableHooks bool     `json:"disableHooks"`
		SkipTests    bool     `json:"skipTests"`
		KubeVersion  string   `json:"kubeVersion"`
		APIVersions  []string `json:"apiVersions"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	if err := sc.checkPath(cfg.Path); err != nil {
		return Result{}, err
	}
	if err := sc.checkPath(cfg.OutPath); err != nil {
		return Result{}, err
	}
	chrt, err := loadChart(sc.Workspace.Dir, cfg.Path)
	if err != nil {
		return Result{}, Terminal(fmt.Errorf("load chart %s: %w", cfg.Path, err))
	}
	vals := map[string]any{}
	for _, f := range cfg.ValuesFiles {
		b, err := sc.readFile(f)
		if err != nil {
			return Result{}, err
		}
		v, err := chartutil.ReadValues(b)
		if err != nil {
			return Result{}, Terminal(fmt.Errorf("values file %s: %w", f, err))
		}
		vals = chartutil.CoalesceTables(v.AsMap(), vals)
	}
	for _, s := range cfg.SetValues {
		if err := strvals.ParseInto(s.Key+"="+fmt.Sprint(s.Value), vals); err != nil {
			return Result{}, Terminal(fmt.Errorf("setValues %s: %w", s.Key, err))
		}
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName = cfg.ReleaseName
	if install.ReleaseName == "" {
		install.ReleaseName = chrt.Name()
	}
	install.Namespace = cfg.Namespace
	if install.Namespace == "" {
		install.Namespace = "default"
	}
	install.IncludeCRDs = cfg.IncludeCRDs
	install.DisableHooks = cfg.DisableHooks
	if cfg.KubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(cfg.KubeVersion)
		if err != nil {
			return Result{}, Terminal(fmt.Errorf("kubeVersion: %w", err))
		}
		install.KubeVersion = kv
	}
	install.APIVersions = cfg.APIVersions
	rel, err := install.RunWithContext(ctx, chrt, vals)
	if err != nil {
		return Result{}, Terminal(fmt.Errorf("render chart %s: %w", cfg.Path, err))
	}
	var manifests bytes.Buffer
	manifests.WriteString(strings.TrimSpace(rel.Manifest))
	if !cfg.DisableHooks {
		for _, h := range rel.Hooks {
			if cfg.SkipTests && isTestHook(h.Events) {
				continue
			}
			fmt.Fprintf(&manifests, "\n---\n# Source: %s\n%s", h.Path, strings.TrimSpace(h.Manifest))
		}
	}
	manifests.WriteString("\n")
	if ext := strings.ToLower(filepath.Ext(cfg.OutPath)); ext == ".yaml" || ext == ".yml" {
		return Result{}, sc.writeFile(cfg.OutPath, manifests.Bytes())
	}
	split := releaseutil.SplitManifests(manifests.String())
	keys := make([]string, 0, len(split))
	for k := range split {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	for i, k := range keys {
		var doc struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		}
		_ = yaml.Unmarshal([]byte(split[k]), &doc)
		name := fmt.Sprintf("%03d.yaml", i)
		if doc.Kind != "" {
			name = strings.ToLower(doc.Kind + "-" + doc.Metadata.Name + ".yaml")
			name = strings.ReplaceAll(name, string(filepath.Separator), "_")
		}
		if err := sc.writeFile(filepath.Join(cfg.OutPath, name), []byte(strings.TrimSpace(split[k])+"\n")); err != nil {
			return Result{}, err
		}
	}
	return Result{}, nil
}

// utf8BOM is what Helm's loader strips from the start of chart files.
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// loadChart loads the chart at path in the work dir, a directory or a
// packaged chart, as Helm's loader.Load does (.helmignore included) but
// through the work dir: a symbolic link in the chart is followed only
// while it stays inside the work dir. Helm's own loader follows any link.
func loadChart(d *workdir.Dir, path string) (*chart.Chart, error) {
	info, err := d.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		f, err := d.Open(path)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		return loader.LoadArchive(f)
	}
	rules := ignore.Empty()
	if b, err := d.ReadFile(filepath.Join(path, ignore.HelmIgnore)); err == nil {
		if rules, err = ignore.Parse(bytes.NewReader(b)); err != nil {
			return nil, fmt.Errorf("%s: %w", ignore.HelmIgnore, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	rules.AddDefaults()
	var files []*loader.BufferedFile
	err = d.Walk(path, func(p string, fi fs.FileInfo) error {
		n, err := filepath.Rel(path, p)
		if err != nil || n == "." {
			return err
		}
		n = filepath.ToSlash(n)
		if fi.IsDir() {
			if rules.Ignore(n, fi) {
				return fs.SkipDir
			}
			return nil
		}
		if rules.Ignore(n, fi) {
			return nil
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		if fi.Size() > loader.MaxDecompressedFileSize {
			return fmt.Errorf("%s is larger than the maximum chart file size %d", p, loader.MaxDecompressedFileSize)
		}
		data, err := d.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: n, Data: bytes.TrimPrefix(data, utf8BOM)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return loader.LoadFiles(files)
}

// chartOnDisk vets the chart at path for Helm's dependency manager, which
// opens files on disk itself: no symbolic link in the chart or in a
// file:// dependency leaves the work dir, and no file:// dependency lies
// outside it. It returns the chart's path on disk.
func chartOnDisk(d *workdir.Dir, path string) (string, error) {
	rel, err := d.Resolve(path)
	if err != nil {
		return "", err
	}
	if err := d.Check(rel); err != nil {
		return "", err
	}
	chrt, err := loadChart(d, rel)
	if err != nil {
		return "", fmt.Errorf("load chart %s: %w", path, err)
	}
	for _, dep := range chrt.Metadata.Dependencies {
		p, ok := strings.CutPrefix(dep.Repository, "file://")
		if !ok {
			continue
		}
		// Helm joins the path to the chart's as written.
		local := filepath.Join(rel, p)
		if filepath.IsAbs(p) || (local != "." && !filepath.IsLocal(local)) {
			return "", fmt.Errorf("dependency %s: repository %s: %w", dep.Name, dep.Repository, &workdir.OutsideError{Path: p, Absolute: filepath.IsAbs(p)})
		}
		if err := d.Check(local); err != nil {
			return "", fmt.Errorf("dependency %s: repository %s: %w", dep.Name, dep.Repository, err)
		}
	}
	return filepath.Join(d.Path(), rel), nil
}

func isTestHook[T ~string](events []T) bool {
	for _, e := range events {
		if string(e) == "test" || string(e) == "test-success" {
			return true
		}
	}
	return false
}

// helmUpdateChart sets dependency versions in a chart's Chart.yaml (from
// the freight when a dependency has no version given) and updates its
// dependencies (charts/ and Chart.lock), as `helm dependency update`.
// Output: commitMessage.
func helmUpdateChart(_ context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path   string `json:"path"`
		Charts []struct {
			Repository string `json:"repository"`
			Name       string `json:"name"`
			Version    string `json:"version"`
		} `json:"charts"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	file := filepath.Join(cfg.Path, "Chart.yaml")
	b, err := sc.readFile(file)
	if err != nil {
		return Result{}, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Result{}, Terminal(fmt.Errorf("parse %s/Chart.yaml: %w", cfg.Path, err))
	}
	if len(doc.Content) == 0 {
		return Result{}, Terminal(fmt.Errorf("%s/Chart.yaml is empty", cfg.Path))
	}
	deps := mappingValue(doc.Content[0], "dependencies")
	if deps == nil {
		return Result{}, Terminal(fmt.Errorf("%s/Chart.yaml has no dependencies", cfg.Path))
	}
	var lines []string
	for i, c := range cfg.Charts {
		if model.IsLocalChartDependency(c.Repository) {
			// A subchart in the work dir: checked with the chart's tree below.
		} else if err := model.CheckRepoURL(model.RepoChart, c.Repository); err != nil {
			return Result{}, Terminal(fmt.Errorf("charts[%d].repository: %w", i, err))
		}
		version := c.Version
		if version == "" {
			v, ok := chartFromFreight(sc.Freight, c.Repository, c.Name)
			if !ok {
				return Result{}, Terminal(fmt.Errorf("charts[%d]: no version given and no chart %s from %s in the freight", i, c.Name, c.Repository))
			}
			version = v
		}
		found := false
		for _, d := range deps.Content {
			repo, name := mappingValue(d, "repository"), mappingValue(d, "name")
			if repo != nil && name != nil && strings.TrimSuffix(repo.Value, "/") == strings.TrimSuffix(c.Repository, "/") && name.Value == c.Name {
				setScalar(d, "version", version)
				found = true
			}
		}
		if !found {
			return Result{}, Terminal(fmt.Errorf("charts[%d]: %s/Chart.yaml has no dependency %s from %s", i, cfg.Path, c.Name, c.Repository))
		}
		lines = append(lines, fmt.Sprintf("%s/%s:%s", strings.TrimSuffix(c.Repository, "/"), c.Name, version))
	}
	out, err := encodeYAML(&doc)
	if err != nil {
		return Result{}, err
	}
	dir, err := chartOnDisk(sc.Workspace.Dir, cfg.Path)
	if err != nil {
		return Result{}, fsError(fmt.Errorf("helm-update-chart %s: %w", cfg.Path, err))
	}
	if err := sc.writeFile(file, out); err != nil {
		return Result{}, err
	}
	home, err := os.MkdirTemp("", "helm-")
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = os.RemoveAll(home) }()
	settings := cli.New()
	settings.RepositoryConfig = filepath.Join(home, "repositories.yaml")
	settings.RepositoryCache = filepath.Join(home, "cache")
	m := &downloader.Manager{
		Out:              io.Discard,
		ChartPath:        dir,
		Getters:          getter.All(settings, getter.WithTransport(sc.Egress.Transport(false))),
		RepositoryConfig: settings.RepositoryConfig,
		RepositoryCache:  settings.RepositoryCache,
		// The repositories' indexes are fetched into the fresh cache above
		// (through the egress policy): without them no http(s) dependency
		// resolves.
		SkipUpdate: false,
	}
	if err := m.Update(); err != nil {
		return Result{}, fmt.Errorf("update dependencies of %s: %w", cfg.Path, err)
	}
	msg := fmt.Sprintf("Updated chart dependencies for %s\n\n- %s", cfg.Path, strings.Join(lines, "\n- "))
	return Result{Output: map[string]any{"commitMessage": msg}}, nil
}

func chartFromFreight(freight []model.FreightReference, repo, name string) (string, bool) {
	for _, f := range freight {
		for _, c := range f.Charts {
			if model.NormalizeChartURL(c.RepoURL) == model.NormalizeChartURL(repo) && (name == "" || c.Name == name) {
				return c.Version, true
			}
		}
	}
	return "", false
}
