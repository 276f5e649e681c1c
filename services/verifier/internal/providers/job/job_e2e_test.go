//go:build e2e

package job

import (
	"context"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// jobController stands in for the Job controller, which does not run
// here: it finishes each new Job as a controller would report it,
// complete when its container runs "true", failed otherwise.
func jobController(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) {
	go func() {
		for ctx.Err() == nil {
			list, err := client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, j := range list.Items {
					if len(j.Status.Conditions) > 0 {
						continue
					}
					now := metav1.Now()
					j.Status.StartTime = &now
					if j.Spec.Template.Spec.Containers[0].Command[0] == "true" {
						j.Status.Succeeded = 1
						j.Status.CompletionTime = &now
						j.Status.Conditions = []batchv1.JobCondition{
							{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
							{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
						}
					} else {
						j.Status.Failed = 2
						j.Status.Conditions = []batchv1.JobCondition{
							{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now},
							{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now},
						}
					}
					if _, err := client.BatchV1().Jobs(ns).UpdateStatus(ctx, &j, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
						t.Errorf("set job status: %v", err)
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

func TestJobE2E(t *testing.T) {
	kube := testenv.KubeAPIServer(t)
	rc, err := clientcmd.BuildConfigFromFlags("", kube.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	jobController(ctx, t, client, "demo")
	p := New(func() (kubernetes.Interface, error) { return client, nil }, 100*time.Millisecond)
	for _, tt := range []struct {
		command string
		want    analysis.Phase
	}{{"true", analysis.PhaseSuccessful}, {"false", analysis.PhaseFailed}} {
		spec, err := analysis.Build(ctx, []analysis.Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{jobMetric(tt.command)}}}}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := (&analysis.Engine{Providers: map[string]analysis.Provider{"job": p}}).Run(ctx, analysis.RunInfo{Name: "qa.01abc.f1", Namespace: "demo"}, spec)
		if err != nil {
			t.Fatal(err)
		}
		if res.Phase != tt.want {
			t.Fatalf("%s: phase %s (%s), want %s", tt.command, res.Phase, res.Message, tt.want)
		}
	}
	// Every Job was deleted after its measurement.
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := client.BatchV1().Jobs("demo").List(ctx, metav1.ListOptions{})
		if err == nil && len(list.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs left behind: %d", len(list.Items))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A job metric's analysis cut short by its process stopping leaves the
// running Job on a real API server; continued from its saved progress, the
// analysis adopts that Job (no second Job is created) and ends with it.
func TestJobAdoptedAfterRestartE2E(t *testing.T) {
	kube := testenv.KubeAPIServer(t)
	rc, err := clientcmd.BuildConfigFromFlags("", kube.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	spec, err := analysis.Build(ctx, []analysis.Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{jobMetric("true")}}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	run := analysis.RunInfo{Name: "qa.01abc.f1", Namespace: "demo"}
	jobs := func() []batchv1.Job {
		list, err := client.BatchV1().Jobs("demo").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return list.Items
	}
	// The first owner: its Job runs (no controller finishes it yet), and
	// the process stops.
	first, stop := context.WithCancel(ctx)
	var progress *analysis.Result
	done := make(chan error, 1)
	go func() {
		_, err := (&analysis.Engine{Providers: map[string]analysis.Provider{"job": New(func() (kubernetes.Interface, error) { return client, nil }, 100*time.Millisecond)}}).
			Continue(first, run, spec, nil, func(r *analysis.Result) { progress = r })
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for len(jobs()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no Job created")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if err := <-done; err == nil {
		t.Fatal("an interrupted run returned no error")
	}
	running := jobs()
	if len(running) != 1 {
		t.Fatalf("%d Jobs after the process stopped, want its running one", len(running))
	}
	// The next owner continues; the Job controller finishes the Job.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobController(cctx, t, client, "demo")
	res, err := (&analysis.Engine{Providers: map[string]analysis.Provider{"job": New(func() (kubernetes.Interface, error) { return client, nil }, 100*time.Millisecond)}}).
		Continue(ctx, run, spec, progress, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Phase != analysis.PhaseSuccessful || res.Metrics[0].Taken != 1 {
		t.Fatalf("phase %s, metric %+v", res.Phase, res.Metrics[0])
	}
	if !strings.Contains(res.Metrics[0].Measurements[0].Value, running[0].Name) {
		t.Fatalf("measured %q, not the adopted Job %s", res.Metrics[0].Measurements[0].Value, running[0].Name)
	}
}
