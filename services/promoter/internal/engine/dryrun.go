package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/redact"
	"github.com/caravan-cd/caravan/services/promoter/internal/steps"
)

// errDryRunStop ends a dry run's step loop before a step with effects.
var errDryRunStop = errors.New("dry run stops here")

// maxDryRunPatchBytes bounds each repository's diff in a dry run's
// result, which travels as one NATS message.
const maxDryRunPatchBytes = 256 << 10

// DryRun runs p's steps (tasks inflated) in a scratch work dir, up to and
// not including the first step with effects outside it
// (steps.Definition.Effects: a push, a pull request, an http call, an
// Argo CD update, …), and returns their outputs and the unified diff of
// the commits each git work tree holds then: what its push would bring
// the remote. p is not changed and nothing is saved; objects the steps
// commit live in memory only. Messages, outputs and diffs pass the
// redactor of the secrets the run resolved.
func (e *Engine) DryRun(ctx context.Context, p *model.Promotion) (_ *model.PromotionDryRun, err error) {
	rd := redact.New()
	defer func() { err = rd.Error(err) }()
	cp := *p
	cp.Status = model.PromotionStatus{Phase: model.PromotionPhaseRunning}
	r := &run{e: e, p: &cp, save: func(context.Context, *model.Promotion) error { return nil }, secrets: rd, log: rd.Logger(e.log), dryRun: true}
	out := &model.PromotionDryRun{Stage: p.Spec.Stage, Freight: p.Spec.Freight, Steps: []model.StepExecutionMetadata{}, Diffs: []model.DryRunDiff{}}
	flat, err := e.inflate(ctx, p.Namespace, p.Spec.Steps)
	if err == nil {
		r.steps = flat
		err = r.loadFreight(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		out.Phase, out.Message = model.PromotionPhaseErrored, rd.String(err.Error())
		return out, nil
	}
	dir, err := os.MkdirTemp(e.workRoot, "dryrun-")
	if err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if r.ws, err = steps.NewWorkspace(dir); err != nil {
		return nil, err
	}
	defer func() { _ = r.ws.Close() }()
	res, err := r.loop(ctx)
	if err != nil {
		return nil, err
	}
	out.Phase, out.Message = res.Phase, res.Message
	out.Steps = cp.Status.StepExecutionMetadata
	out.Outputs = cp.Status.State
	out.StoppedAt = r.stop
	if out.Diffs, err = r.diffs(ctx); err != nil {
		return nil, err
	}
	return out, nil
}

// diffs lists what each git work tree of the run would push, by path.
func (r *run) diffs(ctx context.Context) ([]model.DryRunDiff, error) {
	paths := make([]string, 0, len(r.ws.Repos))
	for p := range r.ws.Repos {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	out := make([]model.DryRunDiff, 0, len(paths))
	for _, p := range paths {
		repo := r.ws.Repos[p]
		ch, err := repo.Changes(ctx, maxDryRunPatchBytes)
		if err != nil {
			return nil, fmt.Errorf("diff %s: %w", p, err)
		}
		clean, err := repo.Clean()
		if err != nil {
			return nil, fmt.Errorf("diff %s: %w", p, err)
		}
		d := model.DryRunDiff{
			RepoURL: r.secrets.String(repo.URL), Path: p, Branch: repo.Branch(),
			Patch: r.secrets.String(ch.Patch), Truncated: ch.Truncated, Uncommitted: !clean,
		}
		if !ch.Base.IsZero() {
			d.Base = ch.Base.String()
		}
		for _, f := range ch.Files {
			d.Files = append(d.Files, model.DryRunFile{Path: f.Path, Additions: f.Additions, Deletions: f.Deletions})
		}
		out = append(out, d)
	}
	return out, nil
}
