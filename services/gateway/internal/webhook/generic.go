package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/expr-lang/expr"
)

// Target selects the Warehouses a generic receiver's action refreshes: by
// name, or by labels (all must match).
type Target struct {
	Name   string
	Labels map[string]string
}

// GenericResult is what a generic receiver's actions select.
type GenericResult struct {
	// ID is the SHA-256 of the body (generic senders give no delivery ID).
	ID string
	// Targets are the Warehouses to refresh.
	Targets []Target
	// Ignored says why nothing is refreshed ("" when something is).
	Ignored string
}

// genericAction is one of Kargo's generic receiver actions.
type genericAction struct {
	Action                  string `json:"action"`
	WhenExpression          string `json:"whenExpression"`
	TargetSelectionCriteria []struct {
		Kind          string `json:"kind"`
		Name          string `json:"name"`
		LabelSelector *struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"labelSelector"`
	} `json:"targetSelectionCriteria"`
}

// ParseGeneric evaluates Kargo's generic receiver actions against a
// request. Each action's whenExpression (expr-lang; empty means true) sees
// `request` with `method`, `url`, `headers` (canonical names to lists),
// `header(name)` (the first value) and `body` (the decoded JSON body, or
// the raw text when it is not JSON). Refresh actions whose expression is
// true contribute their Warehouse targets.
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
	}
	for i, raw := range actions {
		b, err := json.Marshal(raw)
		if err != nil {
			return res, fmt.Errorf("action %d: %w", i, err)
		}
		var a genericAction
		if err := json.Unmarshal(b, &a); err != nil {
			return res, fmt.Errorf("action %d: %w", i, err)
		}
		if a.Action != "" && !strings.EqualFold(a.Action, "Refresh") {
			continue
		}
		if a.WhenExpression != "" {
			out, err := expr.Eval(a.WhenExpression, env)
			if err != nil {
				// An expression that fails on this payload does not match.
				continue
			}
			if ok, _ := out.(bool); !ok {
				continue
			}
		}
		for _, c := range a.TargetSelectionCriteria {
			if c.Kind != "" && c.Kind != "Warehouse" {
				continue
			}
			t := Target{Name: c.Name}
			if c.LabelSelector != nil {
				t.Labels = c.LabelSelector.MatchLabels
			}
			if t.Name == "" && len(t.Labels) == 0 {
				continue
			}
			res.Targets = append(res.Targets, t)
		}
	}
	if len(res.Targets) == 0 {
		res.Ignored = "no action matched"
	}
	return res, nil
}
