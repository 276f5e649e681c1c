// Package redact hides secret values before they reach anything a user can
// read: statuses, events, errors, logs and traces. A Redactor knows the
// secret values resolved for one run (a promotion, a verification) and
// replaces each of them, and the forms a step or a remote server commonly
// turns them into, with Mask:
//
//   - the value as it is, upper-cased and lower-cased;
//   - base64 of it, standard and URL-safe alphabets, with and without
//     padding, also where it is part of a longer encoded string (the
//     user:password of a Basic authorization header);
//   - hex, lower- and upper-case;
//   - URL query and path escaping;
//   - JSON string escaping;
//   - each line of a multi-line value (a PEM key quoted line by line).
//
// Values shorter than MinLength are not redacted: hiding them would mangle
// ordinary text, and they are no secret anyway.
//
// A nil *Redactor redacts nothing, so that callers need not check.
package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Mask replaces every secret form.
const Mask = "***"

// MinLength is the shortest value redacted.
const MinLength = 4

// minFragment is the shortest base64 fragment of a value inside a longer
// encoded string that is redacted: shorter fragments of short values would
// match ordinary text too often.
const minFragment = 6

// Redactor replaces known secret values in text and values. It is safe for
// concurrent use; values added later apply to every call made after Add
// returns.
type Redactor struct {
	mu       sync.RWMutex
	values   map[string]bool
	forms    map[string]bool
	replacer *strings.Replacer // nil until the first call after a change
}

// New returns a Redactor that knows values.
func New(values ...string) *Redactor {
	r := &Redactor{}
	r.Add(values...)
	return r
}

// Add makes the Redactor hide values (and their forms) from now on.
func (r *Redactor) Add(values ...string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range values {
		if len(v) < MinLength || r.values[v] {
			continue
		}
		if r.values == nil {
			r.values, r.forms = map[string]bool{}, map[string]bool{}
		}
		r.values[v] = true
		for _, f := range Forms(v) {
			r.forms[f] = true
		}
		r.replacer = nil
	}
}

// Len is how many values the Redactor knows.
func (r *Redactor) Len() int {
	if r == nil {
		return 0
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.values)
}

// Forms returns the forms of value that are redacted, longest first: the
// value itself and its common transforms (see the package documentation).
func Forms(value string) []string {
	if len(value) < MinLength {
		return nil
	}
	set := map[string]bool{}
	add := func(s string) {
		if len(s) >= MinLength {
			set[s] = true
		}
	}
	add(value)
	add(strings.ToUpper(value))
	add(strings.ToLower(value))
	b := []byte(value)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		add(enc.EncodeToString(b))
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		for _, f := range fragments(enc, b) {
			if len(f) >= minFragment {
				set[f] = true
			}
		}
	}
	add(hex.EncodeToString(b))
	add(strings.ToUpper(hex.EncodeToString(b)))
	add(url.QueryEscape(value))
	add(url.PathEscape(value))
	if j, err := json.Marshal(value); err == nil {
		add(string(j[1 : len(j)-1]))
	}
	if strings.ContainsAny(value, "\r\n") {
		for _, line := range strings.FieldsFunc(value, func(r rune) bool { return r == '\n' || r == '\r' }) {
			if line = strings.TrimSpace(line); len(line) >= 2*MinLength {
				set[line] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for f := range set {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	return out
}

// fragments returns the characters of enc's encoding of b that do not
// depend on what precedes or follows b, for each of the three byte offsets
// b can start at inside a longer encoded string.
func fragments(enc *base64.Encoding, b []byte) []string {
	out := make([]string, 0, 3)
	for k := 0; k < 3; k++ {
		padded := append(make([]byte, k, k+len(b)), b...)
		s := enc.EncodeToString(padded)
		from := (8*k + 5) / 6        // first character made of b's bits only
		to := (8 * (k + len(b))) / 6 // characters after it may mix in what follows
		if to > from {
			out = append(out, s[from:to])
		}
	}
	return out
}

func (r *Redactor) current() *strings.Replacer {
	r.mu.RLock()
	rep := r.replacer
	empty := len(r.forms) == 0
	r.mu.RUnlock()
	if rep != nil || empty {
		return rep
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.replacer == nil {
		forms := make([]string, 0, len(r.forms))
		for f := range r.forms {
			forms = append(forms, f)
		}
		// Longest first: strings.Replacer tries its pairs in order at each
		// position, so a longer form is not cut short by a shorter one.
		slices.SortFunc(forms, func(a, b string) int {
			if len(a) != len(b) {
				return len(b) - len(a)
			}
			return strings.Compare(a, b)
		})
		pairs := make([]string, 0, 2*len(forms))
		for _, f := range forms {
			pairs = append(pairs, f, Mask)
		}
		r.replacer = strings.NewReplacer(pairs...)
	}
	return r.replacer
}

// String returns s with every known secret form replaced by Mask.
func (r *Redactor) String(s string) string {
	if r == nil || s == "" {
		return s
	}
	rep := r.current()
	if rep == nil {
		return s
	}
	return rep.Replace(s)
}

// Leaks reports whether s holds a known secret form.
func (r *Redactor) Leaks(s string) bool { return r.String(s) != s }

// Error returns err with its message redacted; errors.Is and errors.As
// still see the errors it wraps. A nil error stays nil, and an error whose
// message holds no secret comes back as it is.
func (r *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	red := r.String(msg)
	if red == msg {
		return err
	}
	return &redacted{msg: red, err: err}
}

type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }

// Value returns a copy of v with every string in it redacted: strings,
// []string, map[string]string, and the maps and slices of decoded JSON
// ([]any, map[string]any), map keys included, to any depth. Other types
// come back as they are (use JSON for structs).
func (r *Redactor) Value(v any) any {
	if r == nil || r.Len() == 0 {
		return v
	}
	return r.value(v)
}

func (r *Redactor) value(v any) any {
	switch t := v.(type) {
	case string:
		return r.String(t)
	case error:
		return r.Error(t)
	case []string:
		out := make([]string, len(t))
		for i, s := range t {
			out[i] = r.String(s)
		}
		return out
	case map[string]string:
		out := make(map[string]string, len(t))
		for k, s := range t {
			out[r.String(k)] = r.String(s)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = r.value(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[r.String(k)] = r.value(e)
		}
		return out
	}
	return v
}

// JSON returns a copy of v with every string of its JSON form redacted, by
// way of encoding/json: fields without a JSON name are left out of the
// copy as they are of the encoding.
func JSON[T any](r *Redactor, v T) (T, error) {
	if r == nil || r.Len() == 0 {
		return v, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return v, err
	}
	if !r.Leaks(string(b)) {
		return v, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return v, err
	}
	b, err = json.Marshal(r.value(tree))
	if err != nil {
		return v, err
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		return v, errors.Join(errors.New("redact: decode the redacted copy"), err)
	}
	return out, nil
}
