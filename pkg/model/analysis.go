package model

// AnalysisTemplate is Argo Rollouts' analysis template, used for Stage
// verification.
type AnalysisTemplate struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       AnalysisTemplateSpec `json:"spec"`
}

// ClusterAnalysisTemplate is an AnalysisTemplate available to every project.
type ClusterAnalysisTemplate struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`
	Spec       AnalysisTemplateSpec `json:"spec"`
}

// AnalysisTemplateSpec holds the metrics and arguments of a template.
type AnalysisTemplateSpec struct {
	Metrics []Metric `json:"metrics"`
	// Templates names further templates whose metrics, args, dry-run and
	// retention rules this one includes (Argo Rollouts' template
	// composition).
	Templates            []AnalysisTemplateRef  `json:"templates,omitempty"`
	Args                 []Argument             `json:"args,omitempty"`
	DryRun               []DryRun               `json:"dryRun,omitempty"`
	MeasurementRetention []MeasurementRetention `json:"measurementRetention,omitempty"`
}

// AnalysisTemplateRef names an AnalysisTemplate, or a
// ClusterAnalysisTemplate when clusterScope is true.
type AnalysisTemplateRef struct {
	TemplateName string `json:"templateName"`
	ClusterScope bool   `json:"clusterScope,omitempty"`
}

// Argument is a template argument, given a value or a source.
type Argument struct {
	Name      string     `json:"name"`
	Value     *string    `json:"value,omitempty"`
	ValueFrom *ValueFrom `json:"valueFrom,omitempty"`
}

// ValueFrom is where an argument's value comes from.
type ValueFrom struct {
	SecretKeyRef *SecretKeyRef `json:"secretKeyRef,omitempty"`
	FieldRef     *FieldRef     `json:"fieldRef,omitempty"`
}

// SecretKeyRef names a key of a Secret.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// FieldRef names a field of the owning object.
type FieldRef struct {
	FieldPath string `json:"fieldPath"`
}

// DryRun marks metrics whose results do not count.
type DryRun struct {
	MetricName string `json:"metricName"`
}

// MeasurementRetention keeps more measurements of matching metrics.
type MeasurementRetention struct {
	MetricName string `json:"metricName"`
	Limit      int32  `json:"limit"`
}

// Metric is one measurement and its success and failure conditions.
type Metric struct {
	Name                    string         `json:"name"`
	Interval                string         `json:"interval,omitempty"`
	InitialDelay            string         `json:"initialDelay,omitempty"`
	Count                   *IntOrString   `json:"count,omitempty"`
	SuccessCondition        string         `json:"successCondition,omitempty"`
	FailureCondition        string         `json:"failureCondition,omitempty"`
	FailureLimit            *IntOrString   `json:"failureLimit,omitempty"`
	InconclusiveLimit       *IntOrString   `json:"inconclusiveLimit,omitempty"`
	ConsecutiveErrorLimit   *IntOrString   `json:"consecutiveErrorLimit,omitempty"`
	ConsecutiveSuccessLimit *IntOrString   `json:"consecutiveSuccessLimit,omitempty"`
	Provider                MetricProvider `json:"provider"`
}

// MetricProvider is where a metric is measured. Caravan acts on web,
// prometheus, job, datadog, newRelic, wavefront, kayenta, cloudWatch,
// graphite, influxdb and skywalking (their settings are decoded, strictly,
// by the verifier); plugin is kept but a measurement with it ends in Error
// (the workload-rollout plugin aside).
type MetricProvider struct {
	Web        *WebMetric        `json:"web,omitempty"`
	Prometheus *PrometheusMetric `json:"prometheus,omitempty"`
	Job        *JobMetric        `json:"job,omitempty"`

	Datadog    map[string]any `json:"datadog,omitempty"`
	NewRelic   map[string]any `json:"newRelic,omitempty"`
	Wavefront  map[string]any `json:"wavefront,omitempty"`
	Kayenta    map[string]any `json:"kayenta,omitempty"`
	CloudWatch map[string]any `json:"cloudWatch,omitempty"`
	Graphite   map[string]any `json:"graphite,omitempty"`
	Influxdb   map[string]any `json:"influxdb,omitempty"`
	SkyWalking map[string]any `json:"skywalking,omitempty"`
	Plugin     map[string]any `json:"plugin,omitempty" caravan:"ignored"`
}

// Names returns the names of the providers set.
func (p *MetricProvider) Names() []string {
	var out []string
	add := func(set bool, name string) {
		if set {
			out = append(out, name)
		}
	}
	add(p.Web != nil, "web")
	add(p.Prometheus != nil, "prometheus")
	add(p.Job != nil, "job")
	add(p.Datadog != nil, "datadog")
	add(p.NewRelic != nil, "newRelic")
	add(p.Wavefront != nil, "wavefront")
	add(p.Kayenta != nil, "kayenta")
	add(p.CloudWatch != nil, "cloudWatch")
	add(p.Graphite != nil, "graphite")
	add(p.Influxdb != nil, "influxdb")
	add(p.SkyWalking != nil, "skywalking")
	add(p.Plugin != nil, "plugin")
	return out
}

// WebMetric measures with an HTTP request.
type WebMetric struct {
	Method         string            `json:"method,omitempty"`
	URL            string            `json:"url"`
	Headers        []WebMetricHeader `json:"headers,omitempty"`
	Body           string            `json:"body,omitempty"`
	JSONBody       any               `json:"jsonBody,omitempty"`
	TimeoutSeconds int64             `json:"timeoutSeconds,omitempty"`
	JSONPath       string            `json:"jsonPath,omitempty"`
	Insecure       bool              `json:"insecure,omitempty"`
	Authentication map[string]any    `json:"authentication,omitempty"`
}

// WebMetricHeader is one request header.
type WebMetricHeader struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// PrometheusMetric measures with a PromQL query.
type PrometheusMetric struct {
	Address        string            `json:"address,omitempty"`
	Query          string            `json:"query,omitempty"`
	Authentication map[string]any    `json:"authentication,omitempty"`
	Timeout        *int64            `json:"timeout,omitempty"`
	Insecure       bool              `json:"insecure,omitempty"`
	Headers        []WebMetricHeader `json:"headers,omitempty"`
	RangeQuery     map[string]any    `json:"rangeQuery,omitempty"`
}

// JobMetric measures with a Kubernetes Job; its spec is kept as written.
type JobMetric struct {
	Metadata *AnalysisRunMetadata `json:"metadata,omitempty"`
	Spec     map[string]any       `json:"spec"`
}
