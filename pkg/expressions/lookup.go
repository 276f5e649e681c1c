package expressions

import (
	"context"
	"errors"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// StoreLookup is the Lookup of a state store: what a promotion's and a
// verification's expressions read. A nil Store finds nothing.
type StoreLookup struct{ Store *state.Store }

var _ Lookup = StoreLookup{}

// Freight implements Lookup.
func (l StoreLookup) Freight(ctx context.Context, project, name string) (*model.Freight, error) {
	if l.Store == nil {
		return nil, nil
	}
	f, _, err := state.GetAs[*model.Freight](ctx, l.Store, project, model.KindFreight, name)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	return f, err
}

// StageMetadata implements Lookup.
func (l StoreLookup) StageMetadata(ctx context.Context, project, stage string) (map[string]any, error) {
	if l.Store == nil {
		return nil, nil
	}
	st, _, err := state.Get[model.StageStatus](ctx, l.Store.KV(state.Stages), state.Key(project, stage))
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	return st.Metadata, err
}

// ConfigMap implements Lookup.
func (l StoreLookup) ConfigMap(ctx context.Context, project, name string) (*model.ConfigMap, error) {
	if l.Store == nil {
		return nil, nil
	}
	cm, _, err := state.GetAs[*model.ConfigMap](ctx, l.Store, project, model.KindConfigMap, name)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	return cm, err
}

// Secret implements Lookup.
func (l StoreLookup) Secret(ctx context.Context, project, name string) (*model.Secret, error) {
	if l.Store == nil {
		return nil, nil
	}
	s, _, err := state.GetAs[*model.Secret](ctx, l.Store, project, model.KindSecret, name)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	return s, err
}
