package conformance

import (
	"fmt"
	"sort"
	"strings"
)

// Path syntax: fields are joined by ".", "[]" stands for the items of a
// list and "{}" for the values of a map: spec.subscriptions[].git.repoURL,
// status.autoPromotionHolds{}.origin.name.

// walker resolves $ref across the step schema files.
type walker struct {
	files map[string]Schema
}

// resolve follows $ref (within file, or "other.json#/…") and returns the
// schema and the file it lives in.
func (w walker) resolve(s Schema, file string) (Schema, string) {
	for range 32 {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s, file
		}
		f, ptr, _ := strings.Cut(ref, "#")
		if f == "" {
			f = file
		}
		target, ok := w.files[f]
		if !ok {
			return s, file
		}
		for _, p := range strings.Split(strings.Trim(ptr, "/"), "/") {
			if p == "" {
				continue
			}
			next, ok := target[p].(Schema)
			if !ok {
				return s, file
			}
			target = next
		}
		s, file = target, f
	}
	return s, file
}

// branches returns the alternatives and parts a schema combines.
func branches(s Schema) []Schema {
	var out []Schema
	for _, k := range []string{"allOf", "oneOf", "anyOf"} {
		list, _ := s[k].([]any)
		for _, b := range list {
			if m, ok := b.(Schema); ok {
				out = append(out, m)
			}
		}
	}
	for _, k := range []string{"then", "else"} {
		if m, ok := s[k].(Schema); ok {
			out = append(out, m)
		}
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Paths returns every property path of s (intermediate objects and lists
// included), sorted. leavesOnly keeps only the paths with nothing below.
func (w walker) Paths(s Schema, file string, leavesOnly bool) []string {
	set := map[string]bool{}
	w.paths(s, file, "", set, 0)
	var out []string
	for p := range set {
		if leavesOnly && hasChild(set, p) {
			continue
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func hasChild(set map[string]bool, p string) bool {
	for q := range set {
		if len(q) > len(p) && strings.HasPrefix(q, p) && (q[len(p)] == '.' || q[len(p)] == '[' || q[len(p)] == '{') {
			return true
		}
	}
	return false
}

func (w walker) paths(s Schema, file, path string, set map[string]bool, depth int) {
	if depth > 40 {
		return
	}
	s, file = w.resolve(s, file)
	for _, b := range branches(s) {
		w.paths(b, file, path, set, depth+1)
	}
	if props, ok := s["properties"].(Schema); ok {
		for k, v := range props {
			p := join(path, k)
			set[p] = true
			if m, ok := v.(Schema); ok {
				w.paths(m, file, p, set, depth+1)
			}
		}
	}
	if items, ok := s["items"].(Schema); ok {
		p := path + "[]"
		if path != "" {
			before := len(set)
			w.paths(items, file, p, set, depth+1)
			if len(set) == before {
				set[p] = true
			}
		}
	}
	if ap, ok := s["additionalProperties"].(Schema); ok {
		p := path + "{}"
		before := len(set)
		w.paths(ap, file, p, set, depth+1)
		if len(set) == before {
			set[p] = true
		}
	}
}

// Sample returns the fullest document s describes: every property set,
// one item per list, one entry per map, every string a valid value for its
// field. hint gives a value for a path the schema alone does not pin down
// (nil: use the default rules).
func (w walker) Sample(s Schema, file, path string, hint func(path string, s Schema) (any, bool)) any {
	return w.sample(s, file, path, hint, 0)
}

func (w walker) sample(s Schema, file, path string, hint func(string, Schema) (any, bool), depth int) any {
	if depth > 40 {
		return nil
	}
	s, file = w.resolve(s, file)
	if hint != nil {
		if v, ok := hint(path, s); ok {
			return v
		}
	}
	obj := map[string]any{}
	isObject := false
	for _, b := range branches(s) {
		if m, ok := w.sample(b, file, path, hint, depth+1).(map[string]any); ok {
			isObject = true
			for k, v := range m {
				obj[k] = v
			}
		}
	}
	if props, ok := s["properties"].(Schema); ok {
		isObject = true
		for k, v := range props {
			if m, ok := v.(Schema); ok {
				obj[k] = w.sample(m, file, join(path, k), hint, depth+1)
			}
		}
	}
	if ap, ok := s["additionalProperties"].(Schema); ok {
		isObject = true
		obj["k1"] = w.sample(ap, file, path+"{}", hint, depth+1)
	}
	if isObject {
		return obj
	}
	if enum, ok := s["enum"].([]any); ok {
		for _, e := range enum {
			if e != "" && e != nil {
				return e
			}
		}
	}
	switch typeOf(s) {
	case "object":
		return map[string]any{"sample": "value"}
	case "array":
		items, _ := s["items"].(Schema)
		if items == nil {
			return []any{"sample"}
		}
		return []any{w.sample(items, file, path+"[]", hint, depth+1)}
	case "boolean":
		return true
	case "integer", "number":
		n := 1
		if m, ok := s["minimum"].(float64); ok && int(m) > n {
			n = int(m)
		}
		if m, ok := s["minimum"].(int); ok && m > n {
			n = m
		}
		return n
	case "string":
		return sampleString(s)
	}
	if s["x-kubernetes-preserve-unknown-fields"] == true {
		return map[string]any{"sample": "value"}
	}
	return "sample"
}

func typeOf(s Schema) string {
	switch t := s["type"].(type) {
	case string:
		return t
	case []any:
		for _, x := range t {
			if str, ok := x.(string); ok && str != "null" {
				return str
			}
		}
	}
	return ""
}

// samplePatterns are valid values for the patterns Kargo's schemas use.
var samplePatterns = []struct{ contains, value string }{
	{`(s|m|h))+$`, "5m0s"},
	{`(ssh|https?)://`, "https://git.example.com/org/repo.git"},
	{`^[a-z0-9]+:[a-f0-9]+$`, "sha256:0123abcd"},
	{`^[a-zA-Z_]\w*$`, "sample"},
	{`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`, "Sample"},
}

func sampleString(s Schema) string {
	switch s["format"] {
	case "date-time":
		return "2025-01-02T03:04:05Z"
	case "email":
		return "someone@example.com"
	case "duration":
		return "5m0s"
	}
	if p, ok := s["pattern"].(string); ok {
		for _, sp := range samplePatterns {
			if strings.Contains(p, sp.contains) {
				return sp.value
			}
		}
	}
	return "sample"
}

// Compare returns where got lacks or changes a value of want (both
// decoded JSON): the concrete paths ("spec.subscriptions[0].git.repoURL")
// with what differs.
func Compare(want, got any, path string) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: want an object, got %v", path, got)}
		}
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var out []string
		for _, k := range keys {
			gv, ok := g[k]
			if !ok {
				out = append(out, join(path, k)+": dropped")
				continue
			}
			out = append(out, Compare(w[k], gv, join(path, k))...)
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: want %d items, got %v", path, len(w), got)}
		}
		var out []string
		for i := range w {
			out = append(out, Compare(w[i], g[i], fmt.Sprintf("%s[%d]", path, i))...)
		}
		return out
	}
	if fmt.Sprint(want) != fmt.Sprint(got) {
		return []string{fmt.Sprintf("%s: want %v, got %v", path, want, got)}
	}
	return nil
}

// Generic turns a concrete path into the path syntax above: list indexes
// become "[]" (map keys stay as they are).
func Generic(path string) string {
	var b strings.Builder
	for i := 0; i < len(path); i++ {
		if path[i] == '[' {
			j := strings.IndexByte(path[i:], ']')
			if j > 0 && isDigits(path[i+1:i+j]) {
				b.WriteString("[]")
				i += j
				continue
			}
		}
		b.WriteByte(path[i])
	}
	return b.String()
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
