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
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
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

// updateFile runs an *-update step on one format: load reads the file at
// full (path as the step names it), set applies one update to the document
// and encode gives the bytes written back.
func updateFile[D any](sc *Context, step string, load func(full, path string) (D, error), set func(doc D, key []string, value any) error, encode func(doc D) ([]byte, error)) (Result, error) {
	var cfg pathUpdates
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	full, err := sc.Path(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	doc, err := load(full, cfg.Path)
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
	if err := os.WriteFile(full, out, 0o644); err != nil {
		return Result{}, err
	}
	return Result{Output: map[string]any{"commitMessage": updatesMessage(step, cfg.Path, cfg.Updates)}}, nil
}

// readStepFile reads full; failing to is terminal and names path as the
// step gave it.
func readStepFile(full, path string) ([]byte, error) {
	b, err := os.ReadFile(full)
	if err != nil {
		return nil, Terminal(fmt.Errorf("read %s: %w", path, err))
	}
	return b, nil
}

func yamlUpdate(_ context.Context, sc *Context) (Result, error) {
	return updateFile(sc, "yaml-update", loadYAML, func(doc *yaml.Node, key []string, value any) error {
		return setYAML(doc.Content[0], key, value)
	}, encodeYAML)
}

// loadYAML reads a YAML document; an empty file is an empty mapping.
func loadYAML(full, path string) (*yaml.Node, error) {
	b, err := readStepFile(full, path)
	if err != nil {
		return nil, err
	}
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

// loadJSON reads a JSON object; an empty file is an empty object.
func loadJSON(full, path string) (map[string]any, error) {
	b, err := readStepFile(full, path)
	if err != nil {
		return nil, err
	}
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

// loadTOML reads a TOML document; failing to read it counts as failing to
// parse it.
func loadTOML(full, path string) (map[string]any, error) {
	doc := map[string]any{}
	if _, err := toml.DecodeFile(full, &doc); err != nil {
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
	full, err := sc.Path(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	b, err := readStepFile(full, cfg.Path)
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
		full, err := sc.Path(in)
		if err != nil {
			return Result{}, err
		}
		b, err := os.ReadFile(full)
		if errors.Is(err, os.ErrNotExist) && !cfg.Strict {
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
	out, err := sc.Path(cfg.OutFile)
	if err != nil {
		return Result{}, err
	}
	b, err := yaml.Marshal(merged)
	if err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o750); err != nil {
		return Result{}, err
	}
	return Result{}, os.WriteFile(out, b, 0o644)
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
	full, err := sc.Path(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
		return Result{}, err
	}
	return Result{}, os.WriteFile(full, []byte(cfg.Contents), 0o644)
}

func deleteStep(_ context.Context, sc *Context) (Result, error) {
	var cfg struct {
		Path   string `json:"path"`
		Strict bool   `json:"strict"`
	}
	if err := sc.Decode(&cfg); err != nil {
		return Result{}, err
	}
	full, err := sc.Path(cfg.Path)
	if err != nil {
		return Result{}, err
	}
	if _, err := os.Lstat(full); errors.Is(err, os.ErrNotExist) {
		if cfg.Strict {
			return Result{}, Terminal(fmt.Errorf("%s does not exist", cfg.Path))
		}
		return Result{}, nil
	}
	return Result{}, os.RemoveAll(full)
}

// inOut is the config of the steps that read inPath and write outPath. It
// stays an unnamed struct type, as each step's config was, so that config
// errors read as before ("Go struct field .inPath").
type inOut = struct {
	InPath  string `json:"inPath"`
	OutPath string `json:"outPath"`
}

// inOutPaths decodes an inOut config and resolves both paths in the work dir.
func inOutPaths(sc *Context) (cfg inOut, in, out string, err error) {
	if err := sc.Decode(&cfg); err != nil {
		return cfg, "", "", err
	}
	if in, err = sc.Path(cfg.InPath); err != nil {
		return cfg, "", "", err
	}
	if out, err = sc.Path(cfg.OutPath); err != nil {
		return cfg, "", "", err
	}
	return cfg, in, out, nil
}

// copyStep copies a file or a directory tree. Symbolic links inside a
// copied tree are not followed: each must point inside the work dir.
func copyStep(_ context.Context, sc *Context) (Result, error) {
	cfg, in, out, err := inOutPaths(sc)
	if err != nil {
		return Result{}, err
	}
	err = filepath.WalkDir(in, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(in, p)
		if d.Name() == ".git" && d.IsDir() {
			return filepath.SkipDir
		}
		dst := filepath.Join(out, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o750)
		case d.Type()&os.ModeSymlink != 0:
			relToRoot, _ := filepath.Rel(sc.Workspace.Dir, p)
			if _, err := sc.Path(relToRoot); err != nil {
				return err
			}
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, dst)
		}
		return copyFile(p, dst)
	})
	if err != nil {
		if IsTerminal(err) {
			return Result{}, err
		}
		return Result{}, Terminal(fmt.Errorf("copy %s to %s: %w", cfg.InPath, cfg.OutPath, err))
	}
	return Result{}, nil
}

func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// tarStep writes a gzip-compressed tar of inPath to outPath.
func tarStep(_ context.Context, sc *Context) (Result, error) {
	_, in, out, err := inOutPaths(sc)
	if err != nil {
		return Result{}, err
	}
	f, err := os.Create(out)
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = f.Close() }()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	err = filepath.WalkDir(in, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&os.ModeSymlink != 0 || p == out {
			return nil
		}
		rel, _ := filepath.Rel(in, p)
		info, err := d.Info()
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
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
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
	return Result{}, err
}

// untarStep extracts a (gzip-compressed) tar; entries leaving outPath
// and links are refused.
func untarStep(_ context.Context, sc *Context) (Result, error) {
	cfg, in, out, err := inOutPaths(sc)
	if err != nil {
		return Result{}, err
	}
	f, err := os.Open(in)
	if err != nil {
		return Result{}, Terminal(err)
	}
	defer func() { _ = f.Close() }()
	if err := os.MkdirAll(out, 0o750); err != nil {
		return Result{}, err
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
		dst, err := SecurePath(out, hdr.Name)
		if err != nil {
			return Result{}, err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o750); err != nil {
				return Result{}, err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
				return Result{}, err
			}
			w, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, os.FileMode(hdr.Mode).Perm())
			if err != nil {
				return Result{}, err
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
