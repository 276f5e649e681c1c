package verification

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/expressions"
	"github.com/caravan-cd/caravan/pkg/model"
)

func TestEvalArgs(t *testing.T) {
	t.Parallel()
	stage := &model.Stage{
		ObjectMeta: model.ObjectMeta{Name: "qa"},
		Spec: model.StageSpec{
			Vars: []model.PromotionVariable{{Name: "host", Value: "${{ ctx.stage }}.example.com"}, {Name: "port", Value: "8080"}},
		},
	}
	freight := &model.Freight{ObjectMeta: model.ObjectMeta{Name: "abc123"}, Alias: "calm-otter", Origin: model.FreightOrigin{Kind: "Warehouse", Name: "app"},
		Images: []model.Image{{RepoURL: "ghcr.io/acme/app", Tag: "1.4.0"}}}
	env, err := argEnv(context.Background(), "demo", stage, "qa.01h.abc123", []*model.Freight{freight}, expressions.StoreLookup{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		value, want, wantErr string
	}{
		{value: "plain", want: "plain"},
		{value: "${{ ctx.stage }}", want: "qa"},
		{value: "http://${{ vars.host }}:${{ vars.port }}/${{ ctx.project }}", want: "http://qa.example.com:8080/demo"},
		{value: "${{ ctx.targetFreight.alias }}@${{ ctx.targetFreight.origin.name }}", want: "calm-otter@app"},
		{value: "${{ ctx.promotion }}", want: "qa.01h.abc123"},
		{value: "${{ 1 + 2 }}", want: "3"},
		// The functions of promotion steps, as Kargo gives verification.
		{value: "${{ imageFrom('ghcr.io/acme/app').Tag }}", want: "1.4.0"},
		{value: "${{ imageFrom('ghcr.io/acme/other')?.Tag ?? 'none' }}", want: "none"},
		{value: "${{ semverParse(imageFrom('ghcr.io/acme/app').Tag).IncMinor() }}", want: "1.5.0"},
		{value: "${{ configMap('absent').url ?? 'http://default' }}", want: "http://default"},
		{value: "${{ nope( }}", wantErr: "expression"},
	}
	for _, tt := range tests {
		got, err := evalArgs([]model.AnalysisRunArgument{{Name: "a", Value: tt.value}}, env)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err %v, want %q", tt.value, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got["a"] != tt.want {
			t.Errorf("%q = %q, %v; want %q", tt.value, got["a"], err, tt.want)
		}
	}
}

func TestCollection(t *testing.T) {
	t.Parallel()
	st := &model.StageStatus{}
	st.FreightHistory = st.PushFreight(model.FreightReference{Name: "img1", Origin: model.FreightOrigin{Kind: "Warehouse", Name: "images"}})
	st.FreightHistory = st.PushFreight(model.FreightReference{Name: "git1", Origin: model.FreightOrigin{Kind: "Warehouse", Name: "config"}})
	if got := collection(st, "img1"); !slices.Equal(got, []string{"img1", "git1"}) {
		t.Errorf("collection with img1 = %v", got)
	}
	if got := collection(st, ""); !slices.Equal(got, []string{"git1", "img1"}) {
		t.Errorf("current collection = %v", got)
	}
	if got := collection(st, "other"); !slices.Equal(got, []string{"other"}) {
		t.Errorf("freight not in the stage = %v", got)
	}
	if got := collection(&model.StageStatus{}, "x"); !slices.Equal(got, []string{"x"}) {
		t.Errorf("no history = %v", got)
	}
}
