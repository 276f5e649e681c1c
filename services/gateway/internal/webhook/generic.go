package webhook

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/expr-lang/expr"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Target selects the Warehouses a generic receiver's Refresh action
// refreshes, or the Stages its Promote action promotes into.
// Every criterion set must hold (Kargo ANDs them): the name, the labels,
// the label requirements and the index requirements.
type Target struct {
	Name         string
	Labels       map[string]string
	Requirements []Requirement
	// Indices are index requirements with their values evaluated.
	Indices []Index
}

// Requirement is a label selector requirement (In, NotIn, Exists,
// DoesNotExist) with its values evaluated.
type Requirement struct {
	Key      string
	Operator string
	Values   []string
}

// Index is an index selector requirement: Key "subscribedURLs" matches a
// Warehouse subscribed to Value (normalized), Operator Equal or NotEqual.
type Index struct {
	Key, Operator, Value string
}

// Selects reports whether t selects a Warehouse with name, labels and the
// normalized URLs of its subscriptions.
func (t Target) Selects(name string, labels map[string]string, subscribedURLs []string) bool {
	if t.Name != "" && t.Name != name {
		return false
	}
	for k, v := range t.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range t.Requirements {
		v, ok := labels[r.Key]
		switch r.Operator {
		case "In":
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case "NotIn":
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false
		}
	}
	for _, ix := range t.Indices {
		has := slices.Contains(subscribedURLs, ix.Value)
		if (ix.Operator == "Equal") != has {
			return false
		}
	}
	return true
}

// Promote is what one Promote action asks for (a Caravan addition: Kargo's
// receivers only refresh): the Stages Target selects each get a Promotion
// of Freight (a name or alias), or, when Freight is "", of the newest
// freight available to the Stage (from Warehouse only, when set).
type Promote struct {
	Target
	Freight   string
	Warehouse string
}

// GenericResult is what a generic receiver's actions select.
type GenericResult struct {
	// ID is the SHA-256 of the body (generic senders give no delivery ID).
	ID string
	// Targets are the Warehouses to refresh.
	Targets []Target
	// Promotions are the Stages to promote into.
	Promotions []Promote
	// Ignored says why nothing is done ("" when something is).
	Ignored string
	// Problems are the actions and criteria that could not be used
	// (unsupported, or an expression that failed on this request).
	Problems []string
}

// genericAction is one of Kargo's generic receiver actions.
type genericAction struct {
	Action                  string            `json:"action"`
	WhenExpression          string            `json:"whenExpression"`
	Parameters              map[string]string `json:"parameters"`
	TargetSelectionCriteria []criteria        `json:"targetSelectionCriteria"`
}

// ParseGeneric evaluates Kargo's generic receiver actions against a
// request. Each action's whenExpression (expr-lang; empty means true) sees
// `request` with `method`, `url`, `headers` (canonical names to lists),
// `header(name)` (the first value) and `body` (the decoded JSON body, or
// the raw text when it is not JSON). Refresh actions whose expression is
// true contribute their Warehouse targets, Promote actions (a Caravan
// addition) their Stage targets with the freight their parameters name.
func ParseGeneric(actions []map[string]any, method, rawURL string, h http.Header, body []byte) (GenericResult, error) {
	sum := sha256.Sum256(body)
	res := GenericResult{ID: "sha256:" + hex.EncodeToString(sum[:])}
	var decoded any
	if err := json.Unmarshal(body, &decoded); err != nil {
		decoded = string(body)
	}
	env := map[string]any{
		"request": map[string]any{
			"method":  method,
			"url":     rawURL,
			"headers": map[string][]string(h.Clone()),
			"header":  func(name string) string { return h.Get(name) },
			"body":    decoded,
		},
		"normalizeGit":   model.NormalizeGitURL,
		"normalizeImage": model.NormalizeImageURL,
		"normalizeChart": model.NormalizeChartURL,
	}
	var problems []string
	for i, raw := range actions {
		b, err := json.Marshal(raw)
		if err != nil {
			return res, fmt.Errorf("action %d: %w", i, err)
		}
		var a genericAction
		if err := json.Unmarshal(b, &a); err != nil {
			return res, fmt.Errorf("action %d: %w", i, err)
		}
		promote := strings.EqualFold(a.Action, "Promote")
		if a.Action != "" && !promote && !strings.EqualFold(a.Action, "Refresh") {
			problems = append(problems, fmt.Sprintf("action %d: action %q is not supported (Refresh, and Caravan's Promote)", i, a.Action))
			continue
		}
		actionEnv := maps.Clone(env)
		params := make(map[string]any, len(a.Parameters))
		paramsFailed := false
		for k, v := range a.Parameters {
			out, err := evalTemplate(v, env)
			if err != nil {
				problems = append(problems, fmt.Sprintf("action %d: parameters.%s: %v", i, k, err))
				paramsFailed = true
				continue
			}
			params[k] = out
		}
		actionEnv["params"] = params
		if a.WhenExpression != "" {
			out, err := expr.Eval(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(a.WhenExpression), "${{"), "}}"), actionEnv)
			if err != nil {
				// An expression that fails on this payload does not match.
				problems = append(problems, fmt.Sprintf("action %d: whenExpression: %v", i, err))
				continue
			}
			if ok, _ := out.(bool); !ok {
				continue
			}
		}
		var freight, warehouse string
		if promote {
			if paramsFailed {
				continue // promote nothing rather than other freight
			}
			var bad []string
			for k, v := range params {
				s, ok := v.(string)
				switch {
				case k != "freight" && k != "warehouse":
					bad = append(bad, fmt.Sprintf("action %d: parameters.%s is not a Promote parameter (freight, warehouse)", i, k))
				case !ok:
					bad = append(bad, fmt.Sprintf("action %d: parameters.%s is %T, not a string", i, k, v))
				case k == "freight":
					freight = s
				default:
					warehouse = s
				}
			}
			if len(bad) > 0 {
				slices.Sort(bad)
				problems = append(problems, bad...)
				continue
			}
		}
		for j, c := range a.TargetSelectionCriteria {
			kind := "Warehouse"
			if promote {
				kind = "Stage"
			}
			if c.Kind != "" && c.Kind != kind {
				problems = append(problems, fmt.Sprintf("action %d: targetSelectionCriteria[%d].kind %q is not supported (a %s action targets %ss)", i, j, c.Kind, cmp.Or(a.Action, "Refresh"), kind))
				continue
			}
			if promote && c.IndexSelector != nil {
				problems = append(problems, fmt.Sprintf("action %d: targetSelectionCriteria[%d].indexSelector indexes Warehouses, not Stages", i, j))
				continue
			}
			t, err := target(c, actionEnv)
			if err != nil {
				problems = append(problems, fmt.Sprintf("action %d: targetSelectionCriteria[%d]: %v", i, j, err))
				continue
			}
			if t.Name == "" && len(t.Labels) == 0 && len(t.Requirements) == 0 && len(t.Indices) == 0 {
				continue
			}
			if promote {
				res.Promotions = append(res.Promotions, Promote{Target: t, Freight: freight, Warehouse: warehouse})
				continue
			}
			res.Targets = append(res.Targets, t)
		}
	}
	res.Problems = problems
	if len(res.Targets) == 0 && len(res.Promotions) == 0 {
		res.Ignored = "no action matched"
		if len(problems) > 0 {
			res.Ignored += " (" + strings.Join(problems, "; ") + ")"
		}
	}
	return res, nil
}

// criteria is one of an action's targetSelectionCriteria.
type criteria struct {
	Kind          string `json:"kind"`
	Name          string `json:"name"`
	LabelSelector *struct {
		MatchLabels      map[string]string `json:"matchLabels"`
		MatchExpressions []struct {
			Key      string   `json:"key"`
			Operator string   `json:"operator"`
			Values   []string `json:"values"`
		} `json:"matchExpressions"`
	} `json:"labelSelector"`
	IndexSelector *struct {
		MatchIndices []struct {
			Key      string `json:"key"`
			Operator string `json:"operator"`
			Value    string `json:"value"`
		} `json:"matchIndices"`
	} `json:"indexSelector"`
}

// target builds a Target from selection criteria, evaluating the
// expressions in label requirement values and index values.
func target(c criteria, env map[string]any) (Target, error) {
	t := Target{Name: c.Name}
	if ls := c.LabelSelector; ls != nil {
		t.Labels = ls.MatchLabels
		for k, me := range ls.MatchExpressions {
			r := Requirement{Key: me.Key, Operator: me.Operator}
			switch me.Operator {
			case "In", "NotIn":
				if len(me.Values) == 0 {
					return t, fmt.Errorf("labelSelector.matchExpressions[%d]: %s needs values", k, me.Operator)
				}
			case "Exists", "DoesNotExist":
				if len(me.Values) > 0 {
					return t, fmt.Errorf("labelSelector.matchExpressions[%d]: %s takes no values", k, me.Operator)
				}
			default:
				return t, fmt.Errorf("labelSelector.matchExpressions[%d].operator %q is not In, NotIn, Exists or DoesNotExist", k, me.Operator)
			}
			for _, v := range me.Values {
				s, err := evalString(v, env)
				if err != nil {
					return t, fmt.Errorf("labelSelector.matchExpressions[%d]: %w", k, err)
				}
				r.Values = append(r.Values, s)
			}
			t.Requirements = append(t.Requirements, r)
		}
	}
	if is := c.IndexSelector; is != nil {
		for k, mi := range is.MatchIndices {
			switch {
			case mi.Key != "subscribedURLs":
				return t, fmt.Errorf("indexSelector.matchIndices[%d].key %q does not index Warehouses (subscribedURLs does)", k, mi.Key)
			case mi.Operator != "Equal" && mi.Operator != "NotEqual":
				return t, fmt.Errorf("indexSelector.matchIndices[%d].operator %q is not Equal or NotEqual", k, mi.Operator)
			}
			s, err := evalString(mi.Value, env)
			if err != nil {
				return t, fmt.Errorf("indexSelector.matchIndices[%d]: %w", k, err)
			}
			t.Indices = append(t.Indices, Index{Key: mi.Key, Operator: mi.Operator, Value: s})
		}
	}
	return t, nil
}

// evalTemplate evaluates Kargo's ${{ expression }} templates in s: s
// itself when it has none, the expression's value when s is exactly one,
// else s with each replaced by its value's text.
func evalTemplate(s string, env map[string]any) (any, error) {
	if !strings.Contains(s, "${{") {
		return s, nil
	}
	trimmed := strings.TrimSpace(s)
	if strings.HasPrefix(trimmed, "${{") && strings.HasSuffix(trimmed, "}}") && strings.Count(trimmed, "${{") == 1 {
		return expr.Eval(trimmed[3:len(trimmed)-2], env)
	}
	var b strings.Builder
	rest := s
	for {
		i := strings.Index(rest, "${{")
		if i < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		j := strings.Index(rest[i:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("%q: unterminated ${{", s)
		}
		v, err := expr.Eval(rest[i+3:i+j], env)
		if err != nil {
			return nil, err
		}
		b.WriteString(rest[:i])
		fmt.Fprint(&b, v)
		rest = rest[i+j+2:]
	}
}

func evalString(s string, env map[string]any) (string, error) {
	v, err := evalTemplate(s, env)
	if err != nil {
		return "", err
	}
	str, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%q is %T, not a string", s, v)
	}
	return str, nil
}
