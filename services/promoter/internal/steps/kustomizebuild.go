package steps

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/caravan-cd/caravan/services/promoter/internal/workdir"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resource"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

type kustomizeBuildConfig struct {
	Path    string `json:"path" step:"required"`
	OutPath string `json:"outPath" step:"required"`
	// OutputFormat names the files of a directory outPath: kargo (the
	// default) or kustomize.
	OutputFormat string `json:"outputFormat"`
}

// kustomizeBuild renders a kustomization with the kustomize library into
// outPath: one file when outPath ends in .yaml/.yml, otherwise a directory
// with one file per resource, named [<namespace>-]<kind>-<name>.yaml
// (outputFormat kargo, the default) or as `kustomize build -o <dir>`
// names them (kustomize). Kustomize reads only inside the work dir,
// through it (see kustomizeFS): a base or file elsewhere, or a symbolic
// link leading out, is an error; inside it, files above the kustomization
// may be loaded, as in Kargo.
func kustomizeBuild(_ context.Context, sc *Context, cfg *kustomizeBuildConfig) (Result, error) {
	name := kargoFileName
	switch cfg.OutputFormat {
	case "", "kargo":
	case "kustomize":
		name = kustomizeFileName
	default:
		return Result{}, Terminal(fmt.Errorf("outputFormat must be kargo or kustomize, got %q", cfg.OutputFormat))
	}
	if err := sc.checkPath(cfg.Path); err != nil {
		return Result{}, err
	}
	if err := sc.checkPath(cfg.OutPath); err != nil {
		return Result{}, err
	}
	kfs := kustomizeFS{d: sc.Workspace.Dir}
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone
	m, err := krusty.MakeKustomizer(opts).Run(kfs, kfs.abs(cfg.Path))
	if err != nil {
		return Result{}, Terminal(fmt.Errorf("kustomize build %s: %w", cfg.Path, err))
	}
	ext := strings.ToLower(filepath.Ext(cfg.OutPath))
	if ext == ".yaml" || ext == ".yml" {
		b, err := m.AsYaml()
		if err != nil {
			return Result{}, err
		}
		return Result{}, sc.writeFile(cfg.OutPath, b)
	}
	if err := sc.Workspace.Dir.MkdirAll(cfg.OutPath); err != nil {
		return Result{}, fsError(err)
	}
	byNamespace := m.GroupedByCurrentNamespace()
	multi := len(byNamespace) > 1
	var all []*resource.Resource
	for _, ns := range slices.Sorted(maps.Keys(byNamespace)) {
		all = append(all, byNamespace[ns]...)
	}
	all = append(all, m.ClusterScoped()...)
	for _, r := range all {
		b, err := r.AsYAML()
		if err != nil {
			return Result{}, err
		}
		file := name(r, multi)
		if file != filepath.Base(file) || file == "." || file == ".." {
			return Result{}, Terminal(fmt.Errorf("resource %s %s: unsafe file name %q", r.GetKind(), r.GetName(), file))
		}
		if err := sc.writeFile(filepath.Join(cfg.OutPath, file), b); err != nil {
			return Result{}, err
		}
	}
	return Result{}, nil
}

// kargoFileName is [<namespace>-]<kind>-<name>.yaml, lower case.
func kargoFileName(r *resource.Resource, _ bool) string {
	name := r.GetKind() + "-" + r.GetName()
	if ns := r.GetNamespace(); ns != "" {
		name = ns + "-" + name
	}
	return strings.ToLower(name) + ".yaml"
}

// kustomizeFileName is [<namespace>_]<group>_<version>_<kind>_<name>.yaml,
// lower case, the namespace only when the build spans several, as
// `kustomize build -o <dir>` names files.
func kustomizeFileName(r *resource.Resource, multi bool) string {
	name := strings.ToLower(r.GetGvk().StringWoEmptyField() + "_" + r.GetName() + ".yaml")
	if ns := r.GetNamespace(); multi && ns != "" {
		name = strings.ToLower(ns) + "_" + name
	}
	return name
}

// kustomizeFS is kustomize's file system over the work dir. Kustomize
// sees the work dir's absolute path (steps.Run shows it relative in
// errors), but every file goes through the work dir: a path outside it is
// refused before anything is opened, and a symbolic link leading out
// cannot be followed; links inside it keep working.
type kustomizeFS struct{ d *workdir.Dir }

var _ filesys.FileSystem = kustomizeFS{}

// rel maps a path of kustomize's (absolute, or relative to the work dir)
// to one in the work dir.
func (k kustomizeFS) rel(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return p, nil
	}
	r, err := filepath.Rel(k.d.Path(), p)
	if err != nil || (r != "." && !filepath.IsLocal(r)) {
		return "", &workdir.OutsideError{Path: r}
	}
	return r, nil
}

// abs is the path kustomize sees for rel, a path in the work dir.
func (k kustomizeFS) abs(rel string) string {
	return filepath.Join(k.d.Path(), rel)
}

func (k kustomizeFS) Create(p string) (filesys.File, error) {
	rel, err := k.rel(p)
	if err != nil {
		return nil, err
	}
	return k.d.Create(rel, 0o644)
}

func (k kustomizeFS) Mkdir(p string) error { return k.MkdirAll(p) }

func (k kustomizeFS) MkdirAll(p string) error {
	rel, err := k.rel(p)
	if err != nil {
		return err
	}
	return k.d.MkdirAll(rel)
}

// RemoveAll removes p in the work dir. The one path outside it is
// kustomize's own clone of a remote base, which kustomize makes with
// filesys.NewTmpConfirmedDir (a "kustomize-*" directory in the temporary
// directory) and removes through this file system: it is removed on disk.
func (k kustomizeFS) RemoveAll(p string) error {
	rel, err := k.rel(p)
	if err != nil {
		if tmp, terr := filepath.EvalSymlinks(os.TempDir()); terr == nil && filepath.Dir(p) == tmp && strings.HasPrefix(filepath.Base(p), "kustomize-") {
			return os.RemoveAll(p)
		}
		return err
	}
	return k.d.RemoveAll(rel)
}

func (k kustomizeFS) Open(p string) (filesys.File, error) {
	rel, err := k.rel(p)
	if err != nil {
		return nil, err
	}
	return k.d.Open(rel)
}

func (k kustomizeFS) IsDir(p string) bool {
	rel, err := k.rel(p)
	if err != nil {
		return false
	}
	info, err := k.d.Stat(rel)
	return err == nil && info.IsDir()
}

func (k kustomizeFS) ReadDir(p string) ([]string, error) {
	rel, err := k.rel(p)
	if err != nil {
		return nil, err
	}
	entries, err := k.d.ReadDir(rel)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names, nil
}

// CleanedAbs splits p, its links resolved, into a directory and a file
// name ("" when p is a directory), as kustomize's on-disk file system.
func (k kustomizeFS) CleanedAbs(p string) (filesys.ConfirmedDir, string, error) {
	rel, err := k.rel(p)
	if err != nil {
		return "", "", err
	}
	resolved, err := k.d.Resolve(rel)
	if err != nil {
		return "", "", err
	}
	info, err := k.d.Stat(resolved)
	if err != nil {
		return "", "", err
	}
	if info.IsDir() {
		return filesys.ConfirmedDir(k.abs(resolved)), "", nil
	}
	return filesys.ConfirmedDir(k.abs(filepath.Dir(resolved))), filepath.Base(resolved), nil
}

// Exists reports whether p exists, a symbolic link leading out of the
// work dir included: reading it then says why it cannot be read.
func (k kustomizeFS) Exists(p string) bool {
	rel, err := k.rel(p)
	return err == nil && k.d.Exists(rel)
}

func (k kustomizeFS) Glob(pattern string) ([]string, error) {
	rel, err := k.rel(pattern)
	if err != nil {
		return nil, err
	}
	matches, err := fs.Glob(k.d.FS(), filepath.ToSlash(filepath.Clean(rel)))
	if err != nil {
		return nil, err
	}
	for i, m := range matches {
		matches[i] = k.abs(filepath.FromSlash(m))
	}
	if filesys.IsHiddenFilePath(pattern) {
		return matches, nil
	}
	return filesys.RemoveHiddenFiles(matches), nil
}

func (k kustomizeFS) ReadFile(p string) ([]byte, error) {
	rel, err := k.rel(p)
	if err != nil {
		return nil, err
	}
	return k.d.ReadFile(rel)
}

func (k kustomizeFS) WriteFile(p string, data []byte) error {
	rel, err := k.rel(p)
	if err != nil {
		return err
	}
	return k.d.WriteFile(rel, data)
}

func (k kustomizeFS) Walk(p string, fn filepath.WalkFunc) error {
	rel, err := k.rel(p)
	if err != nil {
		return err
	}
	return k.d.WalkDir(rel, func(q string, e fs.DirEntry, err error) error {
		if err != nil {
			return fn(k.abs(q), nil, err)
		}
		info, err := e.Info()
		return fn(k.abs(q), info, err)
	})
}
