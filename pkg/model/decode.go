package model

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Document is one object of the input.
type Document struct {
	// Index is the 1-based position of the object in the input: YAML
	// documents count in order (an empty one still takes its number) and
	// each item of a JSON array or a List takes a number of its own.
	Index  int
	Object Object
}

// Decoded is the result of Decode.
type Decoded struct {
	Documents []Document
	// Warnings are accepted oddities: repeated keys, fields Caravan does
	// not act on.
	Warnings Issues
}

// defaulter is implemented by kinds with Kargo defaults.
type defaulter interface {
	Default()
}

// maxNodes bounds the YAML nodes (aliases expanded) one Decode walks.
const maxNodes = 1 << 20

// Decode strictly decodes multi-document YAML, or JSON (one object, an array
// of objects, or a List), into typed objects. Every problem found, in every
// document, is returned together as Issues: unknown apiVersion/kind,
// unknown fields and wrong types, each with its field path. A key repeated
// in a mapping is a warning (the last value wins), as is a field Kargo has
// but Caravan does not act on. Kargo's defaults are applied.
func Decode(data []byte) (*Decoded, error) {
	d := &decoder{budget: maxNodes}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	index := 0
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		index++
		if err != nil {
			d.errs = append(d.errs, Issue{Document: index, Message: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")})
			break
		}
		root := &doc
		if root.Kind == yaml.DocumentNode {
			if len(root.Content) == 0 {
				continue
			}
			root = root.Content[0]
		}
		root = resolveAlias(root)
		switch {
		case root == nil || isNull(root):
			continue
		case root.Kind == yaml.SequenceNode:
			index = d.items(root.Content, index, "")
		case root.Kind == yaml.MappingNode && isList(root):
			items := lookup(root, "items")
			if items == nil || isNull(items) {
				continue
			}
			if items.Kind != yaml.SequenceNode {
				d.errs = append(d.errs, Issue{Document: index, Kind: "List", Field: "items", Message: "expected a list, got " + describe(items)})
				continue
			}
			index = d.items(items.Content, index, "items")
		default:
			d.object(root, index)
		}
	}
	out := &Decoded{Documents: d.docs, Warnings: d.warns}
	if len(d.errs) > 0 {
		return out, d.errs
	}
	return out, nil
}

// DecodeJSONObject decodes one JSON object by its apiVersion and kind,
// without Decode's strict checks: for objects Caravan wrote itself.
func DecodeJSONObject(data []byte) (Object, error) {
	var tm TypeMeta
	if err := json.Unmarshal(data, &tm); err != nil {
		return nil, fmt.Errorf("decode object: %w", err)
	}
	obj, ok := NewObject(tm.APIVersion, tm.Kind)
	if !ok {
		return nil, fmt.Errorf("decode object: unknown kind %q of apiVersion %q", tm.Kind, tm.APIVersion)
	}
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", tm.Kind, err)
	}
	return obj, nil
}

type decoder struct {
	docs   []Document
	errs   Issues
	warns  Issues
	budget int
}

// items decodes the objects of a top-level array or List; the first takes
// index, the next ones the numbers after it. It returns the last number used.
func (d *decoder) items(nodes []*yaml.Node, index int, prefix string) int {
	for i, n := range nodes {
		if i > 0 {
			index++
		}
		n = resolveAlias(n)
		if n == nil || n.Kind != yaml.MappingNode {
			field := ""
			if prefix != "" {
				field = fmt.Sprintf("%s[%d]", prefix, i)
			}
			d.errs = append(d.errs, Issue{Document: index, Field: field, Message: "expected an object, got " + describe(n)})
			continue
		}
		d.object(n, index)
	}
	return index
}

func isList(n *yaml.Node) bool {
	k := lookup(n, "kind")
	return k != nil && k.Kind == yaml.ScalarNode && k.Value == "List" && lookup(n, "apiVersion") != nil &&
		lookup(n, "items") != nil
}

// object decodes one object mapping.
func (d *decoder) object(n *yaml.Node, index int) {
	apiVersion, kind := scalarAt(n, "apiVersion"), scalarAt(n, "kind")
	name := ""
	if meta := lookup(n, "metadata"); meta != nil && meta.Kind == yaml.MappingNode {
		name = scalarAt(meta, "name")
	}
	issue := func(field, msg string) Issue {
		return Issue{Document: index, Kind: kind, Name: name, Field: field, Message: msg}
	}
	if n.Kind != yaml.MappingNode {
		d.errs = append(d.errs, issue("", "expected an object, got "+describe(n)))
		return
	}
	switch {
	case kind == "":
		d.errs = append(d.errs, issue("kind", "kind is required"))
		return
	case apiVersion == "":
		d.errs = append(d.errs, issue("apiVersion", "apiVersion is required"))
		return
	}
	obj, ok := NewObject(apiVersion, kind)
	if !ok {
		if want := APIVersionOf(kind); want != "" {
			d.errs = append(d.errs, issue("apiVersion", fmt.Sprintf("unknown apiVersion %q for kind %s (want %q)", apiVersion, kind, want)))
		} else {
			d.errs = append(d.errs, issue("kind", fmt.Sprintf("unknown kind %q (apiVersion %q)", kind, apiVersion)))
		}
		return
	}
	w := &walker{decoder: d, doc: index, kind: kind, name: name}
	before := len(d.errs)
	value, ok := w.value(n, reflect.TypeOf(obj).Elem(), "")
	if !ok || len(d.errs) > before {
		return
	}
	raw, err := json.Marshal(value)
	if err == nil {
		err = json.Unmarshal(raw, obj)
	}
	if err != nil {
		d.errs = append(d.errs, issue("", err.Error()))
		return
	}
	if def, ok := obj.(defaulter); ok {
		def.Default()
	}
	d.docs = append(d.docs, Document{Index: index, Object: obj})
}

// walker checks one object's node tree against its Go type and builds the
// equivalent JSON value.
type walker struct {
	*decoder
	doc        int
	kind, name string
}

var (
	timeType        = reflect.TypeFor[Time]()
	durationType    = reflect.TypeFor[Duration]()
	intOrStringType = reflect.TypeFor[IntOrString]()
	bytesType       = reflect.TypeFor[[]byte]()
)

func (w *walker) fail(path, msg string) {
	w.errs = append(w.errs, Issue{Document: w.doc, Kind: w.kind, Name: w.name, Field: path, Message: msg})
}

func (w *walker) warn(path, msg string) {
	w.warns = append(w.warns, Issue{Document: w.doc, Kind: w.kind, Name: w.name, Field: path, Message: msg})
}

// spend charges one node against the budget.
func (w *walker) spend(path string) bool {
	w.budget--
	if w.budget == 0 {
		w.fail(path, "input too large or too deeply aliased")
	}
	return w.budget > 0
}

// value walks n against t and returns the JSON value for it; false means an
// issue was reported.
func (w *walker) value(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	if !w.spend(path) {
		return nil, false
	}
	n = resolveAlias(n)
	if n == nil {
		w.fail(path, "unresolvable alias")
		return nil, false
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isNull(n) {
		return nil, true
	}
	switch t {
	case timeType:
		s, ok := w.scalarString(n, path, "a time", "!!str", "!!timestamp")
		if !ok {
			return nil, false
		}
		if _, err := parseTime(s); err != nil {
			w.fail(path, err.Error())
			return nil, false
		}
		return s, true
	case durationType:
		s, ok := w.scalarString(n, path, "a duration", "!!str")
		if !ok {
			return nil, false
		}
		if _, err := time.ParseDuration(s); err != nil {
			w.fail(path, fmt.Sprintf("invalid duration %q", s))
			return nil, false
		}
		return s, true
	case intOrStringType:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!int" {
			return w.integer(n, path, math.MinInt64, math.MaxInt64)
		}
		s, ok := w.scalarString(n, path, "an integer or a string", "!!str")
		return s, ok
	case bytesType:
		s, ok := w.scalarString(n, path, "a base64 string", "!!str", "!!binary")
		if !ok {
			return nil, false
		}
		if _, err := base64.StdEncoding.DecodeString(s); err != nil {
			w.fail(path, "invalid base64 data")
			return nil, false
		}
		return s, true
	}
	switch t.Kind() {
	case reflect.String:
		return w.scalarString(n, path, "a string", "!!str", "!!timestamp", "!!binary")
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			w.fail(path, "expected a boolean, got "+describe(n))
			return nil, false
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			w.fail(path, "expected a boolean, got "+describe(n))
			return nil, false
		}
		return b, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := t.Bits()
		return w.integer(n, path, -1<<(bits-1), 1<<(bits-1)-1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		limit := int64(math.MaxInt64)
		if t.Bits() < 64 {
			limit = 1<<t.Bits() - 1
		}
		return w.integer(n, path, 0, limit)
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			w.fail(path, "expected a number, got "+describe(n))
			return nil, false
		}
		return w.scalar(n, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(path, "expected a list, got "+describe(n))
			return nil, false
		}
		out := make([]any, 0, len(n.Content))
		ok := true
		for i, item := range n.Content {
			v, itemOK := w.value(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			ok = ok && itemOK
			out = append(out, v)
		}
		return out, ok
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(path, "expected a map, got "+describe(n))
			return nil, false
		}
		out := map[string]any{}
		ok := true
		w.pairs(n, path, func(key string, keyPath string, v *yaml.Node) {
			val, valOK := w.value(v, t.Elem(), keyPath)
			ok = ok && valOK
			out[key] = val
		})
		return out, ok
	case reflect.Struct:
		return w.object(n, t, path)
	case reflect.Interface:
		return w.freeForm(n, path)
	}
	w.fail(path, "unsupported field type "+t.String())
	return nil, false
}

// object walks a mapping against struct type t.
func (w *walker) object(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	if n.Kind != yaml.MappingNode {
		w.fail(path, "expected an object, got "+describe(n))
		return nil, false
	}
	fields := jsonFields(t)
	out := map[string]any{}
	ok := true
	w.pairs(n, path, func(key, keyPath string, v *yaml.Node) {
		f, known := fields[key]
		if !known {
			// A struct with an "others" map takes unknown keys as its
			// entries (generic subscriptions).
			if o, has := fields[othersKey]; has {
				f, known = field{typ: o.typ.Elem()}, true
			}
		}
		if !known {
			w.fail(keyPath, "unknown field")
			ok = false
			return
		}
		if isNull(resolveAlias(v)) {
			delete(out, key)
			return
		}
		switch {
		case f.warn != "":
			w.warn(keyPath, "accepted but not acted on by Caravan: "+f.warn)
		case f.ignored:
			w.warn(keyPath, "accepted but not acted on by Caravan")
		}
		val, valOK := w.value(v, f.typ, keyPath)
		ok = ok && valOK
		out[key] = val
	})
	return out, ok
}

// pairs calls fn for each key of mapping n, warning about repeated keys
// (whose last value wins, as fn overwrites).
func (w *walker) pairs(n *yaml.Node, path string, fn func(key, keyPath string, v *yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolveAlias(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode {
			w.fail(path, "mapping keys must be strings")
			continue
		}
		if k.Tag == "!!merge" {
			w.fail(joinPath(path, k.Value), "merge keys (<<) are not supported")
			continue
		}
		keyPath := joinPath(path, k.Value)
		if seen[k.Value] {
			w.warn(keyPath, fmt.Sprintf("duplicate key %q: the last value wins", k.Value))
		}
		seen[k.Value] = true
		fn(k.Value, keyPath, n.Content[i+1])
	}
}

// freeForm converts any node to a JSON value.
func (w *walker) freeForm(n *yaml.Node, path string) (any, bool) {
	if !w.spend(path) {
		return nil, false
	}
	n = resolveAlias(n)
	if n == nil {
		w.fail(path, "unresolvable alias")
		return nil, false
	}
	switch n.Kind {
	case yaml.MappingNode:
		out := map[string]any{}
		ok := true
		w.pairs(n, path, func(key, keyPath string, v *yaml.Node) {
			val, valOK := w.freeForm(v, keyPath)
			ok = ok && valOK
			out[key] = val
		})
		return out, ok
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		ok := true
		for i, item := range n.Content {
			v, itemOK := w.freeForm(item, fmt.Sprintf("%s[%d]", path, i))
			ok = ok && itemOK
			out = append(out, v)
		}
		return out, ok
	case yaml.ScalarNode:
		return w.scalar(n, path)
	}
	w.fail(path, "unsupported YAML node")
	return nil, false
}

// scalar converts a scalar by its resolved tag.
func (w *walker) scalar(n *yaml.Node, path string) (any, bool) {
	switch n.Tag {
	case "!!null":
		return nil, true
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err == nil {
			return b, true
		}
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			return i, true
		}
		var f float64
		if err := n.Decode(&f); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return f, true
		}
	case "!!float":
		var f float64
		if err := n.Decode(&f); err == nil {
			if math.IsInf(f, 0) || math.IsNaN(f) {
				w.fail(path, "numbers must be finite")
				return nil, false
			}
			return f, true
		}
	}
	return n.Value, true
}

func (w *walker) integer(n *yaml.Node, path string, lo, hi int64) (any, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		w.fail(path, "expected an integer, got "+describe(n))
		return nil, false
	}
	var i int64
	if err := n.Decode(&i); err != nil || i < lo || i > hi {
		w.fail(path, fmt.Sprintf("integer %s out of range", n.Value))
		return nil, false
	}
	return i, true
}

// scalarString returns a scalar's text if its tag is one of tags.
func (w *walker) scalarString(n *yaml.Node, path, want string, tags ...string) (string, bool) {
	if n.Kind == yaml.ScalarNode {
		for _, tag := range tags {
			if n.Tag == tag {
				return n.Value, true
			}
		}
	}
	w.fail(path, fmt.Sprintf("expected %s, got %s", want, describe(n)))
	return "", false
}

// field is one JSON field of a struct.
type field struct {
	typ     reflect.Type
	ignored bool
	// warn says why Caravan does not act on the field; decoding it warns.
	warn string
}

// othersKey is the jsonFields key of a struct's field tagged
// caravan:"others": a map that takes the keys the struct does not know.
const othersKey = "\x00others"

// jsonFields maps a struct's JSON names to their fields, inlining embedded
// structs as encoding/json does.
func jsonFields(t reflect.Type) map[string]field {
	out := map[string]field{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if f.Tag.Get("caravan") == "others" && f.Type.Kind() == reflect.Map {
			out[othersKey] = field{typ: f.Type}
			continue
		}
		if tag == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = field{typ: f.Type, ignored: f.Tag.Get("caravan") == "ignored", warn: f.Tag.Get("warn")}
	}
	return out
}

var identifier = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$-]*$`)

func joinPath(path, key string) string {
	if !identifier.MatchString(key) {
		return fmt.Sprintf("%s[%q]", path, key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for depth := 0; n != nil && n.Kind == yaml.AliasNode; depth++ {
		if depth > 100 {
			return nil
		}
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n != nil && n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// lookup returns the value of key in mapping n (the last one if repeated).
func lookup(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	var found *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := resolveAlias(n.Content[i]); k != nil && k.Kind == yaml.ScalarNode && k.Value == key {
			found = resolveAlias(n.Content[i+1])
		}
	}
	return found
}

func scalarAt(n *yaml.Node, key string) string {
	v := lookup(n, key)
	if v == nil || v.Kind != yaml.ScalarNode || isNull(v) {
		return ""
	}
	return v.Value
}

// describe names a node's type for messages.
func describe(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "an object"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return fmt.Sprintf("string %q", truncate(n.Value))
		case "!!int":
			return "integer " + truncate(n.Value)
		case "!!float":
			return "number " + truncate(n.Value)
		case "!!bool":
			return "boolean " + n.Value
		case "!!null":
			return "null"
		case "!!timestamp":
			return "timestamp " + truncate(n.Value)
		}
		return fmt.Sprintf("%s %q", strings.TrimPrefix(n.Tag, "!!"), truncate(n.Value))
	}
	return "an alias"
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
