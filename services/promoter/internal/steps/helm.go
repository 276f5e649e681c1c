package steps

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/caravan-cd/caravan/pkg/creds"
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
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/repo"
	"helm.sh/helm/v3/pkg/strvals"
)

type helmTemplateConfig struct {
	Path    string `json:"path" step:"required"`
	OutPath string `json:"outPath" step:"required"`
	// OutLayout is helm (the default) or flat.
	OutLayout string `json:"outLayout"`
	// ReleaseName is "release-name" when empty, as in Kargo.
	ReleaseName    string `json:"releaseName"`
	UseReleaseName bool   `json:"useReleaseName"`
	// Namespace is the project's when empty, as in Kargo.
	Namespace               string   `json:"namespace"`
	ValuesFiles             []string `json:"valuesFiles"`
	IgnoreMissingValueFiles bool     `json:"ignoreMissingValueFiles"`
	SetValues               []struct {
		Key     string `json:"key" step:"required"`
		Value   string `json:"value"`
		Literal bool   `json:"literal"`
	} `json:"setValues"`
	BuildDependencies bool     `json:"buildDependencies"`
	IncludeCRDs       bool     `json:"includeCRDs"`
	DisableHooks      bool     `json:"disableHooks"`
	SkipTests         bool     `json:"skipTests"`
	KubeVersion       string   `json:"kubeVersion"`
	APIVersions       []string `json:"apiVersions"`
}

// helmTemplate renders a chart with the Helm library, as `helm template`
// does. An outPath ending in .yaml or .yml is one file; otherwise it is a
// directory laid out as outLayout says: helm (the default) writes
// <outPath>/[<releaseName>/]<chart>/templates/<file> as `helm template
// --output-dir` does, flat writes one file per resource,
// [<group>-]<kind>[-<namespace>]-<name>.yaml.
func helmTemplate(ctx context.Context, sc *Context, cfg *helmTemplateConfig) (Result, error) {
	switch cfg.OutLayout {
	case "", "helm", "flat":
	default:
		return Result{}, Terminal(fmt.Errorf("outLayout must be helm or flat, got %q", cfg.OutLayout))
	}
	if err := sc.checkPath(cfg.Path); err != nil {
		return Result{}, err
	}
	if err := sc.checkPath(cfg.OutPath); err != nil {
		return Result{}, err
	}
	vals := map[string]any{}
	for _, f := range cfg.ValuesFiles {
		if err := sc.checkPath(f); err != nil {
			return Result{}, err
		}
		if cfg.IgnoreMissingValueFiles && !sc.Workspace.Dir.Exists(f) {
			continue
		}
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
		parse := strvals.ParseInto
		if s.Literal {
			parse = strvals.ParseLiteralInto
		}
		if err := parse(s.Key+"="+s.Value, vals); err != nil {
			return Result{}, Terminal(fmt.Errorf("setValues %s: %w", s.Key, err))
		}
	}
	if cfg.BuildDependencies {
		if err := sc.updateDependencies(ctx, cfg.Path, true); err != nil {
			return Result{}, err
		}
	}
	chrt, err := loadChart(sc.Workspace.Dir, cfg.Path)
	if err != nil {
		return Result{}, Terminal(fmt.Errorf("load chart %s: %w", cfg.Path, err))
	}
	if deps := chrt.Metadata.Dependencies; deps != nil {
		if err := action.CheckDependencies(chrt, deps); err != nil {
			return Result{}, Terminal(fmt.Errorf("chart %s: %w (set buildDependencies)", cfg.Path, err))
		}
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.DryRunOption = "client"
	install.ReleaseName = cfg.ReleaseName
	if install.ReleaseName == "" {
		install.ReleaseName = "release-name"
	}
	install.Namespace = cfg.Namespace
	if install.Namespace == "" {
		install.Namespace = sc.Project
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
	var hooks []*release.Hook
	if !cfg.DisableHooks {
		for _, h := range rel.Hooks {
			if !cfg.SkipTests || !isTestHook(h.Events) {
				hooks = append(hooks, h)
			}
		}
	}
	switch ext := strings.ToLower(filepath.Ext(cfg.OutPath)); {
	case ext == ".yaml" || ext == ".yml":
		var b strings.Builder
		b.WriteString(strings.TrimSpace(rel.Manifest) + "\n")
		for _, h := range hooks {
			fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
		}
		return Result{}, sc.writeFile(cfg.OutPath, []byte(b.String()))
	case cfg.OutLayout == "flat":
		docs := []string{rel.Manifest}
		for _, h := range hooks {
			docs = append(docs, h.Manifest)
		}
		return Result{}, sc.writeFlat(cfg.OutPath, docs)
	}
	dir := cfg.OutPath
	if cfg.UseReleaseName {
		dir = filepath.Join(dir, install.ReleaseName)
	}
	written := map[string]bool{}
	for _, t := range templates(rel.Manifest) {
		if err := sc.writeTemplate(dir, t.name, t.content, written[t.name]); err != nil {
			return Result{}, err
		}
		written[t.name] = true
	}
	for _, h := range hooks {
		exists := sc.Workspace.Dir.Exists(filepath.Join(dir, h.Path))
		if err := sc.writeTemplate(dir, h.Path, h.Manifest, exists); err != nil {
			return Result{}, err
		}
	}
	return Result{}, nil
}

type template struct{ name, content string }

// templates splits a release's manifest, "---\n# Source: <name>\n<doc>\n"
// for each document, into its documents.
func templates(manifest string) []template {
	const sep = "---\n# Source: "
	var out []template
	for _, part := range strings.Split("\n"+manifest, "\n"+sep)[1:] {
		name, content, _ := strings.Cut(part, "\n")
		out = append(out, template{name: name, content: strings.TrimSuffix(content, "\n")})
	}
	return out
}

// writeTemplate writes one rendered template to dir/name as Helm's
// --output-dir does, appending when the file holds documents already.
func (sc *Context) writeTemplate(dir, name, content string, appendTo bool) error {
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := sc.checkPath(p); err != nil {
		return err
	}
	text := fmt.Sprintf("---\n# Source: %s\n%s\n", name, content)
	if appendTo {
		old, err := sc.readFile(p)
		if err != nil {
			return err
		}
		text = string(old) + text
	}
	return sc.writeFile(p, []byte(text))
}

// writeFlat writes each document of the manifests to a file of its own in
// dir, named [<group>-]<kind>[-<namespace>]-<name>.yaml as Kargo names
// them.
func (sc *Context) writeFlat(dir string, manifests []string) error {
	if err := sc.Workspace.Dir.MkdirAll(dir); err != nil {
		return fsError(err)
	}
	i := 0
	for _, m := range manifests {
		for _, doc := range splitDocuments(m) {
			doc = strings.TrimSpace(doc)
			if doc == "" {
				continue
			}
			name := resourceFileName(doc)
			if name == "" {
				name = fmt.Sprintf("resource-%d.yaml", i)
				i++
			}
			if err := sc.writeFile(filepath.Join(dir, name), []byte(doc)); err != nil {
				return err
			}
		}
	}
	return nil
}

// splitDocuments splits a YAML stream at its "---" lines.
func splitDocuments(stream string) []string {
	var docs []string
	var cur strings.Builder
	for _, line := range strings.SplitAfter(stream, "\n") {
		if strings.TrimRight(line, " \r\n") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(line)
	}
	return append(docs, cur.String())
}

// resourceFileName names the file of one resource:
// [<group>-]<kind>[-<namespace>]-<name>.yaml, lower case, the group's dots
// as underscores; "" when the document has no kind or name.
func resourceFileName(doc string) string {
	var meta struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Metadata   struct {
			Name      string `yaml:"name"`
			Namespace string `yaml:"namespace"`
		} `yaml:"metadata"`
	}
	if yaml.Unmarshal([]byte(doc), &meta) != nil || meta.Kind == "" || meta.Metadata.Name == "" {
		return ""
	}
	name := meta.Kind
	if i := strings.LastIndex(meta.APIVersion, "/"); i > 0 {
		name = strings.ReplaceAll(meta.APIVersion[:i], ".", "_") + "-" + name
	}
	if meta.Metadata.Namespace != "" {
		name += "-" + meta.Metadata.Namespace
	}
	name += "-" + meta.Metadata.Name
	return strings.ReplaceAll(strings.ToLower(name), string(filepath.Separator), "_") + ".yaml"
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

type helmUpdateChartConfig struct {
	Path   string `json:"path" step:"required"`
	Charts []struct {
		Repository string `json:"repository" step:"required"`
		Name       string `json:"name" step:"required"`
		// Version is the freight's version of the chart when empty
		// (Caravan's; Kargo requires it).
		Version string `json:"version"`
	} `json:"charts"`
}

// helmUpdateChart sets dependency versions in a chart's Chart.yaml, in
// place, and updates its dependencies (charts/ and Chart.lock), as `helm
// dependency update`. Output: commitMessage.
func helmUpdateChart(ctx context.Context, sc *Context, cfg *helmUpdateChartConfig) (Result, error) {
	file := filepath.Join(cfg.Path, "Chart.yaml")
	b, err := sc.readFile(file)
	if err != nil {
		return Result{}, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Result{}, Terminal(fmt.Errorf("parse %s: %w", file, err))
	}
	if len(doc.Content) == 0 {
		return Result{}, Terminal(fmt.Errorf("%s is empty", file))
	}
	deps := mappingValue(doc.Content[0], "dependencies")
	if deps == nil {
		return Result{}, Terminal(fmt.Errorf("%s has no dependencies", file))
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
		for j, d := range deps.Content {
			repo, name := mappingValue(d, "repository"), mappingValue(d, "name")
			if repo != nil && name != nil && strings.TrimSuffix(repo.Value, "/") == strings.TrimSuffix(c.Repository, "/") && name.Value == c.Name {
				if b, err = setYAML(b, fmt.Sprintf("dependencies.%d.version", j), version); err != nil {
					return Result{}, Terminal(fmt.Errorf("%s: dependency %s: %w", file, c.Name, err))
				}
				found = true
			}
		}
		if !found {
			return Result{}, Terminal(fmt.Errorf("charts[%d]: %s has no dependency %s from %s", i, file, c.Name, c.Repository))
		}
		lines = append(lines, fmt.Sprintf("%s/%s:%s", strings.TrimSuffix(c.Repository, "/"), c.Name, version))
	}
	if err := sc.checkPath(cfg.Path); err != nil {
		return Result{}, err
	}
	if _, err := chartOnDisk(sc.Workspace.Dir, cfg.Path); err != nil {
		return Result{}, fsError(fmt.Errorf("helm-update-chart %s: %w", cfg.Path, err))
	}
	if err := sc.writeFile(file, b); err != nil {
		return Result{}, err
	}
	if err := sc.updateDependencies(ctx, cfg.Path, false); err != nil {
		return Result{}, err
	}
	msg := fmt.Sprintf("Updated chart dependencies for %s\n\n- %s", cfg.Path, strings.Join(lines, "\n- "))
	return Result{Output: map[string]any{"commitMessage": msg}}, nil
}

// updateDependencies fetches the dependencies of the chart at path into
// its charts/ directory: from Chart.lock when build and the chart has one
// (`helm dependency build`), otherwise resolving Chart.yaml's and writing
// Chart.lock (`helm dependency update`). Each repository is reached with
// the project's helm credentials for it, if any, and nothing of the
// server's own Helm or Docker configuration.
func (sc *Context) updateDependencies(ctx context.Context, path string, build bool) error {
	dir, err := chartOnDisk(sc.Workspace.Dir, path)
	if err != nil {
		return fsError(fmt.Errorf("chart %s: %w", path, err))
	}
	ch, err := loadChart(sc.Workspace.Dir, path)
	if err != nil {
		return fsError(fmt.Errorf("chart %s: %w", path, err))
	}
	home, err := os.MkdirTemp("", "helm-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(home) }()
	settings := cli.New()
	settings.RepositoryConfig = filepath.Join(home, "repositories.yaml")
	settings.RepositoryCache = filepath.Join(home, "cache")
	registryConfig := filepath.Join(home, "registry.json")
	plainHTTP, err := sc.helmCredentials(ctx, ch.Metadata.Dependencies, settings.RepositoryConfig, registryConfig)
	if err != nil {
		return err
	}
	opts := []registry.ClientOption{
		registry.ClientOptHTTPClient(&http.Client{Transport: sc.Egress.Transport(false)}),
		registry.ClientOptCredentialsFile(registryConfig),
	}
	if plainHTTP {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	rc, err := registry.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("registry client: %w", err)
	}
	m := &downloader.Manager{
		Out:              io.Discard,
		ChartPath:        dir,
		Getters:          getter.All(settings, getter.WithTransport(sc.Egress.Transport(false))),
		RegistryClient:   rc,
		RepositoryConfig: settings.RepositoryConfig,
		RepositoryCache:  settings.RepositoryCache,
		// The repositories' indexes are fetched into the fresh cache above
		// (through the egress policy): without them no http(s) dependency
		// resolves.
		SkipUpdate: false,
	}
	if build {
		err = m.Build()
	} else {
		err = m.Update()
	}
	if err != nil {
		return fmt.Errorf("dependencies of %s: %w", path, err)
	}
	return nil
}

// helmCredentials writes, for Helm, the project's helm credentials of the
// dependencies' repositories: an http(s) repository's into the
// repositories file (Helm sends them to that host only), an OCI
// registry's into the registry credentials file, which is written always,
// so that Helm never reads the server's own. It reports whether the OCI
// registries are on loopback, reached over plain HTTP like the oci steps'.
func (sc *Context) helmCredentials(ctx context.Context, deps []*chart.Dependency, repoFile, registryFile string) (bool, error) {
	repos := repo.NewFile()
	auths := map[string]any{}
	plainHTTP := false
	for i, d := range deps {
		r := strings.TrimSuffix(d.Repository, "/")
		if r == "" || model.IsLocalChartDependency(r) || strings.HasPrefix(r, "@") || strings.HasPrefix(r, "alias:") {
			continue
		}
		oci := registry.IsOCI(r)
		candidates := []string{r}
		if oci {
			// A Warehouse names an OCI chart by its own repository.
			candidates = []string{r + "/" + d.Name, r}
		}
		var c *creds.Credentials
		for _, u := range candidates {
			if sc.RepoCredentials == nil {
				break
			}
			var err error
			if c, err = sc.RepoCredentials(ctx, sc.Project, model.CredTypeHelm, u); err != nil {
				return false, fmt.Errorf("credentials for %s: %w", u, err)
			}
			if c != nil {
				break
			}
		}
		if oci {
			host, _, _ := strings.Cut(strings.TrimPrefix(r, "oci://"), "/")
			h := strings.Split(host, ":")[0]
			plainHTTP = plainHTTP || h == "localhost" || h == "127.0.0.1"
			if c != nil {
				auths[host] = map[string]any{"auth": base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + c.Password))}
			}
			continue
		}
		if c != nil {
			repos.Update(&repo.Entry{Name: fmt.Sprintf("dependency-%d", i), URL: r, Username: c.Username, Password: c.Password})
		}
	}
	if err := repos.WriteFile(repoFile, 0o600); err != nil {
		return false, err
	}
	b, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		return false, err
	}
	return plainHTTP, os.WriteFile(registryFile, b, 0o600)
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
