package expressions

import (
	"context"
	"reflect"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

type fakeLookup struct{}

func (fakeLookup) Freight(_ context.Context, _, name string) (*model.Freight, error) {
	if name != "f1" {
		return nil, nil
	}
	return &model.Freight{Status: model.FreightStatus{Metadata: map[string]any{"owner": "team-a"}}}, nil
}

func (fakeLookup) StageMetadata(_ context.Context, _, stage string) (map[string]any, error) {
	return map[string]any{"lastDeploy": stage + "-ok"}, nil
}

func (fakeLookup) ConfigMap(_ context.Context, project, name string) (*model.ConfigMap, error) {
	if name != "settings" {
		return nil, nil
	}
	return &model.ConfigMap{Data: map[string]string{"replicas": "3", "project": project}}, nil
}

func (fakeLookup) Secret(_ context.Context, _, name string) (*model.Secret, error) {
	if name != "token" {
		return nil, nil
	}
	return &model.Secret{Data: map[string][]byte{"value": []byte("s3cr3t")}}, nil
}

func testEnv() *Env {
	origin := model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}
	return &Env{
		Ctx: Context{
			Project: "demo", Stage: "dev", Promotion: "dev.01abc.f1",
			TargetFreight: model.FreightReference{Name: "f1", Origin: origin},
			TargetAlias:   "wild-cat",
		},
		Vars:    map[string]any{"repo": "http://git.example/app.git", "n": "7", "branch": "main"},
		Outputs: map[string]any{"commit": map[string]any{"commit": "abc123"}},
		Freight: []model.FreightReference{{
			Name: "f1", Origin: origin,
			Commits: []model.GitCommit{{RepoURL: "http://git.example/app.git", ID: "c0ffee"}},
			Images:  []model.Image{{RepoURL: "ghcr.io/acme/app", Tag: "1.2.3", Digest: "sha256:aa"}},
			Charts:  []model.Chart{{RepoURL: "oci://ghcr.io/acme/charts", Name: "app", Version: "0.4.0"}},
		}},
		Statuses: map[string]string{"clone": "Succeeded"},
		Lookup:   fakeLookup{},
	}
}

func TestEvaluateString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want any
	}{
		{"no expression", "plain", "plain"},
		{"whole string keeps type", "${{ 1 + 2 }}", 3.0},
		{"string that reads as a number is coerced", "${{ vars.n }}", 7.0},
		{"quote forces a string", "${{ quote(vars.n) }}", "7"},
		{"quote of a number", "${{ quote(42) }}", "42"},
		{"embedded makes a string", "n=${{ vars.n }}!", "n=7!"},
		{"two embedded", "${{ vars.branch }}-${{ ctx.stage }}", "main-dev"},
		{"percent delimiters", "${% ctx.project %}", "demo"},
		{"boolean", "${{ ctx.stage == 'dev' }}", true},
		{"ctx", "${{ ctx.promotion }}/${{ ctx.targetFreight.alias }}/${{ ctx.targetFreight.origin.name }}", "dev.01abc.f1/wild-cat/app"},
		{"outputs", "${{ outputs.commit.commit }}", "abc123"},
		{"commitFrom", "${{ commitFrom(vars.repo).id }}", "c0ffee"},
		{"commitFrom with origin", "${{ commitFrom(vars.repo, warehouse('app')).id }}", "c0ffee"},
		{"imageFrom", "${{ imageFrom('ghcr.io/acme/app').tag }}", "1.2.3"},
		{"imageFrom Go field names as in Kargo", "${{ imageFrom('ghcr.io/acme/app').Tag }}", "1.2.3"},
		{"commitFrom ID", "${{ commitFrom(vars.repo).ID }}", "c0ffee"},
		{"chartFrom", "${{ chartFrom('oci://ghcr.io/acme/charts', 'app').version }}", "0.4.0"},
		{"artifactFrom", "${{ artifactFrom('ghcr.io/acme/app').digest }}", "sha256:aa"},
		{"freightMetadata key", "${{ freightMetadata(ctx.targetFreight.name, 'owner') }}", "team-a"},
		{"stageMetadata", "${{ stageMetadata('dev').lastDeploy }}", "dev-ok"},
		{"configMap", "${{ configMap('settings').replicas }}", 3.0},
		{"configMap missing", "${{ configMap('nope').x ?? 'none' }}", "none"},
		{"sharedConfigMap", "${{ sharedConfigMap('settings').project }}", SharedResourcesProject},
		{"secret", "${{ secret('token').value }}", "s3cr3t"},
		{"semverParse", "${{ semverParse('1.2.3').Minor() }}", 2.0},
		{"semverDiff", "${{ semverDiff('1.2.3', '1.3.0') }}", "Minor"},
		{"semverDiff none", "${{ semverDiff('1.2.3', '1.2.3') }}", "None"},
		{"asJSON", "${{ asJSON({'a': 1}) }}", `{"a":1}`},
		{"asYAML", "${{ asYAML({'a': 1}) }}", "a: 1\n"},
		{"status", "${{ status('clone') }}", "Succeeded"},
		{"success", "${{ success() }}", true},
		{"failure", "${{ failure() }}", false},
		{"object", "${{ {'a': [1, 'b']} }}", map[string]any{"a": []any{1.0, "b"}}},
		{"json string coerced", `${{ '{"x": true}' }}`, map[string]any{"x": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := EvaluateString(tt.in, testEnv())
			if err != nil {
				t.Fatalf("EvaluateString(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("EvaluateString(%q) = %#v (%T), want %#v (%T)", tt.in, got, got, tt.want, tt.want)
			}
		})
	}
}

func TestEvaluateStringErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"${{ 1 + ", "${{ nosuchfn() }}"} {
		if _, err := EvaluateString(in, testEnv()); err == nil {
			t.Errorf("EvaluateString(%q): no error", in)
		}
	}
}

func TestEvaluateConfig(t *testing.T) {
	t.Parallel()
	cfg := map[string]any{
		"path":             "./out/${{ ctx.stage }}",
		"replicas":         "${{ configMap('settings').replicas }}",
		"${{ not.a.key }}": "kept",
		"images":           []any{map[string]any{"image": "ghcr.io/acme/app", "tag": "${{ imageFrom('ghcr.io/acme/app').tag }}"}},
		"n":                5.0,
	}
	got, err := EvaluateConfig(cfg, testEnv())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"path":             "./out/dev",
		"replicas":         3.0,
		"${{ not.a.key }}": "kept",
		"images":           []any{map[string]any{"image": "ghcr.io/acme/app", "tag": "1.2.3"}},
		"n":                5.0,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("EvaluateConfig = %#v, want %#v", got, want)
	}
	if cfg["path"] != "./out/${{ ctx.stage }}" {
		t.Fatal("EvaluateConfig changed its input")
	}
}

func TestEvaluateBool(t *testing.T) {
	t.Parallel()
	env := testEnv()
	env.Failed = true
	tests := map[string]bool{
		"${{ failure() }}":               true,
		"${{ success() }}":               false,
		"${{ always() }}":                true,
		"failure()":                      true,
		"status('clone') == 'Succeeded'": true,
		"${{ ctx.stage == 'prod' }}":     false,
	}
	for in, want := range tests {
		got, err := EvaluateBool(in, env)
		if err != nil || got != want {
			t.Errorf("EvaluateBool(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := EvaluateBool("${{ 'x' }}", env); err == nil {
		t.Error("a non-boolean condition gave no error")
	}
}

func TestSecretsReported(t *testing.T) {
	t.Parallel()
	env := testEnv()
	var seen []string
	env.OnSecret = func(v string) { seen = append(seen, v) }
	if _, err := EvaluateString("${{ secret('token').value }}", env); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != "s3cr3t" {
		t.Fatalf("OnSecret saw %v", seen)
	}
}

// Kargo's expression documentation, its examples rewritten with our own
// values: functions that find nothing return nil for ?. and ??, versions
// have methods, warehouse() is an origin, ctx carries the step's alias,
// the rollback flag and the UI's URL.
func TestKargoExpressionExamples(t *testing.T) {
	t.Parallel()
	env := testEnv()
	env.Ctx.Meta = map[string]any{"promotion": map[string]any{"actor": "alice", "rollback": false}, "step": map[string]any{"alias": "bump"}}
	env.Ctx.UIBaseURL = "https://caravan.example.com"
	env.Freight = append(env.Freight, model.FreightReference{Name: "f2",
		Origin:  model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "base"},
		Commits: []model.GitCommit{{RepoURL: "http://git.example/app.git", ID: "ba5e"}}})
	tests := []struct {
		name string
		in   string
		want any
	}{
		{"a commit from a named warehouse", "${{ commitFrom(vars.repo, warehouse('base')).ID }}", "ba5e"},
		{"warehouse() is an origin", "${{ warehouse('base').Name }}/${{ warehouse('base').Kind }}", "base/Warehouse"},
		{"an absent image is nil", "${{ imageFrom('ghcr.io/acme/none') == nil }}", true},
		{"?. and ?? over an absent image", "${{ imageFrom('ghcr.io/acme/none')?.Tag ?? 'latest' }}", "latest"},
		{"?? over a present one", "${{ imageFrom('ghcr.io/acme/app')?.Tag ?? 'latest' }}", "1.2.3"},
		{"an absent commit", "${{ commitFrom('http://git.example/other.git')?.ID ?? 'none' }}", "none"},
		{"an absent chart", "${{ chartFrom('oci://ghcr.io/acme/charts', 'other')?.Version ?? '0.0.0' }}", "0.0.0"},
		{"a chart by name and origin", "${{ chartFrom('oci://ghcr.io/acme/charts', 'app', warehouse('app')).Version }}", "0.4.0"},
		{"semver: bump the minor", "${{ semverParse('1.2.3').IncMinor().String() }}", "1.3.0"},
		{"semver: bump the major, v prefix", "${{ semverParse('v2.7.1').IncMajor() }}", "3.0.0"},
		{"semver: parts", "${{ semverParse('1.2.3-rc.1+b7').Major() }}.${{ semverParse('1.2.3-rc.1+b7').Prerelease() }}.${{ semverParse('1.2.3-rc.1+b7').Metadata() }}", "1.rc.1.b7"},
		{"semverDiff", "${{ semverDiff('1.2.3', '1.3.0') }}", "Minor"},
		{"the step's alias", "${{ ctx.meta.step.alias }}", "bump"},
		{"the rollback flag", "${{ ctx.meta.promotion.rollback }}", false},
		{"the actor", "${{ ctx.meta.promotion.actor }}", "alice"},
		{"a link into the UI", "${{ ctx.uiBaseUrl }}/projects/${{ ctx.project }}", "https://caravan.example.com/projects/demo"},
		{"freightMetadata with ??", "${{ freightMetadata(ctx.targetFreight.name)?.ticket ?? 'none' }}", "none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := EvaluateString(tt.in, env)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("%s = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}
