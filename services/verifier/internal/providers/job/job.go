// Package job is the job metric provider: each measurement creates a
// Kubernetes batch/v1 Job from the metric's job spec, waits until it is
// Complete (measurement Successful) or Failed (measurement Failed), and
// deletes it, as Argo Rollouts' job provider does.
//
// A Job outlives the process that created it: a measurement cut short by
// the process stopping (a rollout of the verifier, a crash, a lost lease)
// leaves its Job running, and the replica that continues the verification
// takes the same measurement again under the same Job name, so it adopts
// the running Job instead of starting over. Only a measurement that ended,
// or a run aborted or terminating, deletes its Job.
package job

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// Labels Caravan puts on the Jobs it creates.
const (
	LabelVerification = "caravan.dev/verification"
	LabelMetric       = "caravan.dev/metric"
)

// Client returns the cluster's client (created on first use).
type Client func() (kubernetes.Interface, error)

// Provider measures job metrics. It is safe for concurrent use.
type Provider struct {
	client Client
	poll   time.Duration
}

var _ analysis.Provider = (*Provider)(nil)

// New returns a Provider checking its Jobs every poll.
func New(client Client, poll time.Duration) *Provider {
	if poll <= 0 {
		poll = 2 * time.Second
	}
	return &Provider{client: client, poll: poll}
}

// Measure runs the metric's Job in the run's namespace (the project).
func (p *Provider) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	m := req.Metric.Metric.Provider.Job
	if m == nil {
		return analysis.Value{}, errors.New("not a job metric")
	}
	client, err := p.client()
	if err != nil {
		return analysis.Value{}, fmt.Errorf("kubernetes: %w", err)
	}
	var spec batchv1.JobSpec
	raw, err := json.Marshal(m.Spec)
	if err != nil {
		return analysis.Value{}, fmt.Errorf("job spec: %w", err)
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		return analysis.Value{}, fmt.Errorf("job spec: %w", err)
	}
	if spec.Template.Spec.RestartPolicy == "" {
		spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:      Name(req.Run.Name, req.Metric.Name, req.Index),
			Namespace: req.Run.Namespace,
			Labels:    map[string]string{},
		},
		Spec: spec,
	}
	maps.Copy(job.Labels, req.Run.Labels)
	if md := m.Metadata; md != nil {
		maps.Copy(job.Labels, md.Labels)
		job.Annotations = maps.Clone(md.Annotations)
	}
	job.Labels[LabelVerification] = labelValue(req.Run.Name)
	job.Labels[LabelMetric] = labelValue(req.Metric.Name)

	jobs := client.BatchV1().Jobs(job.Namespace)
	if _, err := jobs.Create(ctx, job, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return analysis.Value{}, fmt.Errorf("create job %s/%s: %w", job.Namespace, job.Name, err)
	}
	defer func() {
		if ctx.Err() != nil && !ending(ctx) {
			return // the process stops: the next owner adopts the Job
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		policy := metav1.DeletePropagationBackground
		_ = jobs.Delete(dctx, job.Name, metav1.DeleteOptions{PropagationPolicy: &policy})
	}()
	t := time.NewTicker(p.poll)
	defer t.Stop()
	for {
		cur, err := jobs.Get(ctx, job.Name, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return analysis.Value{}, ctx.Err()
			}
			return analysis.Value{}, fmt.Errorf("get job %s/%s: %w", job.Namespace, job.Name, err)
		}
		for _, c := range cur.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				continue
			}
			switch c.Type {
			case batchv1.JobComplete, batchv1.JobSuccessCriteriaMet:
				return analysis.Value{Phase: analysis.PhaseSuccessful, Text: "job " + job.Name + " complete"}, nil
			case batchv1.JobFailed:
				return analysis.Value{Phase: analysis.PhaseFailed, Text: strings.TrimSpace(fmt.Sprintf("job %s failed: %s %s", job.Name, c.Reason, c.Message))}, nil
			}
		}
		select {
		case <-ctx.Done():
			return analysis.Value{}, ctx.Err()
		case <-t.C:
		}
	}
}

// ending reports whether ctx was cancelled because the run ends (aborted,
// or terminating after another metric decided it) rather than because this
// process stops working on it.
func ending(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return errors.Is(cause, analysis.ErrAborted) || errors.Is(cause, analysis.ErrTerminating)
}

var unsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// Name is the Job's name for a measurement: readable, unique per run,
// metric and measurement, and a valid DNS label (63 characters at most).
func Name(run, metric string, index int) string {
	sum := sha1.Sum([]byte(fmt.Sprintf("%s\x00%s\x00%d", run, metric, index)))
	suffix := hex.EncodeToString(sum[:])[:10]
	base := strings.Trim(unsafe.ReplaceAllString(strings.ToLower(metric), "-"), "-")
	if len(base) > 40 {
		base = strings.Trim(base[:40], "-")
	}
	if base == "" {
		base = "metric"
	}
	return fmt.Sprintf("%s-%d-%s", base, index, suffix)
}

// labelValue makes s a valid label value (63 characters, alphanumerics,
// '-', '_', '.').
func labelValue(s string) string {
	s = regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(s, "-")
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.Trim(s, "-_.")
}
