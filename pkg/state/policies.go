package state

import (
	"context"
	"errors"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Policies is what configuration says of a project's promotions: its
// ProjectConfig, the ClusterConfig and the Project's labels (which
// ClusterConfig windows select). Either config may be nil.
type Policies struct {
	Config        *model.ProjectConfig
	Cluster       *model.ClusterConfig
	ProjectLabels map[string]string
}

// LoadPolicies reads the configuration that gates the promotions of
// project.
func LoadPolicies(ctx context.Context, s *Store, project string) (Policies, error) {
	var p Policies
	pc, _, err := GetAs[*model.ProjectConfig](ctx, s, project, model.KindProjectConfig, project)
	switch {
	case err == nil:
		p.Config = pc
	case !errors.Is(err, ErrNotFound):
		return p, err
	}
	cc, _, err := GetAs[*model.ClusterConfig](ctx, s, "", model.KindClusterConfig, model.ClusterConfigName)
	switch {
	case err == nil:
		p.Cluster = cc
	case !errors.Is(err, ErrNotFound):
		return p, err
	}
	if p.Cluster != nil && len(p.Cluster.Spec.PromotionWindows) > 0 {
		pr, _, err := GetAs[*model.Project](ctx, s, "", model.KindProject, project)
		switch {
		case err == nil:
			p.ProjectLabels = pr.Labels
		case !errors.Is(err, ErrNotFound):
			return p, err
		}
	}
	return p, nil
}

// Windows returns the promotion windows that gate stage.
func (p Policies) Windows(stage *model.Stage) []model.PromotionWindow {
	return model.WindowsFor(p.Config, p.Cluster, p.ProjectLabels, stage)
}

// PromotionPolicies returns the project's promotion policies.
func (p Policies) PromotionPolicies() []model.PromotionPolicy {
	if p.Config == nil {
		return nil
	}
	return p.Config.Spec.PromotionPolicies
}

// Approval returns the approval policy that gates stage, or nil.
func (p Policies) Approval(stage *model.Stage) *model.ApprovalPolicy {
	if p.Config == nil {
		return nil
	}
	return model.ApprovalPolicyFor(p.Config.Spec.ApprovalPolicies, stage)
}
