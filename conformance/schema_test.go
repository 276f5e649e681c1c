package conformance

import (
	"encoding/json"
	"slices"
	"testing"
)

func parse(t *testing.T, s string) Schema {
	t.Helper()
	var out Schema
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// The walker resolves $ref across files, merges oneOf branches and lists
// every property path; Sample fills every one with a valid value.
func TestWalker(t *testing.T) {
	t.Parallel()
	w := walker{files: map[string]Schema{
		"common.json": parse(t, `{"definitions":{"app":{"type":"object","properties":{"name":{"type":"string"},"ns":{"type":"string","pattern":"^[a-zA-Z_]\\w*$"}}}}}`),
		"step.json": parse(t, `{"type":"object","properties":{
			"apps":{"type":"array","items":{"$ref":"common.json#/definitions/app"}},
			"mode":{"type":"string","enum":["","Fast","Slow"]},
			"when":{"type":"string","format":"date-time"},
			"labels":{"type":"object","additionalProperties":{"type":"integer","minimum":3}},
			"free":{"type":"object","x-kubernetes-preserve-unknown-fields":true}},
			"oneOf":[{"properties":{"a":{"type":"boolean"}}},{"properties":{"b":{"$ref":"#/definitions/interval"}}}],
			"definitions":{"interval":{"type":"string","pattern":"^([0-9]+(\\.[0-9]+)?(s|m|h))+$"}}}`),
	}}
	s := w.files["step.json"]
	want := []string{"a", "apps", "apps[].name", "apps[].ns", "b", "free", "labels", "labels{}", "mode", "when"}
	if got := w.Paths(s, "step.json", false); !slices.Equal(got, want) {
		t.Errorf("paths %v\nwant  %v", got, want)
	}
	wantLeaves := []string{"a", "apps[].name", "apps[].ns", "b", "free", "labels{}", "mode", "when"}
	if got := w.Paths(s, "step.json", true); !slices.Equal(got, wantLeaves) {
		t.Errorf("leaves %v\nwant   %v", got, wantLeaves)
	}
	got := w.Sample(s, "step.json", "", nil)
	wantSample := map[string]any{
		"a": true, "b": "5m0s", "mode": "Fast", "when": "2025-01-02T03:04:05Z",
		"apps":   []any{map[string]any{"name": "sample", "ns": "sample"}},
		"labels": map[string]any{"k1": 3}, "free": map[string]any{"sample": "value"},
	}
	if diff := Compare(jsonOf(t, wantSample), jsonOf(t, got), ""); len(diff) > 0 {
		t.Errorf("sample %v: %v", got, diff)
	}
	hinted := w.Sample(s, "step.json", "", func(path string, _ Schema) (any, bool) { return "hinted", path == "mode" })
	if m := hinted.(map[string]any); m["mode"] != "hinted" {
		t.Errorf("hint not used: %v", m["mode"])
	}
}

func jsonOf(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCompare(t *testing.T) {
	t.Parallel()
	want := map[string]any{"a": "x", "l": []any{map[string]any{"b": 1.0}}, "c": true}
	got := map[string]any{"a": "y", "l": []any{map[string]any{}}}
	diff := Compare(want, got, "")
	wantDiff := []string{"a: want x, got y", "c: dropped", "l[0].b: dropped"}
	if !slices.Equal(diff, wantDiff) {
		t.Errorf("diff %q", diff)
	}
}
