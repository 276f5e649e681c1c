package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/expressions"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
)

// taskSeparator joins a task step's alias and the alias of a step inside
// the task, as Kargo names inflated steps.
const taskSeparator = "::"

// inflate expands task steps into the steps of their (Cluster)
// PromotionTask and gives every step its alias.
func (e *Engine) inflate(ctx context.Context, project string, in []model.PromotionStep) ([]flatStep, error) {
	var out []flatStep
	for i, s := range in {
		// Default aliases count from 1, as Kargo's: step-1, task-2, ...
		alias := s.As
		if alias == "" && s.Task != nil {
			alias = fmt.Sprintf("task-%d", i+1)
		}
		if alias == "" {
			alias = fmt.Sprintf("step-%d", i+1)
		}
		if s.Task == nil {
			out = append(out, flatStep{PromotionStep: s, alias: alias})
			continue
		}
		spec, err := e.task(ctx, project, s.Task)
		if err != nil {
			return nil, fmt.Errorf("step %q: %w", alias, err)
		}
		vars, err := taskVars(spec.Vars, s.Vars)
		if err != nil {
			return nil, fmt.Errorf("step %q: task %s: %w", alias, s.Task.Name, err)
		}
		for j, ts := range spec.Steps {
			if ts.Task != nil {
				return nil, fmt.Errorf("step %q: task %s: step %d uses a task: tasks do not nest", alias, s.Task.Name, j)
			}
			inner := ts.As
			if inner == "" {
				inner = fmt.Sprintf("step-%d", j+1)
			}
			// The task step's `if` gates every step of the task.
			if s.If != "" {
				if ts.If == "" {
					ts.If = s.If
				} else {
					ts.If = "(" + unwrap(s.If) + ") && (" + unwrap(ts.If) + ")"
				}
			}
			ts.ContinueOnError = ts.ContinueOnError || s.ContinueOnError
			out = append(out, flatStep{PromotionStep: ts, alias: alias + taskSeparator + inner, task: alias, taskVars: vars})
		}
	}
	return out, nil
}

// unwrap strips ${{ }} from a condition.
func unwrap(cond string) string {
	c := strings.TrimSpace(cond)
	for _, d := range [][2]string{{"${{", "}}"}, {"${%", "%}"}} {
		if strings.HasPrefix(c, d[0]) && strings.HasSuffix(c, d[1]) {
			return strings.TrimSpace(c[len(d[0]) : len(c)-len(d[1])])
		}
	}
	return c
}

// taskVars are a task's variables: its declared defaults overridden by the
// values the task step passes. A variable declared without a value must be
// passed.
func taskVars(declared, passed []model.PromotionVariable) ([]model.PromotionVariable, error) {
	given := map[string]string{}
	for _, v := range passed {
		given[v.Name] = v.Value
	}
	var out []model.PromotionVariable
	seen := map[string]bool{}
	for _, d := range declared {
		v, ok := given[d.Name]
		if !ok {
			if d.Value == "" {
				return nil, fmt.Errorf("variable %q is required", d.Name)
			}
			v = d.Value
		}
		out = append(out, model.PromotionVariable{Name: d.Name, Value: v})
		seen[d.Name] = true
	}
	for _, v := range passed {
		if !seen[v.Name] {
			out = append(out, v)
		}
	}
	return out, nil
}

func (e *Engine) task(ctx context.Context, project string, ref *model.PromotionTaskRef) (*model.PromotionTaskSpec, error) {
	if e.store == nil {
		return nil, errors.New("no store to read tasks from")
	}
	switch ref.Kind {
	case model.KindClusterPromotionTask:
		t, _, err := state.GetAs[*model.ClusterPromotionTask](ctx, e.store, "", model.KindClusterPromotionTask, ref.Name)
		if err != nil {
			return nil, fmt.Errorf("ClusterPromotionTask %s: %w", ref.Name, err)
		}
		return &t.Spec, nil
	default:
		t, _, err := state.GetAs[*model.PromotionTask](ctx, e.store, project, model.KindPromotionTask, ref.Name)
		if err != nil {
			return nil, fmt.Errorf("PromotionTask %s: %w", ref.Name, err)
		}
		return &t.Spec, nil
	}
}

// loadFreight reads the target freight and builds the collection the
// artifact functions search: the target freight, then the stage's current
// freight of the other origins.
func (r *run) loadFreight(ctx context.Context) error {
	p := r.p
	if p.Status.FreightCollection != nil {
		if f, ok := findRef(p.Status.FreightCollection, p.Spec.Freight); ok {
			r.freight = append(r.freight, f)
		}
	}
	if r.e.store != nil && p.Spec.Freight != "" {
		f, _, err := state.GetAs[*model.Freight](ctx, r.e.store, p.Namespace, model.KindFreight, p.Spec.Freight)
		switch {
		case err == nil:
			r.target = f
			if len(r.freight) == 0 {
				r.freight = append(r.freight, model.FreightReference{Name: f.Name, Origin: f.Origin, Commits: f.Commits, Images: f.Images, Charts: f.Charts})
			}
		case errors.Is(err, state.ErrNotFound):
			if len(r.freight) == 0 {
				return fmt.Errorf("freight %s: %w", p.Spec.Freight, err)
			}
		default:
			return fmt.Errorf("freight %s: %w", p.Spec.Freight, err)
		}
	}
	if r.e.store != nil && p.Spec.Stage != "" {
		stage, _, err := state.GetAs[*model.Stage](ctx, r.e.store, p.Namespace, model.KindStage, p.Spec.Stage)
		switch {
		case err == nil:
			r.stageVars = stage.Spec.Vars
		case !errors.Is(err, state.ErrNotFound):
			return fmt.Errorf("stage %s: %w", p.Spec.Stage, err)
		}
	}
	others := p.Status.FreightCollection
	if others == nil && r.e.store != nil && p.Spec.Stage != "" {
		st, _, err := state.Get[model.StageStatus](ctx, r.e.store.KV(state.Stages), state.Key(p.Namespace, p.Spec.Stage))
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("stage %s status: %w", p.Spec.Stage, err)
		}
		if len(st.FreightHistory) > 0 {
			others = &st.FreightHistory[0]
		}
	}
	if others != nil && len(r.freight) > 0 {
		for _, f := range others.Freight {
			if f.Origin != r.freight[0].Origin {
				r.freight = append(r.freight, f)
			}
		}
	}
	return nil
}

func findRef(c *model.FreightCollection, name string) (model.FreightReference, bool) {
	for _, f := range c.Freight {
		if f.Name == name {
			return f, true
		}
	}
	return model.FreightReference{}, false
}

// env builds what step i's expressions see.
func (r *run) env(ctx context.Context, i int) (*expressions.Env, error) {
	fs := r.steps[i]
	st := &r.p.Status
	env := &expressions.Env{
		Ctx: expressions.Context{
			Project:   r.p.Namespace,
			Stage:     r.p.Spec.Stage,
			Promotion: r.p.Name,
			Meta: map[string]any{
				"promotion": map[string]any{
					"actor":    r.p.Annotations[model.AnnotationPromotionCreatedBy],
					"rollback": r.p.Annotations[model.AnnotationRollback] != "",
				},
				"step": map[string]any{"alias": fs.alias},
			},
			UIBaseURL: r.e.uiBaseURL,
		},
		Outputs:  outputs(st.State),
		Failed:   r.failed(i),
		Statuses: map[string]string{},
		Lookup:   expressions.StoreLookup{Store: r.e.store},
		Context:  ctx,
		OnSecret: func(v string) { r.secrets.Add(v) },
	}
	if len(r.freight) > 0 {
		env.Ctx.TargetFreight = r.freight[0]
		env.Freight = r.freight
	}
	if r.target != nil {
		env.Ctx.TargetAlias = r.target.Alias
	}
	for j := 0; j < i; j++ {
		env.Statuses[r.steps[j].alias] = string(st.StepExecutionMetadata[j].Status)
		if r.steps[j].task != "" && r.steps[j].task == fs.task {
			inner := strings.TrimPrefix(r.steps[j].alias, fs.task+taskSeparator)
			env.Statuses[inner] = string(st.StepExecutionMetadata[j].Status)
		}
	}
	if fs.task != "" {
		env.TaskOutputs = map[string]any{}
		prefix := fs.task + taskSeparator
		for k, v := range st.State {
			if strings.HasPrefix(k, prefix) {
				env.TaskOutputs[strings.TrimPrefix(k, prefix)] = v
			}
		}
	}
	env.Vars = map[string]any{}
	for _, group := range [][]model.PromotionVariable{r.stageVars, r.p.Spec.Vars, fs.taskVars, fs.Vars} {
		for _, v := range group {
			val, err := expressions.EvaluateString(v.Value, env)
			if err != nil {
				return nil, fmt.Errorf("vars.%s: %w", v.Name, err)
			}
			env.Vars[v.Name] = val
		}
	}
	return env, nil
}

// outputs is the `outputs` variable: the saved state, plus each task's
// step outputs under the task's alias.
func outputs(state map[string]any) map[string]any {
	out := make(map[string]any, len(state))
	for k, v := range state {
		out[k] = v
	}
	for k, v := range state {
		task, inner, ok := strings.Cut(k, taskSeparator)
		if !ok {
			continue
		}
		m, _ := out[task].(map[string]any)
		if m == nil {
			m = map[string]any{}
		} else if _, isTaskMap := state[task]; isTaskMap {
			continue // a real step named like the task wins
		}
		m[inner] = v
		out[task] = m
	}
	return out
}

// credentials finds the git credentials for repoURL: a Secret labelled
// kargo.akuity.io/cred-type=git of the project, then of the shared-resources
// project (pkg/creds, as discovery finds them).
func (r *run) credentials(ctx context.Context, project, repoURL string) (*gitmirror.Auth, error) {
	return r.repoCredentials(ctx, project, model.CredTypeGit, repoURL)
}

// repoCredentials finds the credentials of credType (git, image or helm)
// for repoURL (token kinds exchanged, or cached); their password or key
// joins the run's redacted values.
func (r *run) repoCredentials(ctx context.Context, project, credType, repoURL string) (*creds.Credentials, error) {
	if r.e.store == nil {
		return nil, nil
	}
	c, err := r.e.creds.Find(ctx, project, credType, repoURL)
	if err != nil {
		return nil, fmt.Errorf("find %s credentials: %w", credType, err)
	}
	r.secrets.Add(c.Secrets()...)
	return c, nil
}

// SetStageMetadata implements steps.MetadataWriter.
func (e *Engine) SetStageMetadata(ctx context.Context, project, stage string, values map[string]any) error {
	_, _, err := state.Update(ctx, e.store.KV(state.Stages), state.Key(project, stage), func(cur model.StageStatus, _ bool) (model.StageStatus, error) {
		md := make(map[string]any, len(cur.Metadata)+len(values))
		for k, v := range cur.Metadata {
			md[k] = v
		}
		for k, v := range values {
			md[k] = v
		}
		cur.Metadata = md
		return cur, nil
	})
	return err
}

// SetFreightMetadata implements steps.MetadataWriter.
func (e *Engine) SetFreightMetadata(ctx context.Context, project, freight string, values map[string]any) error {
	key := state.ObjectKey(project, model.KindFreight, freight)
	_, _, err := state.Update(ctx, e.store.KV(state.Freight), key, func(cur *model.Freight, exists bool) (*model.Freight, error) {
		if !exists || cur == nil {
			return nil, fmt.Errorf("freight %s: %w", freight, state.ErrNotFound)
		}
		md := make(map[string]any, len(cur.Status.Metadata)+len(values))
		for k, v := range cur.Status.Metadata {
			md[k] = v
		}
		for k, v := range values {
			md[k] = v
		}
		cur.Status.Metadata = md
		return cur, nil
	})
	return err
}

// SetFreightAlias implements steps.AliasWriter. The alias must not be used
// by another freight of the project.
func (e *Engine) SetFreightAlias(ctx context.Context, project, freight, alias string) error {
	if other, err := e.aliasedOther(ctx, project, freight, alias); err != nil {
		return err
	} else if other != "" {
		return fmt.Errorf("alias %q is used by freight %s", alias, other)
	}
	_, _, err := e.store.SetFreightAlias(ctx, project, freight, alias)
	return err
}

// indexTimeout bounds how long the alias check waits for the freight
// index to catch up before it reads KV instead (as auto-promotion does).
const indexTimeout = 3 * time.Second

// aliasedOther returns the name of a freight of project other than
// freight whose alias is alias, "" when there is none. It asks the
// freight index when it is current (it has seen every write acknowledged
// before the call, as a listing would), and otherwise lists the project's
// freight from KV.
func (e *Engine) aliasedOther(ctx context.Context, project, freight, alias string) (string, error) {
	if e.freight != nil {
		sets, err := e.freight.Sync(ctx, indexTimeout)
		if err == nil {
			for _, name := range sets.Aliased(project, alias) {
				if name != freight {
					return name, nil
				}
			}
			return "", nil
		}
		if ctx.Err() == nil {
			e.log.Warn("freight index: reading KV instead", "err", err)
		}
	}
	objs, _, err := e.store.ListObjects(ctx, project, model.KindFreight, 0, "")
	if err != nil {
		return "", err
	}
	for _, o := range objs {
		if f, ok := o.(*model.Freight); ok && f.Alias == alias && f.Name != freight {
			return f.Name, nil
		}
	}
	return "", nil
}
