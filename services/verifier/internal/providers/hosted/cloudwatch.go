package hosted

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatch/types"

	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/remote"
)

// CloudWatch queries Amazon CloudWatch's GetMetricData
// (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html)
// through the AWS SDK, with Argo Rollouts' cloudWatch fields: interval
// (the window ending now, default 5m) and metricDataQueries. Every page of
// the answer is read (NextToken); the SDK retries throttling and 5xx
// answers. The result is the list of MetricDataResults, each with Id,
// Label, StatusCode, Timestamps and Values, as Argo Rollouts evaluates them
// (`all(result[0].Values, {# < 0.01})`).
//
// Credentials: the project Secret "cloudwatch" when it exists (keys
// access-key-id, secret-access-key, optional session-token and region);
// otherwise the verifier's AWS default chain (environment, shared config,
// web identity), as Argo Rollouts. The region is the Secret's, else
// AWS_REGION's.
type CloudWatch struct {
	Base
	// Options adjust the CloudWatch client after Caravan's own (tests:
	// endpoint, credentials, retryer).
	Options []func(*cloudwatch.Options)
}

// CloudWatchSecret is the project Secret holding CloudWatch credentials.
const CloudWatchSecret = "cloudwatch"

type cloudWatchMetric struct {
	Interval          string            `json:"interval,omitempty"`
	MetricDataQueries []cloudWatchQuery `json:"metricDataQueries"`
}

type cloudWatchQuery struct {
	ID         string          `json:"id"`
	Expression *string         `json:"expression,omitempty"`
	Label      *string         `json:"label,omitempty"`
	MetricStat *cloudWatchStat `json:"metricStat,omitempty"`
	Period     json.RawMessage `json:"period,omitempty"`
	ReturnData *bool           `json:"returnData,omitempty"`
}

type cloudWatchStat struct {
	Metric struct {
		Dimensions []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"dimensions,omitempty"`
		MetricName string  `json:"metricName"`
		Namespace  *string `json:"namespace,omitempty"`
	} `json:"metric"`
	Period json.RawMessage `json:"period,omitempty"`
	Stat   string          `json:"stat"`
	Unit   string          `json:"unit,omitempty"`
}

// period reads an int-or-string period (Argo's IntOrString) in seconds;
// nil when unset.
func period(field string, raw json.RawMessage) (*int32, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		s = string(raw)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	if err != nil || n <= 0 {
		return nil, fmt.Errorf("%s %s is not a positive number of seconds", field, raw)
	}
	p := int32(n)
	return &p, nil
}

// queries converts the metric's queries to the SDK's, checking what
// GetMetricData requires.
func (m cloudWatchMetric) queries() ([]types.MetricDataQuery, error) {
	if len(m.MetricDataQueries) == 0 {
		return nil, errors.New("cloudWatch.metricDataQueries must have at least one query")
	}
	out := make([]types.MetricDataQuery, len(m.MetricDataQueries))
	for i, q := range m.MetricDataQueries {
		f := fmt.Sprintf("cloudWatch.metricDataQueries[%d]", i)
		switch {
		case q.ID == "":
			return nil, fmt.Errorf("%s.id must be set", f)
		case (q.Expression == nil) == (q.MetricStat == nil):
			return nil, fmt.Errorf("%s: exactly one of expression and metricStat must be set", f)
		}
		p, err := period(f+".period", q.Period)
		if err != nil {
			return nil, err
		}
		out[i] = types.MetricDataQuery{Id: aws.String(q.ID), Expression: q.Expression, Label: q.Label, Period: p, ReturnData: q.ReturnData}
		if s := q.MetricStat; s != nil {
			if s.Metric.MetricName == "" || s.Stat == "" {
				return nil, fmt.Errorf("%s.metricStat: metric.metricName and stat must be set", f)
			}
			sp, err := period(f+".metricStat.period", s.Period)
			if err != nil {
				return nil, err
			}
			if sp == nil {
				return nil, fmt.Errorf("%s.metricStat.period must be set", f)
			}
			stat := &types.MetricStat{Metric: &types.Metric{MetricName: aws.String(s.Metric.MetricName), Namespace: s.Metric.Namespace},
				Period: sp, Stat: aws.String(s.Stat), Unit: types.StandardUnit(s.Unit)}
			for _, d := range s.Metric.Dimensions {
				stat.Metric.Dimensions = append(stat.Metric.Dimensions, types.Dimension{Name: aws.String(d.Name), Value: aws.String(d.Value)})
			}
			out[i].MetricStat = stat
		}
	}
	return out, nil
}

// Measure runs the metric's queries over the interval ending now.
func (p *CloudWatch) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	var m cloudWatchMetric
	if err := remote.Decode(req.Metric.Metric.Provider.CloudWatch, &m); err != nil {
		return analysis.Value{}, fmt.Errorf("cloudWatch: %w", err)
	}
	window, err := interval("cloudWatch.interval", m.Interval, 5*time.Minute)
	if err != nil {
		return analysis.Value{}, err
	}
	queries, err := m.queries()
	if err != nil {
		return analysis.Value{}, err
	}
	client, err := p.newClient(ctx, req)
	if err != nil {
		return analysis.Value{}, fmt.Errorf("cloudWatch: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*DefaultTimeout)
	defer cancel()
	end := p.now()
	in := &cloudwatch.GetMetricDataInput{StartTime: aws.Time(end.Add(-window)), EndTime: aws.Time(end), MetricDataQueries: queries}
	results := []map[string]any{}
	byID := map[string]map[string]any{}
	var messages []string
	pages := cloudwatch.NewGetMetricDataPaginator(client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return analysis.Value{}, fmt.Errorf("cloudWatch: GetMetricData: %w", err)
		}
		for _, msg := range page.Messages {
			messages = append(messages, aws.ToString(msg.Code)+": "+aws.ToString(msg.Value))
		}
		for _, r := range page.MetricDataResults {
			id := aws.ToString(r.Id)
			res, ok := byID[id]
			if !ok {
				res = map[string]any{"Id": id, "Label": aws.ToString(r.Label), "Values": []any{}, "Timestamps": []any{}}
				byID[id] = res
				results = append(results, res)
			}
			res["StatusCode"] = string(r.StatusCode)
			for _, v := range r.Values {
				res["Values"] = append(res["Values"].([]any), v)
			}
			for _, t := range r.Timestamps {
				res["Timestamps"] = append(res["Timestamps"].([]any), t.UTC().Format(time.RFC3339))
			}
		}
	}
	if len(messages) > 0 {
		return analysis.Value{}, fmt.Errorf("cloudWatch: GetMetricData answered with messages: %s", strings.Join(messages, "; "))
	}
	return analysis.Value{Result: results}, nil
}

// newClient builds the CloudWatch client: requests through the egress policy,
// credentials and region from the project Secret or the default chain.
func (p *CloudWatch) newClient(ctx context.Context, req analysis.Request) (*cloudwatch.Client, error) {
	var keyID, key, session, region string
	for k, dst := range map[string]*string{"access-key-id": &keyID, "secret-access-key": &key, "session-token": &session, "region": &region} {
		v, err := optionalSecret(ctx, req, CloudWatchSecret, k)
		if err != nil {
			return nil, err
		}
		*dst = v
	}
	// The configuration (and credential providers) use the SDK's own HTTP
	// client, so AWS_CA_BUNDLE applies; the CloudWatch calls, which go
	// where the metric's project points, pass the egress policy.
	var load []func(*config.LoadOptions) error
	if region != "" {
		load = append(load, config.WithRegion(region))
	}
	switch {
	case keyID != "" && key != "":
		load = append(load, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(keyID, key, session)))
	case keyID != "" || key != "":
		return nil, fmt.Errorf("secret %q: access-key-id and secret-access-key go together", CloudWatchSecret)
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("no AWS region: set region in the project Secret %q or AWS_REGION", CloudWatchSecret)
	}
	opts := append([]func(*cloudwatch.Options){func(o *cloudwatch.Options) { o.HTTPClient = p.client }}, p.Options...)
	return cloudwatch.NewFromConfig(cfg, opts...), nil
}
