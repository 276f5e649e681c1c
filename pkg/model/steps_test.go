package model

import (
	"strings"
	"testing"
)

func TestCheckStep(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		uses   string
		config map[string]any
		want   []string // fields with issues
	}{
		{"fits", "git-clone", map[string]any{"repoURL": "https://x", "checkout": []any{map[string]any{"branch": "main", "path": "./src"}}}, nil},
		{"unknown step", "git-teleport", nil, []string{"uses"}},
		{"missing required", "git-commit", map[string]any{"path": "./src"}, []string{"config.message"}},
		{"wrong type", "git-push", map[string]any{"path": "./src", "generateTargetBranch": "yes"}, []string{"config.generateTargetBranch"}},
		{"expression skips type checks", "git-push", map[string]any{"path": "./src", "generateTargetBranch": "${{ vars.gen }}"}, nil},
		{"unknown field", "git-commit", map[string]any{"path": "./src", "message": "m", "mesage": "typo"}, []string{"config.mesage"}},
		{"free-form", "compose-output", map[string]any{"anything": 1.0}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, is := range CheckStep(tt.uses, tt.config) {
				got = append(got, is.Field)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("CheckStep issues on %v, want %v", got, tt.want)
			}
		})
	}
}

func TestValidateRefusesUnknownStep(t *testing.T) {
	t.Parallel()
	stage := &Stage{
		TypeMeta:   TypeMeta{APIVersion: KargoAPIVersion, Kind: KindStage},
		ObjectMeta: ObjectMeta{Name: "dev", Namespace: "demo"},
		Spec: StageSpec{
			RequestedFreight: []FreightRequest{{Origin: FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "w"}, Sources: FreightSources{Direct: true}}},
			PromotionTemplate: &PromotionTemplate{Spec: PromotionTemplateSpec{Steps: []PromotionStep{
				{Uses: "git-clone", Config: map[string]any{"repoURL": "https://x", "checkout": []any{}}},
				{Uses: "git-frobnicate"},
				{Uses: "git-commit", Config: map[string]any{"path": 3.0, "message": "m"}},
			}}},
		},
	}
	issues := Validate([]Document{{Object: stage}}, nil)
	var fields []string
	for _, is := range issues {
		fields = append(fields, is.Field)
	}
	all := strings.Join(fields, " ")
	for _, want := range []string{"spec.promotionTemplate.spec.steps[1].uses", "spec.promotionTemplate.spec.steps[2].config.path"} {
		if !strings.Contains(all, want) {
			t.Errorf("no issue on %s; issues: %v", want, issues)
		}
	}
	if strings.Contains(all, "steps[0]") {
		t.Errorf("a fitting step was refused: %v", issues)
	}
}
