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
	"k8s.io/client-go/kubernetes/fake"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// controller stands in for the Job controller, which does not run against
// client-go's fake clientset (a fake is acceptable for this unit test; the
// e2e test uses a real kube-apiserver): it completes every Job whose
// container runs "true" and fails the others.
func controller(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) {
	t.Helper()
	go func() {
		for ctx.Err() == nil {
			list, err := client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, j := range list.Items {
					if len(j.Status.Conditions) > 0 {
						continue
					}
					cond := batchv1.JobCondition{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}
					if cmd := j.Spec.Template.Spec.Containers[0].Command; len(cmd) == 0 || cmd[0] != "true" {
						cond = batchv1.JobCondition{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit"}
					}
					j.Status.Conditions = []batchv1.JobCondition{cond}
					_, _ = client.BatchV1().Jobs(ns).UpdateStatus(ctx, &j, metav1.UpdateOptions{})
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
}

func jobMetric(command string) model.Metric {
	return model.Metric{
		Name: "smoke-test",
		Provider: model.MetricProvider{Job: &model.JobMetric{
			Metadata: &model.AnalysisRunMetadata{Labels: map[string]string{"team": "qa"}},
			Spec: map[string]any{
				"backoffLimit": 1,
				"template": map[string]any{"spec": map[string]any{
					"containers": []any{map[string]any{"name": "test", "image": "busybox", "command": []any{command}}},
				}},
			},
		}},
	}
}

func TestJob(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		command string
		want    analysis.Phase
		wantMsg string
	}{
		{name: "complete job succeeds", command: "true", want: analysis.PhaseSuccessful},
		{name: "failed job fails", command: "false", want: analysis.PhaseFailed, wantMsg: "BackoffLimitExceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := fake.NewClientset()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			controller(ctx, t, client, "demo")
			p := New(func() (kubernetes.Interface, error) { return client, nil }, 5*time.Millisecond)
			spec, err := analysis.Build(ctx, []analysis.Template{{Name: "t", Spec: model.AnalysisTemplateSpec{Metrics: []model.Metric{jobMetric(tt.command)}}}}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := (&analysis.Engine{Providers: map[string]analysis.Provider{"job": p}}).Run(ctx, analysis.RunInfo{Name: "qa.01abc.f1", Namespace: "demo", Labels: map[string]string{"stage": "qa"}}, spec)
			if err != nil {
				t.Fatal(err)
			}
			if res.Phase != tt.want || !strings.Contains(res.Message, tt.wantMsg) {
				t.Fatalf("phase %s %q, want %s %q", res.Phase, res.Message, tt.want, tt.wantMsg)
			}
			// The Job was created, then deleted.
			list, _ := client.BatchV1().Jobs("demo").List(ctx, metav1.ListOptions{})
			if len(list.Items) != 0 {
				t.Fatalf("%d jobs left behind", len(list.Items))
			}
			var sawCreate, sawDelete bool
			for _, a := range client.Actions() {
				if a.GetResource().Resource != "jobs" {
					continue
				}
				switch a.GetVerb() {
				case "create":
					sawCreate = true
				case "delete":
					sawDelete = true
				}
			}
			if !sawCreate || !sawDelete {
				t.Fatalf("create %v delete %v", sawCreate, sawDelete)
			}
		})
	}
}

func TestJobLabelsAndName(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan *batchv1.Job, 1)
	go func() {
		for ctx.Err() == nil {
			list, _ := client.BatchV1().Jobs("demo").List(ctx, metav1.ListOptions{})
			if list != nil && len(list.Items) > 0 {
				j := list.Items[0]
				seen <- j.DeepCopy()
				j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
				_, _ = client.BatchV1().Jobs("demo").UpdateStatus(ctx, &j, metav1.UpdateOptions{})
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	p := New(func() (kubernetes.Interface, error) { return client, nil }, 5*time.Millisecond)
	m := jobMetric("true")
	v, err := p.Measure(ctx, analysis.Request{Metric: &analysis.Metric{Metric: m}, Index: 3, Run: analysis.RunInfo{Name: "qa.01abc.f1", Namespace: "demo", Labels: map[string]string{"stage": "qa"}}})
	if err != nil || v.Phase != analysis.PhaseSuccessful {
		t.Fatalf("%+v %v", v, err)
	}
	j := <-seen
	if j.Labels["team"] != "qa" || j.Labels["stage"] != "qa" || j.Labels[LabelVerification] != "qa.01abc.f1" || j.Labels[LabelMetric] != "smoke-test" {
		t.Errorf("labels %v", j.Labels)
	}
	if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever || *j.Spec.BackoffLimit != 1 {
		t.Errorf("spec %+v", j.Spec)
	}
	if !strings.HasPrefix(j.Name, "smoke-test-3-") || len(j.Name) > 63 {
		t.Errorf("name %q", j.Name)
	}
	long := Name(strings.Repeat("r", 100), "A_Very.Long/Metric name that goes on and on and on", 12)
	if len(long) > 63 || strings.ContainsAny(long, "_./ ") {
		t.Errorf("name %q", long)
	}
	if Name("r1", "m", 1) == Name("r2", "m", 1) {
		t.Error("names of different runs collide")
	}
}

func TestJobWithoutCluster(t *testing.T) {
	t.Parallel()
	p := New(func() (kubernetes.Interface, error) { return nil, context.DeadlineExceeded }, time.Millisecond)
	m := jobMetric("true")
	if _, err := p.Measure(context.Background(), analysis.Request{Metric: &analysis.Metric{Metric: m}}); err == nil || !strings.Contains(err.Error(), "kubernetes") {
		t.Fatalf("err %v", err)
	}
}

// A measurement cut short by the process stopping leaves its Job running;
// the next owner, measuring the same index, adopts it (no second Job) and
// deletes it once it ended. An aborted run deletes its Job.
func TestJobOutlivesTheProcess(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	p := New(func() (kubernetes.Interface, error) { return client, nil }, 5*time.Millisecond)
	m := jobMetric("true")
	req := analysis.Request{Metric: &analysis.Metric{Metric: m}, Index: 2, Run: analysis.RunInfo{Name: "qa.v1", Namespace: "demo"}}
	jobs := func() []batchv1.Job {
		list, err := client.BatchV1().Jobs("demo").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return list.Items
	}
	// The process stops mid-measurement.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := p.Measure(ctx, req); done <- err }()
	for len(jobs()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a measurement cut short returned no error")
	}
	if n := len(jobs()); n != 1 {
		t.Fatalf("%d jobs after the process stopped, want the running one", n)
	}
	// The next owner adopts it; it completes.
	go func() {
		j := jobs()[0]
		j.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}
		_, _ = client.BatchV1().Jobs("demo").UpdateStatus(context.Background(), &j, metav1.UpdateOptions{})
	}()
	v, err := p.Measure(context.Background(), req)
	if err != nil || v.Phase != analysis.PhaseSuccessful {
		t.Fatalf("%+v %v", v, err)
	}
	if n := len(jobs()); n != 0 {
		t.Fatalf("%d jobs after the measurement ended", n)
	}
	// An aborted run deletes its Job.
	actx, abort := context.WithCancelCause(context.Background())
	go func() { _, err := p.Measure(actx, req); done <- err }()
	for len(jobs()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	abort(analysis.ErrAborted)
	if err := <-done; err == nil {
		t.Fatal("an aborted measurement returned no error")
	}
	if n := len(jobs()); n != 0 {
		t.Fatalf("%d jobs after an abort", n)
	}
}
