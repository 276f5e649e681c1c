package model

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func decodeFile(t *testing.T, name string) *Decoded {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := Decode(data)
	if err != nil {
		t.Fatalf("decode %s:\n%v", name, err)
	}
	return dec
}

func find[T Object](t *testing.T, dec *Decoded, name string) T {
	t.Helper()
	for _, d := range dec.Documents {
		if o, ok := d.Object.(T); ok && d.Object.GetObjectMeta().Name == name {
			return o
		}
	}
	var zero T
	t.Fatalf("no %T named %q", zero, name)
	return zero
}

func TestDecodeValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file     string
		docs     int
		warnings []string // fields warned about
		check    func(t *testing.T, dec *Decoded)
	}{
		{
			file: "valid/kustomize.yaml",
			docs: 7,
			check: func(t *testing.T, dec *Decoded) {
				w := find[*Warehouse](t, dec, "kargo-demo")
				if w.Spec.Interval.Duration != 5*time.Minute || w.Spec.FreightCreationPolicy != FreightCreationPolicyAutomatic {
					t.Errorf("warehouse defaults: interval %v, policy %q", w.Spec.Interval, w.Spec.FreightCreationPolicy)
				}
				img := w.Spec.Subscriptions[0].Image
				if img.ImageSelectionStrategy != ImageSelectionStrategySemVer || !img.StrictSemvers || img.DiscoveryLimit != 5 {
					t.Errorf("image subscription: %+v", img)
				}
				dev := find[*Stage](t, dec, "dev")
				steps := dev.Spec.PromotionTemplate.Spec.Steps
				if len(steps) != 7 || steps[4].As != "commit" || steps[0].Config["repoURL"] != "${{ vars.gitopsRepo }}" {
					t.Errorf("dev steps: %+v", steps)
				}
				apps := steps[6].Config["apps"].([]any)
				src := apps[0].(map[string]any)["sources"].([]any)[0].(map[string]any)
				if src["desiredRevision"] != "${{ outputs['commit'].commit }}" {
					t.Errorf("expression changed: %v", src["desiredRevision"])
				}
				staging := find[*Stage](t, dec, "staging")
				req := staging.Spec.RequestedFreight[0].Sources
				if req.RequiredSoakTime.Duration != 90*time.Minute || req.AvailabilityStrategy != AvailabilityStrategyOneOf {
					t.Errorf("staging sources: %+v", req)
				}
				if r := staging.Spec.PromotionTemplate.Spec.Steps[1].Retry; r.Timeout.Duration != 10*time.Minute || r.ErrorThreshold != 3 {
					t.Errorf("retry: %+v", r)
				}
				pc := find[*ProjectConfig](t, dec, "kargo-demo")
				if !pc.Spec.PromotionPolicies[0].AutoPromotionEnabled || pc.Spec.WebhookReceivers[1].Registry == nil {
					t.Errorf("project config: %+v", pc.Spec)
				}
				s := find[*Secret](t, dec, "kargo-demo-repo")
				if v, _ := s.Value("username"); string(v) != "someone" {
					t.Errorf("secret username %q", v)
				}
			},
		},
		{
			file: "valid/fanout.yaml",
			docs: 6,
			check: func(t *testing.T, dec *Decoded) {
				gate := find[*Stage](t, dec, "prod-gate")
				if gate.Spec.RequestedFreight[0].Sources.AvailabilityStrategy != AvailabilityStrategyAll || !gate.IsControlFlow() {
					t.Errorf("prod-gate: %+v", gate.Spec)
				}
				if got := strings.Join(gate.UpstreamStages(), ","); got != "test-a,test-b" {
					t.Errorf("upstream %q", got)
				}
				w := find[*Warehouse](t, dec, "app")
				git := w.Spec.Subscriptions[0].Git
				if w.Spec.Interval.Duration != 10*time.Minute || git.StrictSemvers || git.DiscoveryLimit != 20 {
					t.Errorf("git subscription: %+v", git)
				}
				if ch := w.Spec.Subscriptions[1].Chart; ch.DiscoveryLimit != 20 {
					t.Errorf("chart: %+v", ch)
				}
				b := find[*Stage](t, dec, "test-b")
				if p := b.Spec.RequestedFreight[0].Sources.AutoPromotionOptions.SelectionPolicy; p != AutoPromotionSelectionPolicyMatchUpstream {
					t.Errorf("selection policy %q", p)
				}
			},
		},
		{
			file:     "valid/task.yaml",
			docs:     4,
			warnings: []string{"spec.shard"},
			check: func(t *testing.T, dec *Decoded) {
				uat := find[*Stage](t, dec, "uat")
				step := uat.Spec.PromotionTemplate.Spec.Steps[0]
				if step.Task == nil || step.Task.Name != "open-pr" || step.Vars[0].Value != "https://github.com/example/gitops.git" {
					t.Errorf("task step: %+v", step)
				}
				task := find[*PromotionTask](t, dec, "open-pr")
				if task.Spec.Vars[1].Value != "main" || len(task.Spec.Steps) != 2 {
					t.Errorf("task: %+v", task.Spec)
				}
			},
		},
		{
			file: "valid/analysis.yaml",
			docs: 4,
			check: func(t *testing.T, dec *Decoded) {
				at := find[*AnalysisTemplate](t, dec, "smoke")
				m := at.Spec.Metrics[0]
				if m.Provider.Web.JSONPath != "{$.status}" || m.SuccessCondition != `result == "ok"` ||
					m.Count.IntVal != 3 || m.FailureLimit.StrVal != "1" {
					t.Errorf("metric: %+v", m)
				}
				qa := find[*Stage](t, dec, "qa")
				if qa.Spec.Verification.AnalysisTemplates[0].Name != "smoke" || qa.Spec.Verification.Args[0].Value != "http://app.qa.svc" {
					t.Errorf("verification: %+v", qa.Spec.Verification)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			dec := decodeFile(t, tt.file)
			if len(dec.Documents) != tt.docs {
				t.Errorf("got %d documents, want %d", len(dec.Documents), tt.docs)
			}
			var warned []string
			for _, w := range dec.Warnings {
				warned = append(warned, w.Field)
			}
			if strings.Join(warned, " ") != strings.Join(tt.warnings, " ") {
				t.Errorf("warnings %v, want fields %v", dec.Warnings, tt.warnings)
			}
			if issues := Validate(dec.Documents, nil); len(issues) > 0 {
				t.Errorf("validate:\n%v", issues)
			}
			tt.check(t, dec)
		})
	}
}

const project = `apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: p
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: w
  namespace: p
spec:
  subscriptions:
  - image:
      repoURL: nginx
---
`

func stage(name, sources string) string {
	return `apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: ` + name + `
  namespace: p
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: w}
    sources: ` + sources + `
---
`
}

func warehouse(subscriptions string) string {
	return `apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: w2
  namespace: p
spec:
  subscriptions:
` + subscriptions
}

func TestDecodeInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		input string
		// want is the expected error; wantWarning the expected warning
		// (and then no error).
		want, wantWarning *Issue
	}{
		{
			name:  "unknown kind",
			input: project + "apiVersion: kargo.akuity.io/v1alpha1\nkind: Pipeline\nmetadata: {name: x, namespace: p}\n",
			want:  &Issue{Document: 3, Kind: "Pipeline", Name: "x", Field: "kind", Message: `unknown kind "Pipeline" (apiVersion "kargo.akuity.io/v1alpha1")`},
		},
		{
			name:  "wrong apiVersion",
			input: "apiVersion: kargo.akuity.io/v1\nkind: Stage\nmetadata: {name: x, namespace: p}\n",
			want:  &Issue{Document: 1, Kind: "Stage", Name: "x", Field: "apiVersion", Message: `unknown apiVersion "kargo.akuity.io/v1" for kind Stage (want "kargo.akuity.io/v1alpha1")`},
		},
		{
			name:  "unknown nested field",
			input: project + warehouse("  - image:\n      repoURL: nginx\n      foo: bar\n"),
			want:  &Issue{Document: 3, Kind: "Warehouse", Name: "w2", Field: "spec.subscriptions[0].image.foo", Message: "unknown field"},
		},
		{
			name:  "wrong type",
			input: project + stage("s", "{stages: staging}"),
			want:  &Issue{Document: 3, Kind: "Stage", Name: "s", Field: "spec.requestedFreight[0].sources.stages", Message: `expected a list, got string "staging"`},
		},
		{
			name:  "int in string field",
			input: project + warehouse("  - image:\n      repoURL: 1\n"),
			want:  &Issue{Document: 3, Kind: "Warehouse", Name: "w2", Field: "spec.subscriptions[0].image.repoURL", Message: "expected a string, got integer 1"},
		},
		{
			name:  "bad duration",
			input: project + stage("s", "{direct: true, requiredSoakTime: soon}"),
			want:  &Issue{Document: 3, Kind: "Stage", Name: "s", Field: "spec.requestedFreight[0].sources.requiredSoakTime", Message: `invalid duration "soon"`},
		},
		{
			name:  "empty requestedFreight",
			input: project + "apiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {name: s, namespace: p}\nspec:\n  requestedFreight: []\n",
			want:  &Issue{Document: 3, Kind: "Stage", Name: "s", Field: "spec.requestedFreight", Message: "must not be empty"},
		},
		{
			name:  "sources without direct or stages",
			input: project + stage("prod", "{}"),
			want:  &Issue{Document: 3, Kind: "Stage", Name: "prod", Field: "spec.requestedFreight[0].sources.stages", Message: "must not be empty"},
		},
		{
			name:  "two subscription types",
			input: project + warehouse("  - image: {repoURL: nginx}\n    git: {repoURL: https://github.com/x/y}\n"),
			want:  &Issue{Document: 3, Kind: "Warehouse", Name: "w2", Field: "spec.subscriptions[0]", Message: "exactly one of git, image or chart must be set, got 2 (git, image)"},
		},
		{
			name:  "bad regex",
			input: project + warehouse("  - image: {repoURL: nginx, allowTagsRegexes: ['^v(']}\n"),
			want:  &Issue{Document: 3, Kind: "Warehouse", Name: "w2", Field: "spec.subscriptions[0].image.allowTagsRegexes[0]", Message: "invalid regular expression \"^v(\": error parsing regexp: missing closing ): `^v(`"},
		},
		{
			name:  "bad path regex",
			input: project + warehouse("  - git: {repoURL: https://github.com/x/y, includePaths: ['regex:[']}\n"),
			want:  &Issue{Document: 3, Kind: "Warehouse", Name: "w2", Field: "spec.subscriptions[0].git.includePaths[0]", Message: "invalid regular expression \"[\": error parsing regexp: missing closing ]: `[`"},
		},
		{
			name:  "bad since",
			input: project + warehouse("  - git: {repoURL: https://github.com/x/y, since: yesterday}\n"),
			want:  &Issue{Document: 3, Kind: "Warehouse", Name: "w2", Field: "spec.subscriptions[0].git.since", Message: `must be an RFC 3339 time such as 2025-01-31T00:00:00Z, got "yesterday"`},
		},
		{
			name:  "bad semver constraint",
			input: project + warehouse("  - image: {repoURL: nginx, semverConstraint: '>>1.0'}\n"),
			want:  &Issue{Document: 3, Kind: "Warehouse", Name: "w2", Field: "spec.subscriptions[0].image.semverConstraint"},
		},
		{
			name:  "discovery limit",
			input: project + warehouse("  - chart: {repoURL: https://charts.example.com, name: x, discoveryLimit: 101}\n"),
			want:  &Issue{Document: 3, Kind: "Warehouse", Name: "w2", Field: "spec.subscriptions[0].chart.discoveryLimit", Message: "must be between 1 and 100, got 101"},
		},
		{
			name:  "missing upstream stage",
			input: project + stage("prod", "{stages: [staging]}"),
			want:  &Issue{Document: 3, Kind: "Stage", Name: "prod", Field: "spec.requestedFreight[0].sources.stages[0]", Message: `stage "staging" does not exist in project "p"`},
		},
		{
			name:  "missing warehouse",
			input: project + strings.ReplaceAll(stage("dev", "{direct: true}"), "name: w}", "name: nope}"),
			want:  &Issue{Document: 3, Kind: "Stage", Name: "dev", Field: "spec.requestedFreight[0].origin.name", Message: `warehouse "nope" does not exist in project "p"`},
		},
		{
			name:  "missing project",
			input: strings.ReplaceAll(stage("dev", "{direct: true}"), "namespace: p", "namespace: q"),
			want:  &Issue{Document: 1, Kind: "Stage", Name: "dev", Field: "metadata.namespace", Message: `project "q" does not exist`},
		},
		{
			name:  "stage cycle",
			input: project + stage("a", "{stages: [c]}") + stage("b", "{stages: [a]}") + stage("c", "{stages: [b]}"),
			want:  &Issue{Document: 3, Kind: "Stage", Name: "a", Field: "spec.requestedFreight", Message: "stages form a cycle: a -> b -> c -> a"},
		},
		{
			name:  "bad name",
			input: project + stage("Prod_1", "{direct: true}"),
			want:  &Issue{Document: 3, Kind: "Stage", Name: "Prod_1", Field: "metadata.name", Message: `"Prod_1" is not a valid name: an RFC 1123 subdomain (lower-case letters, digits, '-' and '.')`},
		},
		{
			name:  "step with uses and task",
			input: project + "apiVersion: kargo.akuity.io/v1alpha1\nkind: PromotionTask\nmetadata: {name: t, namespace: p}\nspec:\n  steps:\n  - uses: git-clone\n    task: {name: other}\n",
			want:  &Issue{Document: 3, Kind: "PromotionTask", Name: "t", Field: "spec.steps[0]", Message: "exactly one of uses or task must be set"},
		},
		{
			name:  "duplicate step alias",
			input: project + "apiVersion: kargo.akuity.io/v1alpha1\nkind: PromotionTask\nmetadata: {name: t, namespace: p}\nspec:\n  steps:\n  - {uses: a, as: x}\n  - {uses: b, as: x}\n",
			want:  &Issue{Document: 3, Kind: "PromotionTask", Name: "t", Field: "spec.steps[1].as", Message: `duplicate step alias "x"`},
		},
		{
			name:  "metric with two providers",
			input: project + "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: a, namespace: p}\nspec:\n  metrics:\n  - name: m\n    provider:\n      web: {url: http://x}\n      prometheus: {query: up}\n",
			want:  &Issue{Document: 3, Kind: "AnalysisTemplate", Name: "a", Field: "spec.metrics[0].provider", Message: "exactly one provider must be set, got web, prometheus"},
		},
		{
			name:  "bad cred type",
			input: project + "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: p\n  labels: {kargo.akuity.io/cred-type: ssh}\n",
			want:  &Issue{Document: 3, Kind: "Secret", Name: "s", Field: `metadata.labels["kargo.akuity.io/cred-type"]`, Message: `must be one of git, image, helm, generic; got "ssh"`},
		},
		{
			name:  "namespace on cluster-scoped kind",
			input: "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: p, namespace: p}\n",
			want:  &Issue{Document: 1, Kind: "Project", Name: "p", Field: "metadata.namespace", Message: "must be empty: Project is cluster-scoped"},
		},
		{
			name:        "duplicate key",
			input:       project + stage("dev", "{direct: true, direct: false, direct: true}"),
			wantWarning: &Issue{Document: 3, Kind: "Stage", Name: "dev", Field: "spec.requestedFreight[0].sources.direct", Message: `duplicate key "direct": the last value wins`},
		},
		{
			name:        "ignored field",
			input:       project + strings.Replace(stage("dev", "{direct: true}"), "spec:\n", "spec:\n  shard: east\n", 1),
			wantWarning: &Issue{Document: 3, Kind: "Stage", Name: "dev", Field: "spec.shard", Message: "accepted but not acted on by Caravan"},
		},
		{
			name:        "opaque analysis provider",
			input:       project + "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: a, namespace: p}\nspec:\n  metrics:\n  - name: m\n    provider:\n      plugin: {acme/metrics: {x: 1}}\n",
			wantWarning: &Issue{Document: 3, Kind: "AnalysisTemplate", Name: "a", Field: "spec.metrics[0].provider.plugin", Message: "accepted but not acted on by Caravan"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dec, err := Decode([]byte(tt.input))
			var issues Issues
			if err != nil {
				errors.As(err, &issues)
			} else {
				issues = Validate(dec.Documents, nil)
			}
			if tt.wantWarning != nil {
				if len(issues) > 0 {
					t.Fatalf("unexpected errors:\n%v", issues)
				}
				if !contains(dec.Warnings, *tt.wantWarning) {
					t.Fatalf("warning %v not in:\n%v", tt.wantWarning, dec.Warnings)
				}
				return
			}
			if !contains(issues, *tt.want) {
				t.Fatalf("issue %q not in:\n%v", tt.want.String(), issues)
			}
		})
	}
}

// contains matches want against issues; an empty Message matches any.
func contains(issues Issues, want Issue) bool {
	for _, i := range issues {
		if want.Message == "" {
			i.Message = ""
		}
		if i == want {
			return true
		}
	}
	return false
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	array := `[{"apiVersion":"kargo.akuity.io/v1alpha1","kind":"Project","metadata":{"name":"p"}},
	{"apiVersion":"kargo.akuity.io/v1alpha1","kind":"Warehouse","metadata":{"name":"w","namespace":"p"},
	 "spec":{"subscriptions":[{"image":{"repoURL":"nginx","strictSemvers":false}}]}}]`
	list := `{"apiVersion":"v1","kind":"List","items":` + array + `}`
	for _, input := range []string{array, list} {
		dec, err := Decode([]byte(input))
		if err != nil {
			t.Fatal(err)
		}
		if len(dec.Documents) != 2 || dec.Documents[1].Index != 2 {
			t.Fatalf("documents: %+v", dec.Documents)
		}
		w := dec.Documents[1].Object.(*Warehouse)
		if w.Spec.Subscriptions[0].Image.StrictSemvers {
			t.Error("explicit strictSemvers: false was lost")
		}
		if issues := Validate(dec.Documents, nil); len(issues) > 0 {
			t.Error(issues)
		}
	}
}

func TestIssueString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		issue Issue
		want  string
	}{
		{Issue{Document: 3, Kind: "Stage", Name: "prod", Field: "spec.x", Message: "must not be empty"}, "document 3, Stage/prod: spec.x: must not be empty"},
		{Issue{Document: 1, Message: "invalid YAML"}, "document 1: invalid YAML"},
		{Issue{Kind: "Stage", Message: "m"}, "Stage: m"},
		{Issue{Message: "m"}, "m"},
	}
	for _, tt := range tests {
		if got := tt.issue.String(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	dec := decodeFile(t, "valid/kustomize.yaml")
	for _, d := range dec.Documents {
		raw, err := jsonMarshal(d.Object)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := DecodeJSONObject(raw)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := jsonMarshal(obj)
		if string(again) != string(raw) {
			t.Errorf("round trip changed %s:\n%s\n%s", d.Object.GetTypeMeta().Kind, raw, again)
		}
		// The JSON is also strict-decodable.
		if _, err := Decode(raw); err != nil {
			t.Errorf("strict decode of own JSON: %v\n%s", err, raw)
		}
	}
}

func TestExistingObjects(t *testing.T) {
	t.Parallel()
	stored := decodeFile(t, "valid/fanout.yaml")
	var existing []Object
	for _, d := range stored.Documents {
		existing = append(existing, d.Object)
	}
	// A new stage downstream of a stored one is fine.
	input := strings.ReplaceAll(stage("prod", "{stages: [prod-gate]}"), "namespace: p", "namespace: fanout")
	input = strings.ReplaceAll(input, "name: w}", "name: app}")
	dec, err := Decode([]byte(input))
	if err != nil {
		t.Fatal(err)
	}
	if issues := Validate(dec.Documents, existing); len(issues) > 0 {
		t.Fatal(issues)
	}
	// Redefining a stored stage to close a loop is a cycle.
	loop := strings.ReplaceAll(stage("staging", "{stages: [prod-gate]}"), "namespace: p", "namespace: fanout")
	loop = strings.ReplaceAll(loop, "name: w}", "name: app}")
	dec, err = Decode([]byte(loop))
	if err != nil {
		t.Fatal(err)
	}
	issues := Validate(dec.Documents, existing)
	if len(issues) != 1 || !strings.Contains(issues[0].Message, "cycle") {
		t.Fatalf("want one cycle issue, got:\n%v", issues)
	}
}
