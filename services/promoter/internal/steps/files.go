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

	"github.com/BurntSushi/toml"
	"github.com/caravan-cd/caravan/services/promoter/internal/workdir"
	"go.yaml.in/yaml/v3"
)

type keyValue struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type pathUpdates struct {
	Path    string     `json:"path"`
	Updates []keyValue `json:"updates"`
}

// splitKey splits a dotted key path; `\.` escapes a dot in a key.
func splitKey(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		switch {
		case key[i] == '\\' && i+1 < len(key) && key[i+1] == '.':
			cur.WriteByte('.')
			i++
		case key[i] == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(key[i])
		}
	}
	return append(parts, cur.String())
}

func updatesMessage(step, path string, updates []keyValue) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Updated %s\n", path)
	for _, u := range updates {
		fmt.Fprintf(&b, "\n- %s: %v", u.Key, u.Value)
	}
	_ = step
	return b.String()
}

// updateFile runs an *-update step on one format: load parses the file's
// content (path as the step names it), set applies one update to the
// document and encode gives the bytes written back.
func updateFile[D any](sc *Context, step string, load func(b []byte, path string) (D, error), set func(doc D, key []string, value any) error, encode func(doc D) ([]byte, error)) (Result, error) {
	var cfg pathUpdates
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	b, err := sc.readFile(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	doc, err := load(b, cfg.Path)
	if err != nil {
		return Result{}, err
	}
	for _, u := range cfg.Updates {
		if err := set(doc, splitKey(u.Key), u.Value); err != nil {
			return Result{}, Terminal(fmt.Errorf("%s: key %s: %w", cfg.Path, u.Key, err))
		}
	}
	out, err := encode(doc)
	if err != nil {
		return Result{}, err
	}
	if err := sc.writeFile(cfg.Path, out); err != nil {
		return Result{}, err
	}
	return Result{Output: map[string]any{"commitMessage": updatesMessage(step, cfg.Path, cfg.Updates)}}, nil
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

func yamlUpdate(_ context.Context, sc *Context) (Result, error) {
	return updateFile(sc, "yaml-update", loadYAML, func(doc *yaml.Node, key []string, value any) error {
		return setYAML(doc.Content[0], key, value)
	}, encodeYAML)
}

// loadYAML parses a YAML document; an empty file is an empty mapping.
func loadYAML(b []byte, path string) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, Terminal(fmt.Errorf("parse %s: %w", path, err))
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	}
	return &doc, nil
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

// setYAML sets the value at path below n, creating mappings on the way,
// and keeps the style of a scalar it replaces.
func setYAML(n *yaml.Node, path []string, value any) error {
	for i, part := range path {
		last := i == len(path)-1
		switch n.Kind {
		case yaml.MappingNode:
			var child *yaml.Node
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == part {
					child = n.Content[j+1]
					break
				}
			}
			if child == nil {
				child = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: part}, child)
			}
			if last {
				return replaceNode(child, value)
			}
			n = child
		case yaml.SequenceNode:
			idx, err := strconv.Atoi(part)
			if err != nil || idx < 0 || idx > len(n.Content) {
				return fmt.Errorf("%q is not an index of the sequence", part)
			}
			if idx == len(n.Content) {
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"})
			}
			if last {
				return replaceNode(n.Content[idx], value)
			}
			n = n.Content[idx]
		default:
			return fmt.Errorf("%q is inside a scalar", part)
		}
	}
	return nil
}

func replaceNode(dst *yaml.Node, value any) error {
	var n yaml.Node
	if err := n.Encode(value); err != nil {
		return err
	}
	if dst.Kind == yaml.ScalarNode && n.Kind == yaml.ScalarNode {
		style := dst.Style
		*dst = yaml.Node{Kind: n.Kind, Tag: n.Tag, Value: n.Value, Style: style, LineComment: dst.LineComment, HeadComment: dst.HeadComment}
		return nil
	}
	head, line := dst.HeadComment, dst.LineComment
	*dst = n
	dst.HeadComment, dst.LineComment = head, line
	return nil
}

// setPath sets a value in decoded JSON/TOML data, creating maps on the way.
func setPath(root map[string]any, path []string, value any) error {
	var cur any = root
	for i, part := range path {
		last := i == len(path)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				c[part] = value
				return nil
			}
			next, ok := c[part]
			if !ok || next == nil {
				next = map[string]any{}
				c[part] = next
			}
			cur = next
		case []any:
			idx, err := strconv.Atoi(part)
			if err != nil || idx < 0 || idx >= len(c) {
				return fmt.Errorf("%q is not an index of the array", part)
			}
			if last {
				c[idx] = value
				return nil
			}
			cur = c[idx]
		default:
			return fmt.Errorf("%q is inside a scalar", part)
		}
	}
	return nil
}

func jsonUpdate(_ context.Context, sc *Context) (Result, error) {
	return updateFile(sc, "json-update", loadJSON, setPath, func(doc map[string]any) ([]byte, error) {
		out, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return nil, err
		}
		return append(out, '\n'), nil
	})
}

// loadJSON parses a JSON object; an empty file is an empty object.
func loadJSON(b []byte, path string) (map[string]any, error) {
	doc := map[string]any{}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, Terminal(fmt.Errorf("parse %s: %w", path, err))
		}
	}
	return doc, nil
}

func tomlUpdate(_ context.Context, sc *Context) (Result, error) {
	return updateFile(sc, "toml-update", loadTOML, setPath, func(doc map[string]any) ([]byte, error) {
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	})
}

// loadTOML parses a TOML document.
func loadTOML(b []byte, path string) (map[string]any, error) {
	doc := map[string]any{}
	if _, err := toml.Decode(string(b), &doc); err != nil {
		return nil, Terminal(fmt.Errorf("parse %s: %w", path, err))
	}
	return doc, nil
}

type parseConfig struct {
	Path    string `json:"path"`
	Outputs []struct {
		Name           string `json:"name"`
		FromExpression string `json:"fromExpression"`
	} `json:"outputs"`
}

// parseStep reads a file with decode and evaluates each output's
// expression against its content.
func parseStep(sc *Context, decode func([]byte) (map[string]any, error)) (Result, error) {
	var cfg parseConfig
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
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

func yamlParse(_ context.Context, sc *Context) (Result, error) {
	return parseStep(sc, func(b []byte) (map[string]any, error) {
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		return jsonNormalize(v)
	})
}

func jsonParse(_ context.Context, sc *Context) (Result, error) {
	return parseStep(sc, func(b []byte) (map[string]any, error) {
		v := map[string]any{}
		return v, json.Unmarshal(b, &v)
	})
}

func tomlParse(_ context.Context, sc *Context) (Result, error) {
	return parseStep(sc, func(b []byte) (map[string]any, error) {
		v := map[string]any{}
		if err := toml.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		return jsonNormalize(v)
	})
}

// yamlMerge deep-merges inFiles (later ones win) into outFile.
func yamlMerge(_ context.Context, sc *Context) (Result, error) {
	var cfg struct {
		InFiles []string `json:"inFiles"`
		OutFile string   `json:"outFile"`
		Strict  bool     `json:"strict"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	merged := map[string]any{}
	for _, in := range cfg.InFiles {
		if err := sc.checkPath(in); err != nil {
			return Result{}, err
		}
		b, err := sc.Workspace.Dir.ReadFile(in)
		if errors.Is(err, fs.ErrNotExist) && !cfg.Strict {
			continue
		}
		if err != nil {
			return Result{}, Terminal(fmt.Errorf("read %s: %w", in, err))
		}
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return Result{}, Terminal(fmt.Errorf("parse %s: %w", in, err))
		}
		deepMerge(merged, v)
	}
	if err := sc.checkPath(cfg.OutFile); err != nil {
		return Result{}, err
	}
	b, err := yaml.Marshal(merged)
	if err != nil {
		return Result{}, err
	}
	return Result{}, sc.writeFile(cfg.OutFile, b)
}

func deepMerge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				deepMerge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func fileWrite(_ context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path     string `json:"path"`
		Contents string `json:"contents"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	return Result{}, sc.writeFile(cfg.Path, []byte(cfg.Contents))
}

func deleteStep(_ context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path   string `json:"path"`
		Strict bool   `json:"strict"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	if err := sc.checkPath(cfg.Path); err != nil {
		return Result{}, err
	}
	if !sc.Workspace.Dir.Exists(cfg.Path) {
		if cfg.Strict {
			return Result{}, Terminal(fmt.Errorf("%s does not exist", cfg.Path))
		}
		return Result{}, nil
	}
	if err := sc.Workspace.Dir.RemoveAll(cfg.Path); err != nil {
		return Result{}, fsError(fmt.Errorf("delete %s: %w", cfg.Path, err))
	}
	return Result{}, nil
}

// inOut is the config of the steps that read inPath and write outPath. It
// stays an unnamed struct type, as each step's config was, so that config
// errors read as before ("Go struct field .inPath").
type inOut = struct {
	InPath  string `json:"inPath"`
	OutPath string `json:"outPath"`
}

// inOutPaths decodes an inOut config and checks both paths, returning
// them resolved in the work dir (see workdir.Dir.Resolve).
func inOutPaths(sc *Context) (cfg inOut, in, out string, err error) {
	if err := sc.Decode(&cfg); err != nil {
		return cfg, "", "", err
	}
	if in, err = sc.Workspace.Dir.Resolve(cfg.InPath); err != nil {
		return cfg, "", "", fsError(err)
	}
	if out, err = sc.Workspace.Dir.Resolve(cfg.OutPath); err != nil {
		return cfg, "", "", fsError(err)
	}
	return cfg, in, out, nil
}

// copyStep copies a file or a directory tree. Symbolic links inside a
// copied tree are copied, not followed: each must still point inside the
// work dir from where its copy is.
func copyStep(_ context.Context, sc *Context) (Result, error) {
	cfg, in, out, err := inOutPaths(sc)
	if err != nil {
		return Result{}, err
	}
	d := sc.Workspace.Dir
	err = d.WalkDir(in, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Name() == ".git" && e.IsDir() {
			return filepath.SkipDir
		}
		rel, err := filepath.Rel(in, p)
		if err != nil {
			return err
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

// tarStep writes a gzip-compressed tar of inPath to outPath. Symbolic
// links are left out.
func tarStep(_ context.Context, sc *Context) (Result, error) {
	cfg, in, out, err := inOutPaths(sc)
	if err != nil {
		return Result{}, err
	}
	d := sc.Workspace.Dir
	f, err := d.Create(out, 0o644)
	if err != nil {
		return Result{}, fsError(fmt.Errorf("create %s: %w", cfg.OutPath, err))
	}
	defer func() { _ = f.Close() }()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
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
		info, err := e.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
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
	if err == nil {
		err = gz.Close()
	}
	if err != nil {
		return Result{}, fsError(fmt.Errorf("tar %s: %w", cfg.InPath, err))
	}
	return Result{}, f.Close()
}

// untarStep extracts a (gzip-compressed) tar; entries leaving outPath
// and links are refused.
func untarStep(_ context.Context, sc *Context) (Result, error) {
	cfg, in, out, err := inOutPaths(sc)
	if err != nil {
		return Result{}, err
	}
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
		name := filepath.FromSlash(hdr.Name)
		if !filepath.IsLocal(name) {
			return Result{}, Terminal(fmt.Errorf("%s: entry %q leaves outPath", cfg.InPath, hdr.Name))
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
