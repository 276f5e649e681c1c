package verification

import (
	"context"
	"fmt"

	"github.com/caravan-cd/caravan/pkg/expressions"
	"github.com/caravan-cd/caravan/pkg/model"
)

// evalArgs evaluates the Stage's verification args: each value may hold
// ${{ }} expressions, with the functions of promotion steps
// (commitFrom, imageFrom, configMap, freightMetadata, ...), over ctx
// (project, stage, promotion, targetFreight) and vars (the Stage's
// vars). A value is the text of what it evaluates to.
func evalArgs(args []model.AnalysisRunArgument, env *expressions.Env) (map[string]string, error) {
	out := make(map[string]string, len(args))
	for _, a := range args {
		v, err := expressions.EvaluateString(a.Value, env)
		if err != nil {
			return nil, fmt.Errorf("verification arg %q: %w", a.Name, err)
		}
		out[a.Name] = expressions.String(v)
	}
	return out, nil
}

// argEnv is what verification arg expressions see; freight is the
// verified collection, the target first, and lookup reads the objects the
// functions return.
func argEnv(ctx context.Context, project string, stage *model.Stage, promotion string, freight []*model.Freight, lookup expressions.Lookup) (*expressions.Env, error) {
	env := &expressions.Env{
		Ctx:     expressions.Context{Project: project, Stage: stage.Name, Promotion: promotion},
		Vars:    map[string]any{},
		Lookup:  lookup,
		Context: ctx,
	}
	for i, f := range freight {
		ref := model.FreightReference{Name: f.Name, Origin: f.Origin, Commits: f.Commits, Images: f.Images, Charts: f.Charts}
		if i == 0 {
			env.Ctx.TargetFreight, env.Ctx.TargetAlias = ref, f.Alias
		}
		env.Freight = append(env.Freight, ref)
	}
	var all []model.PromotionVariable
	if t := stage.Spec.PromotionTemplate; t != nil {
		all = append(all, t.Spec.Vars...)
	}
	all = append(all, stage.Spec.Vars...)
	for _, v := range all {
		s, err := expressions.EvaluateString(v.Value, env)
		if err != nil {
			return nil, fmt.Errorf("var %q: %w", v.Name, err)
		}
		env.Vars[v.Name] = expressions.String(s)
	}
	return env, nil
}
