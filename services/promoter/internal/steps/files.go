package steps

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/caravan-cd/caravan/services/promoter/internal/workdir"
	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
	"github.com/pelletier/go-toml/v2"
	"go.yaml.in/yaml/v3"
)

type keyValue struct {
	Key   string `json:"key" step:"required"`
	Value any    `json:"value"`
}

type updateConfig struct {
	Path    string     `json:"path" step:"required"`
	Updates []keyValue `json:"updates" step:"required"`
}

// updateFile runs an *-update step: set changes one key of the file's
// content in place, and line renders a value for the commit message.
func updateFile(sc *Context, cfg *updateConfig, set func(doc []byte, key string, value any) ([]byte, error), line func(value any) string) (Result, error) {
	if len(cfg.Updates) == 0 {
		return Result{}, Terminal(errors.New("updates: at least one is required"))
	}
	b, err := sc.readFile(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	msg := fmt.Sprintf("Updated %s\n", cfg.Path)
	for _, u := range cfg.Updates {
		if err := checkScalar(u.Value); err != nil {
			return Result{}, Terminal(fmt.Errorf("%s: key %s: %w", cfg.Path, u.Key, err))
		}
		if b, err = set(b, u.Key, u.Value); err != nil {
			return Result{}, Terminal(fmt.Errorf("%s: key %s: %w", cfg.Path, u.Key, err))
		}
		msg += fmt.Sprintf("\n- %s: %s", u.Key, line(u.Value))
	}
	if err := sc.writeFile(cfg.Path, b); err != nil {
		return Result{}, err
	}
	return Result{Output: map[string]any{"commitMessage": msg}}, nil
}

// readFile reads path in the work dir; failing to is terminal.
func (sc *Context) readFile(path string) ([]byte, error) {
	if err := sc.checkPath(path); err != nil {
		return nil, err
	}
	b, err := sc.Workspace.Dir.ReadFile(path)
	if err != nil {
		return nil, Terminal(fmt.Errorf("read %s: %w", path, err))
	}
	return b, nil
}

// writeFile writes path in the work dir, creating its directories.
func (sc *Context) writeFile(path string, b []byte) error {
	if err := sc.checkPath(path); err != nil {
		return err
	}
	if err := sc.Workspace.Dir.WriteFile(path, b); err != nil {
		return fsError(fmt.Errorf("write %s: %w", path, err))
	}
	return nil
}

// yamlUpdate changes keys of a YAML file in place.
func yamlUpdate(_ context.Context, sc *Context, cfg *updateConfig) (Result, error) {
	return updateFile(sc, cfg, setYAML, quoteIfAmbiguous)
}

// quoteIfAmbiguous renders a value for a commit message as Kargo's
// yaml-update does: a string that would read as a number, a boolean or
// JSON is quoted.
func quoteIfAmbiguous(v any) string {
	s, ok := v.(string)
	if !ok {
		return fmt.Sprint(v)
	}
	_, errF := strconv.ParseFloat(s, 64)
	_, errB := strconv.ParseBool(s)
	if errF == nil || errB == nil || json.Valid([]byte(s)) {
		return strconv.Quote(s)
	}
	return s
}

// jsonUpdate changes keys of a JSON file in place, with sjson as Kargo
// does: no key sorting, other numbers kept as written.
func jsonUpdate(_ context.Context, sc *Context, cfg *updateConfig) (Result, error) {
	return updateFile(sc, cfg, setJSON, func(v any) string {
		if s, ok := v.(string); ok {
			return strconv.Quote(s)
		}
		return fmt.Sprint(v)
	})
}

// tomlUpdate changes existing keys of a TOML file in place.
func tomlUpdate(_ context.Context, sc *Context, cfg *updateConfig) (Result, error) {
	return updateFile(sc, cfg, setTOML, func(v any) string {
		text, err := tomlValue(v, nil, 0)
		if err != nil {
			return fmt.Sprint(v)
		}
		return text
	})
}

type parseConfig struct {
	Path    string `json:"path" step:"required"`
	Outputs []struct {
		Name           string `json:"name" step:"required"`
		FromExpression string `json:"fromExpression" step:"required"`
	} `json:"outputs" step:"required"`
}

// parseStep reads a file with decode and evaluates each output's
// expression against its content.
func parseStep(sc *Context, cfg *parseConfig, decode func([]byte) (map[string]any, error)) (Result, error) {
	b, err := sc.readFile(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	doc, err := decode(b)
	if err != nil {
		return Result{}, Terminal(fmt.Errorf("parse %s: %w", cfg.Path, err))
	}
	out := map[string]any{}
	for _, o := range cfg.Outputs {
		v, err := sc.Eval(o.FromExpression, doc)
		if err != nil {
			return Result{}, Terminal(fmt.Errorf("output %s: %w", o.Name, err))
		}
		out[o.Name] = v
	}
	return Result{Output: out}, nil
}

func jsonNormalize(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	return out, json.Unmarshal(b, &out)
}

func yamlParse(_ context.Context, sc *Context, cfg *parseConfig) (Result, error) {
	return parseStep(sc, cfg, func(b []byte) (map[string]any, error) {
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		return jsonNormalize(v)
	})
}

func jsonParse(_ context.Context, sc *Context, cfg *parseConfig) (Result, error) {
	return parseStep(sc, cfg, func(b []byte) (map[string]any, error) {
		v := map[string]any{}
		return v, json.Unmarshal(b, &v)
	})
}

func tomlParse(_ context.Context, sc *Context, cfg *parseConfig) (Result, error) {
	return parseStep(sc, cfg, func(b []byte) (map[string]any, error) {
		v := map[string]any{}
		if err := toml.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		return jsonNormalize(v)
	})
}

type yamlMergeConfig struct {
	InFiles            []string `json:"inFiles" step:"required"`
	OutFile            string   `json:"outFile" step:"required"`
	IgnoreMissingFiles bool     `json:"ignoreMissingFiles"`
}

// yamlMerge merges inFiles, in order, into outFile: mappings merge key by
// key, anything else (a list included) is replaced by the later file's,
// and a null removes the key. The first file's comments and key order are
// kept. A missing input file fails the step unless ignoreMissingFiles.
// Output: commitMessage.
func yamlMerge(_ context.Context, sc *Context, cfg *yamlMergeConfig) (Result, error) {
	var merged *yaml.Node
	var used []string
	for _, in := range cfg.InFiles {
		if err := sc.checkPath(in); err != nil {
			return Result{}, err
		}
		b, err := sc.Workspace.Dir.ReadFile(in)
		if errors.Is(err, fs.ErrNotExist) && cfg.IgnoreMissingFiles {
			continue
		}
		if err != nil {
			return Result{}, Terminal(fmt.Errorf("read %s: %w", in, err))
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return Result{}, Terminal(fmt.Errorf("parse %s: %w", in, err))
		}
		used = append(used, in)
		if doc.Kind == 0 || len(doc.Content) == 0 {
			continue
		}
		if merged == nil {
			merged = doc.Content[0]
			continue
		}
		merged = mergeNodes(merged, doc.Content[0])
	}
	if err := sc.checkPath(cfg.OutFile); err != nil {
		return Result{}, err
	}
	var out []byte
	if merged != nil {
		var err error
		if out, err = encodeYAML(merged); err != nil {
			return Result{}, err
		}
	}
	if err := sc.writeFile(cfg.OutFile, out); err != nil {
		return Result{}, err
	}
	msg := "no YAML files merged"
	if len(used) > 1 {
		msg = fmt.Sprintf("Merged YAML files to %s\n", cfg.OutFile)
		for _, f := range used {
			msg += "\n- " + f
		}
	}
	return Result{Output: map[string]any{"commitMessage": msg}}, nil
}

// mergeNodes merges over into base: mappings key by key, anything else
// replaced; a null value removes its key.
func mergeNodes(base, over *yaml.Node) *yaml.Node {
	if base.Kind != yaml.MappingNode || over.Kind != yaml.MappingNode {
		return over
	}
	for i := 0; i+1 < len(over.Content); i += 2 {
		k, v := over.Content[i], over.Content[i+1]
		j := -1
		for b := 0; b+1 < len(base.Content); b += 2 {
			if base.Content[b].Value == k.Value {
				j = b
				break
			}
		}
		switch {
		case v.Tag == "!!null" && j >= 0:
			base.Content = append(base.Content[:j], base.Content[j+2:]...)
		case v.Tag == "!!null":
		case j >= 0:
			base.Content[j+1] = mergeNodes(base.Content[j+1], v)
		default:
			base.Content = append(base.Content, k, v)
		}
	}
	return base
}

func encodeYAML(n *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type fileWriteConfig struct {
	Path     string `json:"path" step:"required"`
	Contents string `json:"contents"`
	// Permissions is an octal mode ("0644"); 0600 when empty.
	Permissions string `json:"permissions"`
	Overwrite   bool   `json:"overwrite"`
}

// fileWrite writes contents to path, mode 0600 unless permissions say
// otherwise; a file already there is an error unless overwrite.
func fileWrite(_ context.Context, sc *Context, cfg *fileWriteConfig) (Result, error) {
	mode := fs.FileMode(0o600)
	if cfg.Permissions != "" {
		m, err := strconv.ParseUint(cfg.Permissions, 8, 32)
		switch {
		case err != nil || len(cfg.Permissions) != 4 || cfg.Permissions[0] != '0':
			return Result{}, Terminal(fmt.Errorf("permissions %q: want an octal mode such as 0644", cfg.Permissions))
		case m&0o111 != 0:
			return Result{}, Terminal(fmt.Errorf("permissions %q: a written file is not executable", cfg.Permissions))
		case m&0o002 != 0:
			return Result{}, Terminal(fmt.Errorf("permissions %q: a written file is not world-writable", cfg.Permissions))
		}
		mode = fs.FileMode(m)
	}
	if err := sc.checkPath(cfg.Path); err != nil {
		return Result{}, err
	}
	if rel, _ := sc.Workspace.Dir.Resolve(cfg.Path); rel == ".git" || strings.HasPrefix(rel, ".git"+string(filepath.Separator)) {
		return Result{}, Terminal(fmt.Errorf("path %q is in a .git directory", cfg.Path))
	}
	d := sc.Workspace.Dir
	if d.Exists(cfg.Path) && !cfg.Overwrite {
		return Result{}, Terminal(fmt.Errorf("%s exists: set overwrite to replace it", cfg.Path))
	}
	f, err := d.Create(cfg.Path, mode)
	if err != nil {
		return Result{}, fsError(fmt.Errorf("write %s: %w", cfg.Path, err))
	}
	if _, err := f.WriteString(cfg.Contents); err != nil {
		_ = f.Close()
		return Result{}, err
	}
	if err := f.Close(); err != nil {
		return Result{}, err
	}
	return Result{}, fsError(d.Chmod(cfg.Path, mode))
}

type deleteConfig struct {
	Path          string   `json:"path"`
	Paths         []string `json:"paths"`
	PathsAreGlobs bool     `json:"pathsAreGlobs"`
	Strict        bool     `json:"strict"`
}

// deleteStep removes files and directories: path or paths, glob patterns
// when pathsAreGlobs. One that does not exist (a pattern matching nothing)
// fails the step only when strict.
func deleteStep(_ context.Context, sc *Context, cfg *deleteConfig) (Result, error) {
	if (cfg.Path == "") == (len(cfg.Paths) == 0) {
		return Result{}, Terminal(errors.New("set one of path and paths"))
	}
	paths := cfg.Paths
	if cfg.Path != "" {
		paths = []string{cfg.Path}
	}
	d := sc.Workspace.Dir
	for _, p := range paths {
		if err := sc.checkPath(p); err != nil {
			return Result{}, err
		}
		targets := []string{p}
		if cfg.PathsAreGlobs {
			matches, err := fs.Glob(d.FS(), filepath.ToSlash(filepath.Clean(p)))
			if err != nil {
				return Result{}, Terminal(fmt.Errorf("pattern %q: %w", p, err))
			}
			targets = matches
			if len(matches) == 0 && cfg.Strict {
				return Result{}, Terminal(fmt.Errorf("pattern %q matches nothing", p))
			}
		}
		for _, t := range targets {
			t = filepath.FromSlash(t)
			if !d.Exists(t) {
				if cfg.Strict {
					return Result{}, Terminal(fmt.Errorf("%s does not exist", t))
				}
				continue
			}
			if err := d.RemoveAll(t); err != nil {
				return Result{}, fsError(fmt.Errorf("delete %s: %w", t, err))
			}
		}
	}
	return Result{}, nil
}

// ignoreMatcher reads ignore, gitignore patterns one a line (# starts a
// comment), matched against paths relative to the step's inPath.
func ignoreMatcher(ignore string, defaults ...string) gitignore.Matcher {
	var ps []gitignore.Pattern
	for _, p := range defaults {
		ps = append(ps, gitignore.ParsePattern(p, nil))
	}
	for _, line := range strings.Split(ignore, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ps = append(ps, gitignore.ParsePattern(line, nil))
	}
	return gitignore.NewMatcher(ps)
}

// ignored reports whether rel (relative to inPath, "." for inPath
// itself) is ignored.
func ignored(m gitignore.Matcher, rel string, dir bool) bool {
	if rel == "." {
		return false
	}
	return m.Match(strings.Split(filepath.ToSlash(rel), "/"), dir)
}

type copyConfig struct {
	InPath  string `json:"inPath" step:"required"`
	OutPath string `json:"outPath" step:"required"`
	Ignore  string `json:"ignore"`
}

// copyStep copies a file or a directory tree, leaving out .git and what
// ignore matches. Symbolic links inside a copied tree are copied, not
// followed: each must still point inside the work dir from where its
// copy is.
func copyStep(_ context.Context, sc *Context, cfg *copyConfig) (Result, error) {
	in, out, err := inOutPaths(sc, cfg.InPath, cfg.OutPath)
	if err != nil {
		return Result{}, err
	}
	ignore := ignoreMatcher(cfg.Ignore, ".git")
	d := sc.Workspace.Dir
	err = d.WalkDir(in, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(in, p)
		if err != nil {
			return err
		}
		if ignored(ignore, rel, e.IsDir()) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(out, rel)
		switch {
		case e.IsDir():
			return d.MkdirAll(dst)
		case e.Type()&fs.ModeSymlink != 0:
			target, err := d.Readlink(p)
			if err != nil {
				return err
			}
			return d.Symlink(target, dst)
		}
		return copyFile(d, p, dst)
	})
	if err != nil {
		return Result{}, Terminal(fmt.Errorf("copy %s to %s: %w", cfg.InPath, cfg.OutPath, err))
	}
	return Result{}, nil
}

// inOutPaths checks inPath and outPath, returning them resolved in the
// work dir (see workdir.Dir.Resolve).
func inOutPaths(sc *Context, inPath, outPath string) (in, out string, err error) {
	if in, err = sc.Workspace.Dir.Resolve(inPath); err != nil {
		return "", "", fsError(err)
	}
	if out, err = sc.Workspace.Dir.Resolve(outPath); err != nil {
		return "", "", fsError(err)
	}
	return in, out, nil
}

func copyFile(d *workdir.Dir, src, dst string) error {
	in, err := d.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := d.Create(dst, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

type tarConfig struct {
	InPath  string `json:"inPath" step:"required"`
	OutPath string `json:"outPath" step:"required"`
	Ignore  string `json:"ignore"`
	Gzip    bool   `json:"gzip"`
}

// tarStep writes a tar of inPath (entries relative to it) to outPath,
// gzip-compressed when gzip is set, leaving out what ignore matches and
// symbolic links.
func tarStep(_ context.Context, sc *Context, cfg *tarConfig) (Result, error) {
	in, out, err := inOutPaths(sc, cfg.InPath, cfg.OutPath)
	if err != nil {
		return Result{}, err
	}
	ignore := ignoreMatcher(cfg.Ignore)
	d := sc.Workspace.Dir
	f, err := d.Create(out, 0o644)
	if err != nil {
		return Result{}, fsError(fmt.Errorf("create %s: %w", cfg.OutPath, err))
	}
	defer func() { _ = f.Close() }()
	var w io.Writer = f
	var gz *gzip.Writer
	if cfg.Gzip {
		gz = gzip.NewWriter(f)
		w = gz
	}
	tw := tar.NewWriter(w)
	err = d.WalkDir(in, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type()&fs.ModeSymlink != 0 || p == out {
			return nil
		}
		rel, err := filepath.Rel(in, p)
		if err != nil {
			return err
		}
		if rel == "." && e.IsDir() {
			return nil
		}
		if rel == "." {
			rel = filepath.Base(p)
		}
		if ignored(ignore, rel, e.IsDir()) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if e.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		src, err := d.Open(p)
		if err != nil {
			return err
		}
		defer func() { _ = src.Close() }()
		_, err = io.Copy(tw, src)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil && gz != nil {
		err = gz.Close()
	}
	if err != nil {
		return Result{}, fsError(fmt.Errorf("tar %s: %w", cfg.InPath, err))
	}
	return Result{}, f.Close()
}

type untarConfig struct {
	InPath          string `json:"inPath" step:"required"`
	OutPath         string `json:"outPath" step:"required"`
	StripComponents int    `json:"stripComponents"`
	Ignore          string `json:"ignore"`
}

// untarStep extracts a tar, gzip-compressed or not, into outPath: the
// first stripComponents parts of each entry's name are dropped (entries
// with no more are skipped), entries ignore matches are left out, and
// entries leaving outPath and links are refused.
func untarStep(_ context.Context, sc *Context, cfg *untarConfig) (Result, error) {
	if cfg.StripComponents < 0 {
		return Result{}, Terminal(fmt.Errorf("stripComponents must not be negative, got %d", cfg.StripComponents))
	}
	in, out, err := inOutPaths(sc, cfg.InPath, cfg.OutPath)
	if err != nil {
		return Result{}, err
	}
	ignore := ignoreMatcher(cfg.Ignore)
	d := sc.Workspace.Dir
	f, err := d.Open(in)
	if err != nil {
		return Result{}, Terminal(fmt.Errorf("open %s: %w", cfg.InPath, err))
	}
	defer func() { _ = f.Close() }()
	if err := d.MkdirAll(out); err != nil {
		return Result{}, fsError(err)
	}
	var r io.Reader = f
	if gz, err := gzip.NewReader(f); err == nil {
		r = gz
	} else if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Result{}, err
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Result{}, Terminal(fmt.Errorf("read %s: %w", cfg.InPath, err))
		}
		parts := strings.Split(strings.Trim(hdr.Name, "/"), "/")
		if len(parts) <= cfg.StripComponents {
			continue
		}
		name := filepath.FromSlash(strings.Join(parts[cfg.StripComponents:], "/"))
		if !filepath.IsLocal(name) {
			return Result{}, Terminal(fmt.Errorf("%s: entry %q leaves outPath", cfg.InPath, hdr.Name))
		}
		if ignored(ignore, name, hdr.Typeflag == tar.TypeDir) {
			continue
		}
		dst := filepath.Join(out, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := d.MkdirAll(dst); err != nil {
				return Result{}, fsError(err)
			}
		case tar.TypeReg:
			w, err := d.Create(dst, os.FileMode(hdr.Mode).Perm())
			if err != nil {
				return Result{}, fsError(err)
			}
			if _, err := io.Copy(w, io.LimitReader(tr, 1<<30)); err != nil {
				_ = w.Close()
				return Result{}, err
			}
			if err := w.Close(); err != nil {
				return Result{}, err
			}
		default:
			return Result{}, Terminal(fmt.Errorf("%s: entry %s is a link or special file", cfg.InPath, hdr.Name))
		}
	}
	return Result{}, nil
}
