//go:build e2e

package workload

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// TestWorkloadE2E rolls a Deployment out on a real API server, setting
// its status as the deployment controller (not running here) would.
func TestWorkloadE2E(t *testing.T) {
	kube := testenv.KubeAPIServer(t)
	rc, err := clientcmd.BuildConfigFromFlags("", kube.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "api"}
	_, err = client.AppsV1().Deployments("web").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: i32(2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: "nginx:1.27"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref := Ref{Kind: "Deployment", Namespace: "web", Name: "api"}
	check := func(want model.HealthState) {
		t.Helper()
		st, err := Check(ctx, client, ref)
		if err != nil {
			t.Fatal(err)
		}
		if st.Health != want {
			t.Fatalf("%s (%s), want %s", st.Health, st.Message, want)
		}
	}
	check(model.HealthStateProgressing) // not observed yet

	setStatus := func(s appsv1.DeploymentStatus) {
		t.Helper()
		cur, err := client.AppsV1().Deployments("web").Get(ctx, "api", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.ObservedGeneration = cur.Generation
		cur.Status = s
		if _, err := client.AppsV1().Deployments("web").UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setStatus(appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1})
	check(model.HealthStateProgressing)
	setStatus(appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2})
	check(model.HealthStateHealthy)

	// A new spec is progressing until the controller observes it.
	d, err := client.AppsV1().Deployments("web").Get(ctx, "api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Image = "nginx:1.28"
	if _, err := client.AppsV1().Deployments("web").Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	check(model.HealthStateProgressing)
}
