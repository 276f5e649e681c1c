package workload

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

func i32(n int32) *int32 { return &n }

func deployment(gen, observed int64, replicas int32, st appsv1.DeploymentStatus) *appsv1.Deployment {
	st.ObservedGeneration = observed
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "web", Generation: gen},
		Spec:       appsv1.DeploymentSpec{Replicas: i32(replicas)},
		Status:     st,
	}
}

func TestDeployment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		d    *appsv1.Deployment
		want model.HealthState
	}{
		{"rolled out", deployment(2, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}), model.HealthStateHealthy},
		{"spec not observed yet", deployment(3, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}), model.HealthStateProgressing},
		{"updating", deployment(2, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 3}), model.HealthStateProgressing},
		{"old replicas terminating", deployment(2, 2, 3, appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 3, AvailableReplicas: 3}), model.HealthStateProgressing},
		{"updated not available", deployment(2, 2, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 2}), model.HealthStateProgressing},
		{"progress deadline exceeded", deployment(2, 2, 3, appsv1.DeploymentStatus{Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded"}}}), model.HealthStateUnhealthy},
	}
	for _, tt := range tests {
		if got := Deployment(tt.d); got.Health != tt.want {
			t.Errorf("%s: %s (%s), want %s", tt.name, got.Health, got.Message, tt.want)
		}
	}
}

func TestStatefulSet(t *testing.T) {
	t.Parallel()
	sts := func(gen, observed int64, partition *int32, st appsv1.StatefulSetStatus) *appsv1.StatefulSet {
		st.ObservedGeneration = observed
		s := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Generation: gen}, Spec: appsv1.StatefulSetSpec{Replicas: i32(3)}, Status: st}
		if partition != nil {
			s.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType, RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: partition}}
		}
		return s
	}
	done := appsv1.StatefulSetStatus{ReadyReplicas: 3, AvailableReplicas: 3, UpdatedReplicas: 3, CurrentRevision: "r2", UpdateRevision: "r2"}
	tests := []struct {
		name string
		s    *appsv1.StatefulSet
		want model.HealthState
	}{
		{"rolled out", sts(1, 1, nil, done), model.HealthStateHealthy},
		{"not observed", sts(2, 1, nil, done), model.HealthStateProgressing},
		{"never observed", sts(1, 0, nil, done), model.HealthStateProgressing},
		{"pods not ready", sts(1, 1, nil, appsv1.StatefulSetStatus{ReadyReplicas: 2, AvailableReplicas: 2, CurrentRevision: "r2", UpdateRevision: "r2"}), model.HealthStateProgressing},
		{"revision rolling", sts(1, 1, nil, appsv1.StatefulSetStatus{ReadyReplicas: 3, AvailableReplicas: 3, UpdatedReplicas: 1, CurrentRevision: "r1", UpdateRevision: "r2"}), model.HealthStateProgressing},
		{"partition done", sts(1, 1, i32(2), appsv1.StatefulSetStatus{ReadyReplicas: 3, AvailableReplicas: 3, UpdatedReplicas: 1, CurrentRevision: "r1", UpdateRevision: "r2"}), model.HealthStateHealthy},
		{"partition rolling", sts(1, 1, i32(1), appsv1.StatefulSetStatus{ReadyReplicas: 3, AvailableReplicas: 3, UpdatedReplicas: 1, CurrentRevision: "r1", UpdateRevision: "r2"}), model.HealthStateProgressing},
	}
	for _, tt := range tests {
		if got := StatefulSet(tt.s); got.Health != tt.want {
			t.Errorf("%s: %s (%s), want %s", tt.name, got.Health, got.Message, tt.want)
		}
	}
}

// TestProvider checks a rollout through client-go's fake clientset (a
// fake is acceptable for this unit test; no controller runs against a real
// API server either, so the e2e test sets status the same way).
func TestProvider(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(
		deployment(2, 2, 2, appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}),
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "web", Generation: 2}, Status: appsv1.StatefulSetStatus{ObservedGeneration: 1}},
	)
	p := Provider{Client: func() (kubernetes.Interface, error) { return client, nil }}
	tests := []struct {
		kind, name, success string
		want                analysis.Phase
	}{
		{"Deployment", "api", "", analysis.PhaseSuccessful},
		{"StatefulSet", "db", "", analysis.PhaseFailed},
		{"StatefulSet", "db", `result.status == "Progressing"`, analysis.PhaseSuccessful},
		{"Deployment", "missing", "", analysis.PhaseError},
	}
	for _, tt := range tests {
		m := model.Metric{Name: "rollout", SuccessCondition: tt.success, ConsecutiveErrorLimit: &model.IntOrString{},
			Provider: model.MetricProvider{Plugin: map[string]any{PluginName: map[string]any{"kind": tt.kind, "name": tt.name, "namespace": "web"}}}}
		spec, err := analysis.Build(context.Background(), []analysis.Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{m}}}}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := (&analysis.Engine{Providers: map[string]analysis.Provider{"plugin": p}}).Run(context.Background(), analysis.RunInfo{Namespace: "demo"}, spec)
		if err != nil {
			t.Fatal(err)
		}
		if res.Phase != tt.want {
			t.Errorf("%s/%s %q: %s (%s), want %s", tt.kind, tt.name, tt.success, res.Phase, res.Message, tt.want)
		}
	}
}
