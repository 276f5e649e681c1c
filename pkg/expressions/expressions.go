// Package expressions evaluates Kargo's `${{ }}` (and `${% %}`) expressions
// with expr-lang and Kargo's functions: in promotion step configuration
// (the promoter) and in verification arguments (the verifier).
//
// Expressions live in string values only; keys are never evaluated. A
// string that is exactly one expression takes the expression's value and
// JSON type (a string result that reads as JSON — a number, a boolean, an
// object — is coerced to it unless quote() made it a string); expressions
// embedded in a longer string are rendered into that string.
package expressions

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/expr-lang/expr"
)

// delimiters are the opening and closing marks of an expression.
var delimiters = [][2]string{{"${{", "}}"}, {"${%", "%}"}}

// ErrSyntax marks an unterminated expression.
var ErrSyntax = errors.New("unterminated expression")

// quoted is a string quote() or unsafeQuote() produced: the final value
// stays a string.
type quoted string

// EvaluateConfig returns a copy of cfg with every expression in its string
// values evaluated in env. Map keys are kept as written.
func EvaluateConfig(cfg map[string]any, env *Env) (map[string]any, error) {
	out, err := evaluateValue(cfg, env, "")
	if err != nil {
		return nil, err
	}
	if out == nil {
		return map[string]any{}, nil
	}
	m, _ := out.(map[string]any)
	return m, nil
}

func evaluateValue(v any, env *Env, path string) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			ev, err := evaluateValue(val, env, joinPath(path, k))
			if err != nil {
				return nil, err
			}
			out[k] = ev
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, val := range t {
			ev, err := evaluateValue(val, env, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = ev
		}
		return out, nil
	case string:
		ev, err := EvaluateString(t, env)
		if err != nil {
			if path == "" {
				return nil, err
			}
			return nil, fmt.Errorf("config.%s: %w", path, err)
		}
		return ev, nil
	}
	return v, nil
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// HasExpression reports whether s holds an expression.
func HasExpression(s string) bool {
	for _, d := range delimiters {
		if strings.Contains(s, d[0]) {
			return true
		}
	}
	return false
}

// segment is literal text or an expression of a template.
type segment struct {
	text string
	expr bool
}

func parse(s string) ([]segment, error) {
	var segs []segment
	for len(s) > 0 {
		start, d := -1, [2]string{}
		for _, cand := range delimiters {
			if i := strings.Index(s, cand[0]); i >= 0 && (start < 0 || i < start) {
				start, d = i, cand
			}
		}
		if start < 0 {
			segs = append(segs, segment{text: s})
			break
		}
		if start > 0 {
			segs = append(segs, segment{text: s[:start]})
		}
		rest := s[start+len(d[0]):]
		end := strings.Index(rest, d[1])
		if end < 0 {
			return nil, fmt.Errorf("%w: %q has no closing %q", ErrSyntax, s[start:], d[1])
		}
		segs = append(segs, segment{text: strings.TrimSpace(rest[:end]), expr: true})
		s = rest[end+len(d[1]):]
	}
	return segs, nil
}

// EvaluateString evaluates the expressions in s. A string without
// expressions is returned unchanged.
func EvaluateString(s string, env *Env) (any, error) {
	if !HasExpression(s) {
		return s, nil
	}
	segs, err := parse(s)
	if err != nil {
		return nil, err
	}
	if len(segs) == 1 && segs[0].expr {
		v, err := Eval(segs[0].text, env)
		if err != nil {
			return nil, err
		}
		return coerce(v), nil
	}
	var b strings.Builder
	for _, seg := range segs {
		if !seg.expr {
			b.WriteString(seg.text)
			continue
		}
		v, err := Eval(seg.text, env)
		if err != nil {
			return nil, err
		}
		b.WriteString(render(v))
	}
	return b.String(), nil
}

// EvaluateBool evaluates a condition such as a step's `if`: either a bare
// expression or one wrapped in ${{ }}.
func EvaluateBool(s string, env *Env) (bool, error) {
	s = strings.TrimSpace(s)
	var v any
	var err error
	if HasExpression(s) {
		v, err = EvaluateString(s, env)
	} else {
		v, err = Eval(s, env)
	}
	if err != nil {
		return false, err
	}
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		switch strings.ToLower(b) {
		case "true":
			return true, nil
		case "false", "":
			return false, nil
		}
	case nil:
		return false, nil
	}
	return false, fmt.Errorf("condition %q is a %T, not a boolean", s, v)
}

// coerce turns the value of a whole-string expression into its JSON type.
func coerce(v any) any {
	switch t := v.(type) {
	case quoted:
		return string(t)
	case *semver.Version:
		return t.String()
	case semver.Version:
		return t.String()
	case string:
		var parsed any
		if err := json.Unmarshal([]byte(t), &parsed); err == nil {
			if _, isString := parsed.(string); !isString {
				return parsed
			}
		}
		return t
	}
	return normalize(v)
}

// render writes an embedded expression's value into a string.
func render(v any) string {
	switch t := v.(type) {
	case quoted:
		return string(t)
	case string:
		return t
	case nil:
		return ""
	case fmt.Stringer:
		return t.String() // a version from semverParse
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.String {
		return rv.String() // a string type, such as an origin's Kind
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// normalize turns Go values into the types encoding/json decodes to, so a
// config holds the same types before and after a JSON round trip.
func normalize(v any) any {
	switch t := v.(type) {
	case nil, bool, string, float64:
		return v
	case int:
		return float64(t)
	case int64:
		return float64(t)
	case int32:
		return float64(t)
	case uint32:
		return float64(t)
	case uint64:
		return float64(t)
	case float32:
		return float64(t)
	case *semver.Version:
		// Kept, so that a step output holding one (yaml-parse's
		// semverParse(version)) still has its methods in later steps of
		// the same run; it reads as its text when saved.
		return t
	case semver.Version:
		return &t
	}
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return v
	}
	return out
}

// Eval compiles and runs one expression (without delimiters) in env.
func Eval(code string, env *Env) (any, error) {
	prog, err := expr.Compile(code, env.functions()...)
	if err != nil {
		return nil, fmt.Errorf("compile expression %q: %w", code, err)
	}
	v, err := expr.Run(prog, env.variables())
	if err != nil {
		return nil, fmt.Errorf("evaluate expression %q: %w", code, err)
	}
	return v, nil
}

// EvalWith runs one expression (with or without ${{ }}) with extra top-level
// variables (a parsed document, an HTTP response) beside env's; the extra
// ones win on a name clash.
func EvalWith(code string, env *Env, extra map[string]any) (any, error) {
	code = strings.TrimSpace(code)
	for _, d := range delimiters {
		if strings.HasPrefix(code, d[0]) && strings.HasSuffix(code, d[1]) {
			code = strings.TrimSpace(code[len(d[0]) : len(code)-len(d[1])])
			break
		}
	}
	vars := map[string]any{}
	var opts []expr.Option
	if env != nil {
		vars = env.variables()
		opts = env.functions()
	}
	for k, v := range extra {
		vars[k] = v
	}
	prog, err := expr.Compile(code, opts...)
	if err != nil {
		return nil, fmt.Errorf("compile expression %q: %w", code, err)
	}
	v, err := expr.Run(prog, vars)
	if err != nil {
		return nil, fmt.Errorf("evaluate expression %q: %w", code, err)
	}
	if q, ok := v.(quoted); ok {
		return string(q), nil
	}
	return normalize(v), nil
}
