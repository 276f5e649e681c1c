package steps

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomizeBuild renders a kustomization with the kustomize library into
// outPath: one file when outPath ends in .yaml/.yml, otherwise a directory
// with one file per resource (<kind>-<name>.yaml). Kustomize reads only
// inside the work dir: a base or file elsewhere is an error.
func kustomizeBuild(_ context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path    string `json:"path"`
		OutPath string `json:"outPath"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	in, err := sc.Path(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	out, err := sc.Path(cfg.OutPath)
	if err != nil {
		return Result{}, err
	}
	root, err := filepath.EvalSymlinks(sc.Workspace.Dir)
	if err != nil {
		return Result{}, err
	}
	fs := confinedFS{FileSystem: filesys.MakeFsOnDisk(), root: root}
	opts := krusty.MakeDefaultOptions()
	m, err := krusty.MakeKustomizer(opts).Run(fs, in)
	if err != nil {
		return Result{}, Terminal(fmt.Errorf("kustomize build %s: %w", cfg.Path, err))
	}
	ext := strings.ToLower(filepath.Ext(out))
	if ext == ".yaml" || ext == ".yml" {
		b, err := m.AsYaml()
		if err != nil {
			return Result{}, err
		}
		if err := os.MkdirAll(filepath.Dir(out), 0o750); err != nil {
			return Result{}, err
		}
		return Result{}, os.WriteFile(out, b, 0o644)
	}
	if err := os.MkdirAll(out, 0o750); err != nil {
		return Result{}, err
	}
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			return Result{}, err
		}
		name := strings.ToLower(r.GetKind() + "-" + r.GetName() + ".yaml")
		name = strings.ReplaceAll(name, string(filepath.Separator), "_")
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return Result{}, err
		}
	}
	return Result{}, nil
}

// errOutside: kustomize tried to read outside the work dir.
var errOutside = errors.New("outside the work dir")

// confinedFS is the on-disk file system with reads limited to root.
type confinedFS struct {
	filesys.FileSystem
	root string
}

func (c confinedFS) check(p string) error {
	abs, err := filepath.Abs(p)
	if err != nil {
		return err
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if os.IsNotExist(err) {
			resolved = abs
		} else {
			return err
		}
	}
	if !within(c.root, resolved) {
		return fmt.Errorf("%s: %w", p, errOutside)
	}
	return nil
}

func (c confinedFS) Open(p string) (filesys.File, error) {
	if err := c.check(p); err != nil {
		return nil, err
	}
	return c.FileSystem.Open(p)
}

func (c confinedFS) ReadFile(p string) ([]byte, error) {
	if err := c.check(p); err != nil {
		return nil, err
	}
	return c.FileSystem.ReadFile(p)
}

func (c confinedFS) ReadDir(p string) ([]string, error) {
	if err := c.check(p); err != nil {
		return nil, err
	}
	return c.FileSystem.ReadDir(p)
}

func (c confinedFS) IsDir(p string) bool {
	return c.check(p) == nil && c.FileSystem.IsDir(p)
}

func (c confinedFS) Exists(p string) bool {
	return c.check(p) == nil && c.FileSystem.Exists(p)
}

func (c confinedFS) CleanedAbs(p string) (filesys.ConfirmedDir, string, error) {
	if err := c.check(p); err != nil {
		return "", "", err
	}
	return c.FileSystem.CleanedAbs(p)
}

func (c confinedFS) Glob(pattern string) ([]string, error) {
	matches, err := c.FileSystem.Glob(pattern)
	if err != nil {
		return nil, err
	}
	out := matches[:0]
	for _, m := range matches {
		if c.check(m) == nil {
			out = append(out, m)
		}
	}
	return out, nil
}

func (c confinedFS) Walk(p string, fn filepath.WalkFunc) error {
	if err := c.check(p); err != nil {
		return err
	}
	return c.FileSystem.Walk(p, fn)
}
