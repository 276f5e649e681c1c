package steps

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/caravan-cd/caravan/services/promoter/internal/workdir"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomizeBuild renders a kustomization with the kustomize library into
// outPath: one file when outPath ends in .yaml/.yml, otherwise a directory
// with one file per resource (<kind>-<name>.yaml). Kustomize reads only
// inside the work dir, through it (see kustomizeFS): a base or file
// elsewhere, or a symbolic link leading out, is an error.
func kustomizeBuild(_ context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path    string `json:"path"`
		OutPath string `json:"outPath"`
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
	kfs := kustomizeFS{d: sc.Workspace.Dir}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(kfs, kfs.abs(cfg.Path))
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
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			return Result{}, err
		}
		name := strings.ToLower(r.GetKind() + "-" + r.GetName() + ".yaml")
		name = strings.ReplaceAll(name, string(filepath.Separator), "_")
		if err := sc.writeFile(filepath.Join(cfg.OutPath, name), b); err != nil {
			return Result{}, err
		}
	}
	return Result{}, nil
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
