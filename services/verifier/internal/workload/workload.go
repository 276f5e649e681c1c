// Package workload judges whether a Kubernetes workload's rollout is
// complete, as `kubectl rollout status` does: a Deployment or StatefulSet
// is Healthy once the controller observed its latest generation and every
// replica is updated and available; Progressing while that is under way;
// Unhealthy when a Deployment exceeded its progress deadline. It also
// serves as a metric provider (an Argo metric plugin named
// caravan-cd/workload), so a verification can wait for a rollout.
package workload

import (
	"context"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// PluginName is the metric plugin name selecting this provider:
//
//	provider:
//	  plugin:
//	    caravan-cd/workload: {kind: Deployment, namespace: web, name: api}
const PluginName = "caravan-cd/workload"

// Ref names a workload.
type Ref struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// Status is a workload's rollout state.
type Status struct {
	Health  model.HealthState `json:"status"`
	Message string            `json:"message,omitempty"`
}

// Check reads the workload and judges its rollout.
func Check(ctx context.Context, client kubernetes.Interface, ref Ref) (Status, error) {
	switch strings.ToLower(ref.Kind) {
	case "deployment":
		d, err := client.AppsV1().Deployments(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return Status{}, fmt.Errorf("get deployment %s/%s: %w", ref.Namespace, ref.Name, err)
		}
		return Deployment(d), nil
	case "statefulset":
		s, err := client.AppsV1().StatefulSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return Status{}, fmt.Errorf("get statefulset %s/%s: %w", ref.Namespace, ref.Name, err)
		}
		return StatefulSet(s), nil
	}
	return Status{}, fmt.Errorf("kind %q is not Deployment or StatefulSet", ref.Kind)
}

func progressing(format string, args ...any) Status {
	return Status{Health: model.HealthStateProgressing, Message: fmt.Sprintf(format, args...)}
}

// Deployment judges a Deployment's rollout.
func Deployment(d *appsv1.Deployment) Status {
	if d.Generation > d.Status.ObservedGeneration {
		return progressing("waiting for the deployment spec update to be observed")
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return Status{Health: model.HealthStateUnhealthy, Message: fmt.Sprintf("deployment %q exceeded its progress deadline", d.Name)}
		}
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	switch {
	case s.UpdatedReplicas < want:
		return progressing("%d of %d new replicas updated", s.UpdatedReplicas, want)
	case s.Replicas > s.UpdatedReplicas:
		return progressing("%d old replicas pending termination", s.Replicas-s.UpdatedReplicas)
	case s.AvailableReplicas < s.UpdatedReplicas:
		return progressing("%d of %d updated replicas available", s.AvailableReplicas, s.UpdatedReplicas)
	}
	return Status{Health: model.HealthStateHealthy, Message: fmt.Sprintf("deployment %q successfully rolled out", d.Name)}
}

// StatefulSet judges a StatefulSet's rollout.
func StatefulSet(s *appsv1.StatefulSet) Status {
	if s.Status.ObservedGeneration == 0 || s.Generation > s.Status.ObservedGeneration {
		return progressing("waiting for the statefulset spec update to be observed")
	}
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	st := s.Status
	if st.ReadyReplicas < want {
		return progressing("%d of %d pods ready", st.ReadyReplicas, want)
	}
	if st.AvailableReplicas < want {
		return progressing("%d of %d pods available", st.AvailableReplicas, want)
	}
	if s.Spec.UpdateStrategy.Type == appsv1.RollingUpdateStatefulSetStrategyType && s.Spec.UpdateStrategy.RollingUpdate != nil {
		if p := s.Spec.UpdateStrategy.RollingUpdate.Partition; p != nil && *p > 0 {
			if st.UpdatedReplicas < want-*p {
				return progressing("%d of %d pods updated (partition %d)", st.UpdatedReplicas, want-*p, *p)
			}
			return Status{Health: model.HealthStateHealthy, Message: fmt.Sprintf("partitioned roll out complete: %d new pods", st.UpdatedReplicas)}
		}
	}
	if st.UpdateRevision != st.CurrentRevision {
		return progressing("%d of %d pods updated to revision %s", st.UpdatedReplicas, want, st.UpdateRevision)
	}
	return Status{Health: model.HealthStateHealthy, Message: fmt.Sprintf("statefulset %q rolled out", s.Name)}
}

// Client returns the cluster's client (created on first use).
type Client func() (kubernetes.Interface, error)

// Provider measures workload rollouts: the result is {status, message,
// healthy}. A metric without conditions is Successful when Healthy and
// Failed otherwise.
type Provider struct{ Client Client }

var _ analysis.Provider = Provider{}

// Measure checks the workload the metric's plugin config names.
func (p Provider) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	cfg, ok := req.Metric.Metric.Provider.Plugin[PluginName].(map[string]any)
	if !ok {
		return analysis.Value{}, fmt.Errorf("plugin %q is not configured", PluginName)
	}
	ref := Ref{Namespace: req.Run.Namespace}
	for k, dst := range map[string]*string{"kind": &ref.Kind, "namespace": &ref.Namespace, "name": &ref.Name} {
		if v, ok := cfg[k].(string); ok && v != "" {
			*dst = v
		}
	}
	if ref.Kind == "" || ref.Name == "" {
		return analysis.Value{}, errors.New("workload kind and name are required")
	}
	client, err := p.Client()
	if err != nil {
		return analysis.Value{}, fmt.Errorf("kubernetes: %w", err)
	}
	st, err := Check(ctx, client, ref)
	if err != nil {
		return analysis.Value{}, err
	}
	v := analysis.Value{
		Result: map[string]any{"status": string(st.Health), "message": st.Message, "healthy": st.Health == model.HealthStateHealthy},
		Text:   string(st.Health) + ": " + st.Message,
	}
	if req.Metric.SuccessCondition == "" && req.Metric.FailureCondition == "" {
		v.Phase = analysis.PhaseFailed
		if st.Health == model.HealthStateHealthy {
			v.Phase = analysis.PhaseSuccessful
		}
	}
	return v, nil
}
