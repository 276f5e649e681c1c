package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// setCreateActor gives a new object Kargo's create-actor annotation from
// the caller (a value the client sent is not taken) and keeps an existing
// object's.
func setCreateActor(ctx context.Context, next, cur model.Object) {
	meta := next.GetObjectMeta()
	if cur == nil {
		p, _ := auth.FromContext(ctx)
		if meta.Annotations == nil {
			meta.Annotations = map[string]string{}
		}
		meta.Annotations[model.AnnotationCreateActor] = auth.Actor(p)
		return
	}
	if v, ok := cur.GetObjectMeta().Annotations[model.AnnotationCreateActor]; ok {
		if meta.Annotations == nil {
			meta.Annotations = map[string]string{}
		}
		meta.Annotations[model.AnnotationCreateActor] = v
	} else {
		delete(meta.Annotations, model.AnnotationCreateActor)
	}
}

func annotationField(key string) string {
	return fmt.Sprintf("metadata.annotations[%q]", key)
}

// requests publishes what a written object asks for through Kargo's
// annotations — a new value of kargo.akuity.io/refresh, reverify or abort —
// and runs a new Promotion. prev is the object before (nil when created).
// An annotation Caravan has no use for on that kind comes back as a
// warning.
func (a *Applier) requests(ctx context.Context, doc int, project string, prev, next model.Object) (model.Issues, error) {
	kind, name := next.GetTypeMeta().Kind, next.GetObjectMeta().Name
	var prevMeta *model.ObjectMeta
	if prev != nil {
		prevMeta = prev.GetObjectMeta()
	}
	changed := func(key string) (string, bool) { return model.AnnotationChanged(prevMeta, next.GetObjectMeta(), key) }
	var warns model.Issues
	warn := func(key, msg string) {
		warns = append(warns, model.Issue{Document: doc, Kind: kind, Name: name, Field: annotationField(key), Message: msg})
	}
	publish := func(id string, ref events.Ref, ev events.Event) error {
		var err error
		if id != "" {
			_, err = a.bus.PublishWithID(ctx, id, project, ref, ev)
		} else {
			_, err = a.bus.Publish(ctx, project, ref, ev)
		}
		if err != nil {
			return fmt.Errorf("publish %s for %s %q: %w", ev.EventType(), kind, name, err)
		}
		return nil
	}
	stageRef := events.Ref{Kind: model.KindStage, Name: name}

	if _, ok := changed(model.AnnotationRefresh); ok {
		switch kind {
		case model.KindWarehouse:
			if err := publish("", events.Ref{Kind: kind, Name: name},
				events.WarehouseRefreshRequested{Warehouse: name, Reason: model.AnnotationRefresh + " annotation"}); err != nil {
				return nil, err
			}
		case model.KindStage, model.KindProjectConfig:
			// ResourceApplied, published for every change, re-evaluates.
		default:
			warn(model.AnnotationRefresh, fmt.Sprintf("has no effect on a %s in Caravan: it refreshes Warehouses, Stages and ProjectConfigs", kind))
		}
	}
	if _, ok := changed(model.AnnotationReverify); ok {
		if kind != model.KindStage {
			warn(model.AnnotationReverify, fmt.Sprintf("has no effect on a %s: it re-verifies a Stage's freight", kind))
		} else {
			freight, err := a.currentFreight(ctx, project, name)
			if err != nil {
				return nil, err
			}
			if freight == "" {
				warn(model.AnnotationReverify, "the stage has no freight to verify")
			} else if err := publish("", stageRef, events.VerificationRequested{Stage: name, Freight: freight}); err != nil {
				return nil, err
			}
		}
	}
	if _, ok := changed(model.AnnotationAbort); ok {
		switch p := next.(type) {
		case *model.Stage:
			if err := publish("", stageRef, events.VerificationAbortRequested{Stage: name}); err != nil {
				return nil, err
			}
		case *model.Promotion:
			if !p.Status.Phase.IsTerminal() {
				if err := publish("PromotionAbortRequested."+project+"."+name, events.Ref{Kind: kind, Name: name},
					events.PromotionAbortRequested{Promotion: name, Stage: p.Spec.Stage}); err != nil {
					return nil, err
				}
			}
		default:
			warn(model.AnnotationAbort, fmt.Sprintf("has no effect on a %s: it aborts a Stage's verification or a Promotion", kind))
		}
	}
	if p, ok := next.(*model.Promotion); ok && prev == nil && !p.Status.Phase.IsTerminal() {
		if err := publish("PromotionRequested."+project+"."+name, events.Ref{Kind: kind, Name: name},
			events.PromotionRequested{Promotion: name, Stage: p.Spec.Stage, Freight: p.Spec.Freight}); err != nil {
			return nil, err
		}
	}
	return warns, nil
}

// currentFreight returns a freight the stage uses now ("" when none).
func (a *Applier) currentFreight(ctx context.Context, project, stage string) (string, error) {
	status, _, err := state.Get[model.StageStatus](ctx, a.store.KV(state.Stages), state.Key(project, stage))
	if errors.Is(err, state.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if len(status.FreightHistory) == 0 {
		return "", nil
	}
	for _, ref := range status.FreightHistory[0].Freight {
		return ref.Name, nil
	}
	return "", nil
}

// checkPromotions refuses a new Promotion of freight that does not exist
// or is not available to its stage, as Kargo's admission does.
func (a *Applier) checkPromotions(ctx context.Context, docs []model.Document, existing []model.Object) (model.Issues, error) {
	var issues model.Issues
	for _, d := range docs {
		p, ok := d.Object.(*model.Promotion)
		if !ok || p.Spec.Stage == "" || p.Spec.Freight == "" {
			continue
		}
		project := p.Namespace
		if _, _, err := a.store.GetObject(ctx, project, model.KindPromotion, p.Name); err == nil {
			continue // an update: the promotion was admitted when created
		} else if !errors.Is(err, state.ErrNotFound) {
			return nil, err
		}
		stage := findStage(docs, existing, project, p.Spec.Stage)
		if stage == nil || stage.IsControlFlow() {
			continue // Validate reports it
		}
		issue := func(msg string) {
			issues = append(issues, model.Issue{Document: d.Index, Kind: model.KindPromotion, Name: p.Name, Field: "spec.freight", Message: msg})
		}
		f, _, err := state.GetAs[*model.Freight](ctx, a.store, project, model.KindFreight, p.Spec.Freight)
		switch {
		case errors.Is(err, state.ErrNotFound):
			issue(fmt.Sprintf("freight %q does not exist in project %q", p.Spec.Freight, project))
			continue
		case err != nil:
			return nil, err
		}
		if o := p.Spec.Origin; o != nil && *o != f.Origin {
			issues = append(issues, model.Issue{Document: d.Index, Kind: model.KindPromotion, Name: p.Name, Field: "spec.origin",
				Message: fmt.Sprintf("freight %s comes from %s, not %s", f.Name, f.Origin, *o)})
			continue
		}
		stage.Default()
		if ok, why := model.FreightAvailable(f, stage, a.now()); !ok {
			issue(fmt.Sprintf("freight %s is not available to stage %q: %s", f.Name, stage.Name, why))
		}
	}
	return issues, nil
}

func findStage(docs []model.Document, existing []model.Object, project, name string) *model.Stage {
	for _, d := range docs {
		if s, ok := d.Object.(*model.Stage); ok && s.Namespace == project && s.Name == name {
			return s
		}
	}
	for _, o := range existing {
		if s, ok := o.(*model.Stage); ok && s.Namespace == project && s.Name == name {
			return s
		}
	}
	return nil
}
