package verification

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/expr-lang/expr"

	"github.com/caravan-cd/caravan/pkg/model"
)

var expression = regexp.MustCompile(`\$\{\{(.*?)\}\}`)

// evalArgs evaluates the Stage's verification args: each value may hold
// ${{ }} expressions (expr-lang) over ctx (project, stage, promotion,
// targetFreight) and vars (the Stage's vars). A value that is one
// expression takes its result's text; otherwise each expression is
// replaced in place.
func evalArgs(args []model.AnalysisRunArgument, env map[string]any) (map[string]string, error) {
	out := make(map[string]string, len(args))
	for _, a := range args {
		v, err := evalString(a.Value, env)
		if err != nil {
			return nil, fmt.Errorf("verification arg %q: %w", a.Name, err)
		}
		out[a.Name] = v
	}
	return out, nil
}

func evalString(s string, env map[string]any) (string, error) {
	if !strings.Contains(s, "${{") {
		return s, nil
	}
	var firstErr error
	out := expression.ReplaceAllStringFunc(s, func(m string) string {
		src := strings.TrimSpace(expression.FindStringSubmatch(m)[1])
		v, err := expr.Eval(src, env)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("expression %q: %w", src, err)
			}
			return m
		}
		return stringify(v)
	})
	return out, firstErr
}

func stringify(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case nil:
		return ""
	case fmt.Stringer:
		return t.String()
	case map[string]any, []any:
		b, err := json.Marshal(t)
		if err == nil {
			return string(b)
		}
	}
	return fmt.Sprint(v)
}

// argEnv is what verification arg expressions see.
func argEnv(project string, stage *model.Stage, promotion string, freight *model.Freight) (map[string]any, error) {
	c := map[string]any{"project": project, "stage": stage.Name, "promotion": promotion}
	if freight != nil {
		c["targetFreight"] = map[string]any{
			"name":   freight.Name,
			"alias":  freight.Alias,
			"origin": map[string]any{"kind": string(freight.Origin.Kind), "name": freight.Origin.Name},
		}
	}
	vars := map[string]any{}
	env := map[string]any{"ctx": c, "vars": vars}
	var all []model.PromotionVariable
	if t := stage.Spec.PromotionTemplate; t != nil {
		all = append(all, t.Spec.Vars...)
	}
	all = append(all, stage.Spec.Vars...)
	for _, v := range all {
		s, err := evalString(v.Value, env)
		if err != nil {
			return nil, fmt.Errorf("var %q: %w", v.Name, err)
		}
		vars[v.Name] = s
	}
	return env, nil
}
