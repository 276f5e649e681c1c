package steps

// In-place edits of JSON, YAML and TOML files, as a person would make
// them: the bytes of a changed value are replaced and nothing else moves,
// so comments, key order, indentation, quoting and number precision stay
// and `git diff` shows only the values that changed.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2/unstable"
	"github.com/tidwall/sjson"
	"go.yaml.in/yaml/v3"
)

// splitKey splits a key in the path syntax of tidwall/sjson, as Kargo's
// *-update steps take it: "." separates keys and "\" makes the next
// character literal (`example\.com/version`, `path\\to`).
func splitKey(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		switch {
		case key[i] == '\\' && i+1 < len(key):
			i++
			cur.WriteByte(key[i])
		case key[i] == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(key[i])
		}
	}
	return append(parts, cur.String())
}

// checkScalar refuses values the *-update steps cannot write: they change
// strings, numbers and booleans only, as Kargo's do.
func checkScalar(v any) error {
	switch v.(type) {
	case string, bool, float64, float32, int, int64, int32, uint64, uint32:
		return nil
	}
	return fmt.Errorf("value %v is not a string, number or boolean", v)
}

// setJSON sets key to value in a JSON document with sjson, which edits
// the bytes in place.
func setJSON(doc []byte, key string, value any) ([]byte, error) {
	if !json.Valid(doc) {
		return nil, errors.New("not valid JSON")
	}
	if f, ok := value.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		value = int64(f)
	}
	return sjson.SetBytes(doc, key, value)
}

// setTOML sets the existing key to value in a TOML document: the parser
// gives the byte range of the value, and only that range is rewritten.
// Keys that do not exist and values that are not scalars are refused, as
// Kargo's toml-update refuses them.
func setTOML(doc []byte, key string, value any) ([]byte, error) {
	want := strings.Join(splitKey(key), "\x00")
	p := unstable.Parser{KeepComments: true}
	p.Reset(doc)
	var table []string
	arrays := map[string]int{}
	var found *unstable.Node
	var foundKind unstable.Kind
	// index walks a value, noting the one at want.
	var index func(n *unstable.Node, path []string)
	index = func(n *unstable.Node, path []string) {
		if n == nil || !n.Valid() || found != nil {
			return
		}
		if strings.Join(path, "\x00") == want {
			found, foundKind = n, n.Kind
			return
		}
		switch n.Kind {
		case unstable.Array:
			it := n.Children()
			for i := 0; it.Next(); i++ {
				index(it.Node(), append(append([]string(nil), path...), strconv.Itoa(i)))
			}
		case unstable.InlineTable:
			it := n.Children()
			for it.Next() {
				kv := it.Node()
				if kv.Kind == unstable.KeyValue {
					index(kv.Value(), append(append([]string(nil), path...), keyParts(kv.Key())...))
				}
			}
		}
	}
	for found == nil && p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			table = keyParts(e.Key())
			if strings.Join(table, "\x00") == want {
				found, foundKind = e, unstable.Table
			}
		case unstable.ArrayTable:
			base := keyParts(e.Key())
			name := strings.Join(base, "\x00")
			table = append(slices.Clone(base), strconv.Itoa(arrays[name]))
			arrays[name]++
		case unstable.KeyValue:
			index(e.Value(), append(append([]string(nil), table...), keyParts(e.Key())...))
		}
	}
	if err := p.Error(); err != nil {
		return nil, err
	}
	if found == nil {
		return nil, errors.New("no such key: toml-update changes existing keys only")
	}
	switch foundKind {
	case unstable.String, unstable.Bool, unstable.Integer, unstable.Float:
	default:
		return nil, fmt.Errorf("the key holds a %s, not a string, number or boolean", foundKind)
	}
	r := found.Raw
	if r.Length == 0 && len(found.Data) > 0 {
		r = p.Range(found.Data)
	}
	old := doc[r.Offset : r.Offset+r.Length]
	text, err := tomlValue(value, old, foundKind)
	if err != nil {
		return nil, err
	}
	return splice(doc, int(r.Offset), int(r.Offset+r.Length), text), nil
}

func keyParts(it unstable.Iterator) []string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

// tomlValue renders value as TOML over old, a value of kind: a literal
// string stays literal where it can, a float stays a float.
func tomlValue(value any, old []byte, kind unstable.Kind) (string, error) {
	switch v := value.(type) {
	case string:
		if len(old) > 0 && old[0] == '\'' && !bytes.HasPrefix(old, []byte("'''")) && !strings.ContainsAny(v, "'\n\r") && utf8.ValidString(v) {
			return "'" + v + "'", nil
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return "", err
		}
		return strings.TrimSuffix(b.String(), "\n"), nil // JSON's escapes are TOML's
	case bool:
		return strconv.FormatBool(v), nil
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			if kind == unstable.Float {
				return strconv.FormatFloat(v, 'f', 1, 64), nil
			}
			return strconv.FormatInt(int64(v), 10), nil
		}
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	case int, int64, int32, uint64, uint32, float32:
		return fmt.Sprint(v), nil
	}
	return "", fmt.Errorf("value %v is not a string, number or boolean", value)
}

func splice(doc []byte, start, end int, text string) []byte {
	out := make([]byte, 0, len(doc)-(end-start)+len(text))
	out = append(out, doc[:start]...)
	out = append(out, text...)
	return append(out, doc[end:]...)
}

// setYAML sets key to value in a YAML document. An existing scalar's bytes
// are replaced, in its own quoting when the new value allows it; a key
// that does not exist is added as a new line at the end of the block
// mapping that should hold it, indented as its siblings. Sequences and
// flow collections are changed in place but not extended.
func setYAML(doc []byte, key string, value any) ([]byte, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, err
	}
	path := splitKey(key)
	if root.Kind == 0 || len(root.Content) == 0 {
		return appendKeys(doc, len(doc), 0, 2, path, value)
	}
	src := yamlSource{doc: doc, lines: lineStarts(doc)}
	n := root.Content[0]
	flow := false
	for i, part := range path {
		if n.Kind == yaml.AliasNode {
			return nil, fmt.Errorf("%s is an alias: change its anchor instead", strings.Join(path[:i], "."))
		}
		flow = flow || n.Style&yaml.FlowStyle != 0
		switch n.Kind {
		case yaml.MappingNode:
			var k, v *yaml.Node
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == part {
					k, v = n.Content[j], n.Content[j+1]
				}
			}
			if v == nil {
				if flow {
					return nil, fmt.Errorf("%q is not in the flow mapping %s: only existing keys can be changed there", part, strings.Join(path[:i], "."))
				}
				return src.addToMapping(n, path[i:], value)
			}
			if i == len(path)-1 {
				return src.replace(k, v, flow, value)
			}
			n = v
		case yaml.SequenceNode:
			idx, err := strconv.Atoi(part)
			if err != nil || idx < 0 || idx >= len(n.Content) {
				return nil, fmt.Errorf("%q is not an index of the sequence %s (0 to %d)", part, strings.Join(path[:i], "."), len(n.Content)-1)
			}
			if i == len(path)-1 {
				return src.replace(nil, n.Content[idx], flow, value)
			}
			n = n.Content[idx]
		default:
			return nil, fmt.Errorf("%s is a scalar: %q cannot be below it", strings.Join(path[:i], "."), part)
		}
	}
	return doc, nil
}

type yamlSource struct {
	doc   []byte
	lines []int // byte offset of the start of each line
}

func lineStarts(doc []byte) []int {
	starts := []int{0}
	for i, c := range doc {
		if c == '\n' {
			starts = append(starts, i+1)
		}
	}
	return starts
}

// offset is the byte offset of a node's line and column (1-based, the
// column counted in characters).
func (s yamlSource) offset(line, col int) int {
	if line-1 >= len(s.lines) {
		return len(s.doc)
	}
	off := s.lines[line-1]
	for c := 1; c < col && off < len(s.doc); c++ {
		_, size := utf8.DecodeRune(s.doc[off:])
		off += size
	}
	return off
}

// lineEnd is the offset of the end of the line holding off (before its
// newline).
func (s yamlSource) lineEnd(off int) int {
	if i := bytes.IndexByte(s.doc[off:], '\n'); i >= 0 {
		return off + i
	}
	return len(s.doc)
}

// indentOf is the indentation of the line holding off.
func (s yamlSource) indentOf(off int) int {
	start := bytes.LastIndexByte(s.doc[:off], '\n') + 1
	n := 0
	for start+n < len(s.doc) && s.doc[start+n] == ' ' {
		n++
	}
	return n
}

// scalarEnd is the offset just past the scalar n starting at start.
func (s yamlSource) scalarEnd(n *yaml.Node, start int, flow, isKey bool) (int, error) {
	d := s.doc
	switch {
	case n.Style&yaml.DoubleQuotedStyle != 0:
		for i := start + 1; i < len(d); i++ {
			switch d[i] {
			case '\\':
				i++
			case '"':
				return i + 1, nil
			}
		}
	case n.Style&yaml.SingleQuotedStyle != 0:
		for i := start + 1; i < len(d); i++ {
			if d[i] == '\'' {
				if i+1 < len(d) && d[i+1] == '\'' {
					i++
					continue
				}
				return i + 1, nil
			}
		}
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		// The header line, then every line more indented than the one
		// holding the header (blank lines in between included).
		indent := s.indentOf(start)
		end := s.lineEnd(start)
		for next := end + 1; next < len(d); {
			le := s.lineEnd(next)
			line := d[next:le]
			if len(bytes.TrimSpace(line)) > 0 {
				if s.indentOf(next) <= indent {
					break
				}
				end = le
			}
			next = le + 1
		}
		return end, nil
	default:
		end := s.lineEnd(start)
		for i := start; i < end; i++ {
			c := d[i]
			if c == '#' && i > start && (d[i-1] == ' ' || d[i-1] == '\t') {
				end = i
				break
			}
			if flow && (c == ',' || c == ']' || c == '}') {
				end = i
				break
			}
			if isKey && c == ':' && (i+1 == len(d) || d[i+1] == ' ' || d[i+1] == '\t' || d[i+1] == '\n' || d[i+1] == '\r') {
				end = i
				break
			}
		}
		for end > start && (d[end-1] == ' ' || d[end-1] == '\t' || d[end-1] == '\r') {
			end--
		}
		if string(d[start:end]) != n.Value {
			return 0, errors.New("the value is a plain scalar over several lines (or carries a tag or an anchor): rewrite it on one line")
		}
		return end, nil
	}
	return 0, errors.New("unterminated quoted scalar")
}

// replace writes value over the scalar v (whose key, in a mapping, is k).
func (s yamlSource) replace(k, v *yaml.Node, flow bool, value any) ([]byte, error) {
	if v.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("the key holds a %s, not a scalar", kindName(v.Kind))
	}
	if v.Anchor != "" {
		return nil, fmt.Errorf("the value carries the anchor &%s: change it where it is used", v.Anchor)
	}
	if err := checkScalar(value); err != nil {
		return nil, err
	}
	if v.Tag == "!!null" && v.Value == "" && k != nil {
		// `key:` with nothing after it: the value goes after the colon.
		ks := s.offset(k.Line, k.Column)
		ke, err := s.scalarEnd(k, ks, flow, true)
		if err != nil {
			return nil, err
		}
		colon := bytes.IndexByte(s.doc[ke:], ':')
		if colon < 0 {
			return nil, errors.New("no colon after the key")
		}
		text, err := yamlScalar(value, 0)
		if err != nil {
			return nil, err
		}
		at := ke + colon + 1
		return splice(s.doc, at, at, " "+text), nil
	}
	start := s.offset(v.Line, v.Column)
	end, err := s.scalarEnd(v, start, flow, false)
	if err != nil {
		return nil, err
	}
	text, err := yamlScalar(value, v.Style)
	if err != nil {
		return nil, err
	}
	return splice(s.doc, start, end, text), nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "sequence"
	case yaml.AliasNode:
		return "alias"
	}
	return "scalar"
}

// yamlScalar renders value as a YAML scalar in style where it can: a
// quoted value stays quoted the same way, a plain one stays plain unless
// the new text would read as something else (a number, a boolean, null)
// or needs quoting, when it is double-quoted.
func yamlScalar(value any, style yaml.Style) (string, error) {
	switch v := value.(type) {
	case nil:
		return "null", nil
	case bool:
		return strconv.FormatBool(v), nil
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return strconv.FormatInt(int64(v), 10), nil
		}
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	case float32, int, int64, int32, uint64, uint32:
		return fmt.Sprint(v), nil
	case string:
		switch {
		case style&yaml.SingleQuotedStyle != 0 && !strings.ContainsAny(v, "\n\r"):
			return "'" + strings.ReplaceAll(v, "'", "''") + "'", nil
		case style&yaml.DoubleQuotedStyle != 0:
			return strconv.Quote(v), nil
		}
		b, err := yaml.Marshal(v)
		if err != nil {
			return "", err
		}
		if string(b) == v+"\n" {
			return v, nil // plain reads back as the same string
		}
		return strconv.Quote(v), nil
	}
	return "", fmt.Errorf("value %v is not a string, number or boolean", value)
}

// addToMapping adds the keys path (the first missing from the block
// mapping m, the others below it) with value at the end of m.
func (s yamlSource) addToMapping(m *yaml.Node, path []string, value any) ([]byte, error) {
	if len(m.Content) == 0 {
		return nil, errors.New("cannot add a key to an empty mapping written as {}")
	}
	indent := m.Content[0].Column - 1
	step := 2
	for j := 1; j < len(m.Content); j += 2 {
		if c := m.Content[j]; c.Kind == yaml.MappingNode && len(c.Content) > 0 && c.Style&yaml.FlowStyle == 0 && c.Content[0].Column-1 > indent {
			step = c.Content[0].Column - 1 - indent
			break
		}
	}
	end, err := s.nodeEnd(m)
	if err != nil {
		return nil, err
	}
	return appendKeys(s.doc, end, indent, step, path, value)
}

// nodeEnd is the offset just past the last line of n (its newline
// included, when it has one).
func (s yamlSource) nodeEnd(n *yaml.Node) (int, error) {
	last := n
	for len(last.Content) > 0 {
		last = last.Content[len(last.Content)-1]
	}
	var end int
	switch {
	case last.Kind == yaml.ScalarNode && last.Tag == "!!null" && last.Value == "":
		end = s.lineEnd(s.offset(last.Line, last.Column))
	case last.Kind == yaml.ScalarNode:
		start := s.offset(last.Line, last.Column)
		e, err := s.scalarEnd(last, start, false, false)
		if err != nil {
			// A flow collection or a multi-line scalar: its line is the
			// last one that is sure to hold it.
			e = start
		}
		end = s.lineEnd(e)
	default:
		end = s.lineEnd(s.offset(last.Line, last.Column))
	}
	if end < len(s.doc) {
		end++ // past the newline
	}
	return end, nil
}

// appendKeys inserts, at offset at (the start of a line, or the end of the
// document), the keys path nested one in the other, the first indented by
// indent and each next one by step more, the last holding value.
func appendKeys(doc []byte, at, indent, step int, path []string, value any) ([]byte, error) {
	if err := checkScalar(value); err != nil {
		return nil, err
	}
	text, err := yamlScalar(value, 0)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	if at > 0 && doc[at-1] != '\n' {
		b.WriteByte('\n')
	}
	for i, k := range path {
		key, err := yamlScalar(k, 0)
		if err != nil {
			return nil, err
		}
		b.WriteString(strings.Repeat(" ", indent+i*step) + key + ":")
		if i == len(path)-1 {
			b.WriteString(" " + text)
		}
		b.WriteByte('\n')
	}
	return splice(doc, at, at, b.String()), nil
}
