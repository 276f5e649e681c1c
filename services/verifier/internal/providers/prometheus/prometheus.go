// Package prometheus is the prometheus metric provider: an instant PromQL
// query through Prometheus' HTTP API (/api/v1/query). As in Argo Rollouts,
// a vector result is a list of its sample values ([]float64, so conditions
// read result[0]) and a scalar result is a float64.
package prometheus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/expr-lang/expr"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/auth"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/remote"
)

// DefaultTimeout bounds a query without a timeout (seconds) of its own.
const DefaultTimeout = 30 * time.Second

// maxBody bounds the response body read.
const maxBody = 10 << 20

// Provider measures prometheus metrics. It is safe for concurrent use.
type Provider struct {
	// Address is used by metrics without an address of their own.
	Address string
	// AWS replaces the default AWS credential chain of sigv4 (tests).
	AWS aws.CredentialsProvider
	// Now replaces the clock of rangeQuery and sigv4 (tests).
	Now      func() time.Time
	client   *http.Client
	insecure *http.Client
}

var _ analysis.Provider = (*Provider)(nil)

// New returns a Provider; defaultAddress serves metrics that name none.
// Queries pass the egress policy (nil: the default policy); defaultAddress,
// the operator's choice, is allowed by it.
func New(defaultAddress string, policy *egress.Policy) *Provider {
	if defaultAddress != "" {
		policy = policy.AllowURL(defaultAddress)
	}
	return &Provider{Address: defaultAddress, client: policy.Client(false), insecure: policy.Client(true)}
}

// apiResponse is the envelope of every Prometheus API answer.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

type queryData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// Measure runs the metric's query.
func (p *Provider) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	m := req.Metric.Metric.Provider.Prometheus
	if m == nil {
		return analysis.Value{}, errors.New("not a prometheus metric")
	}
	authn, err := auth.Decode(m.Authentication)
	if err != nil {
		return analysis.Value{}, err
	}
	rng, err := rangeOf(m.RangeQuery, p.now())
	if err != nil {
		return analysis.Value{}, err
	}
	if m.Query == "" {
		return analysis.Value{}, errors.New("query is empty")
	}
	address := m.Address
	if address == "" {
		address = p.Address
	}
	if address == "" {
		return analysis.Value{}, errors.New("no address")
	}
	timeout := DefaultTimeout
	if m.Timeout != nil && *m.Timeout > 0 {
		timeout = time.Duration(*m.Timeout) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := strings.TrimRight(address, "/") + "/api/v1/query"
	form := url.Values{"query": {m.Query}, "timeout": {timeout.String()}}
	if rng != nil {
		u += "_range"
		form.Set("start", strconv.FormatFloat(float64(rng.start.UnixMilli())/1000, 'f', -1, 64))
		form.Set("end", strconv.FormatFloat(float64(rng.end.UnixMilli())/1000, 'f', -1, 64))
		form.Set("step", rng.step)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return analysis.Value{}, fmt.Errorf("query %s: %w", u, err)
	}
	hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, h := range m.Headers {
		hreq.Header.Add(h.Key, h.Value)
	}
	client := p.client
	if m.Insecure {
		client = p.insecure
	}
	if client, err = authn.Client(ctx, client, auth.Options{Service: "aps", AWS: p.AWS, Now: p.Now}); err != nil {
		return analysis.Value{}, err
	}
	resp, err := client.Do(hreq)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return analysis.Value{}, fmt.Errorf("query %s: timed out after %s", u, timeout)
		}
		return analysis.Value{}, fmt.Errorf("query %s: %w", u, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return analysis.Value{}, fmt.Errorf("query %s: read: %w", u, err)
	}
	if len(raw) > maxBody {
		return analysis.Value{}, fmt.Errorf("query %s: response body larger than %d bytes", u, maxBody)
	}
	var ar apiResponse
	if err := json.Unmarshal(raw, &ar); err != nil {
		return analysis.Value{}, fmt.Errorf("query %s: status %d, not a Prometheus API response: %w", u, resp.StatusCode, err)
	}
	if ar.Status != "success" {
		return analysis.Value{}, fmt.Errorf("query %q: %s: %s", m.Query, ar.ErrorType, ar.Error)
	}
	return parse(ar.Data)
}

func parse(data json.RawMessage) (analysis.Value, error) {
	var qd queryData
	if err := json.Unmarshal(data, &qd); err != nil {
		return analysis.Value{}, fmt.Errorf("decode query data: %w", err)
	}
	switch qd.ResultType {
	case "vector":
		var samples []sample
		if err := json.Unmarshal(qd.Result, &samples); err != nil {
			return analysis.Value{}, fmt.Errorf("decode vector: %w", err)
		}
		values := make([]float64, 0, len(samples))
		texts := make([]string, 0, len(samples))
		for _, s := range samples {
			f, txt, err := number(s.Value)
			if err != nil {
				return analysis.Value{}, err
			}
			values = append(values, f)
			texts = append(texts, txt)
		}
		return analysis.Value{Result: values, Text: "[" + strings.Join(texts, ",") + "]"}, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(qd.Result, &v); err != nil {
			return analysis.Value{}, fmt.Errorf("decode scalar: %w", err)
		}
		f, txt, err := number(v)
		if err != nil {
			return analysis.Value{}, err
		}
		return analysis.Value{Result: f, Text: txt}, nil
	case "matrix":
		// A range query: every sample of every series, in order (Argo
		// Rollouts), so conditions read all(result, # < 1000).
		var series []struct {
			Values [][2]any `json:"values"`
		}
		if err := json.Unmarshal(qd.Result, &series); err != nil {
			return analysis.Value{}, fmt.Errorf("decode matrix: %w", err)
		}
		values := []float64{}
		var texts []string
		for _, s := range series {
			for _, v := range s.Values {
				f, txt, err := number(v)
				if err != nil {
					return analysis.Value{}, err
				}
				values = append(values, f)
				texts = append(texts, txt)
			}
		}
		return analysis.Value{Result: values, Text: "[" + strings.Join(texts, ",") + "]"}, nil
	case "string":
		var v [2]any
		if err := json.Unmarshal(qd.Result, &v); err != nil {
			return analysis.Value{}, fmt.Errorf("decode string: %w", err)
		}
		s, _ := v[1].(string)
		return analysis.Value{Result: s, Text: s}, nil
	}
	return analysis.Value{}, fmt.Errorf("result type %q is not supported", qd.ResultType)
}

func (p *Provider) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// queryRange is a rangeQuery evaluated.
type queryRange struct {
	start, end time.Time
	step       string
}

// rangeOf evaluates rangeQuery: start and end are expressions
// (expr-lang, with now() and duration()), step a duration or seconds.
func rangeOf(settings map[string]any, now time.Time) (*queryRange, error) {
	if len(settings) == 0 {
		return nil, nil
	}
	var rq struct {
		Start string `json:"start"`
		End   string `json:"end"`
		Step  string `json:"step"`
	}
	if err := remote.Decode(settings, &rq); err != nil {
		return nil, fmt.Errorf("rangeQuery: %w", err)
	}
	if rq.Start == "" || rq.End == "" || rq.Step == "" {
		return nil, errors.New("rangeQuery: start, end and step must be set")
	}
	env := map[string]any{"now": func() time.Time { return now }}
	at := func(field, code string) (time.Time, error) {
		prog, err := expr.Compile(code, expr.Env(env), expr.DisableBuiltin("now"))
		if err != nil {
			return time.Time{}, fmt.Errorf("rangeQuery.%s %q: %w", field, code, err)
		}
		v, err := expr.Run(prog, env)
		if err != nil {
			return time.Time{}, fmt.Errorf("rangeQuery.%s %q: %w", field, code, err)
		}
		t, ok := v.(time.Time)
		if !ok {
			return time.Time{}, fmt.Errorf("rangeQuery.%s %q: is %T, not a time", field, code, v)
		}
		return t, nil
	}
	r := &queryRange{step: rq.Step}
	var err error
	if r.start, err = at("start", rq.Start); err != nil {
		return nil, err
	}
	if r.end, err = at("end", rq.End); err != nil {
		return nil, err
	}
	if r.end.Before(r.start) {
		return nil, fmt.Errorf("rangeQuery: end %s is before start %s", r.end.Format(time.RFC3339), r.start.Format(time.RFC3339))
	}
	if _, err := time.ParseDuration(rq.Step); err != nil {
		if _, err := strconv.ParseFloat(rq.Step, 64); err != nil {
			return nil, fmt.Errorf("rangeQuery.step %q is not a duration", rq.Step)
		}
	}
	return r, nil
}

// number reads a sample's [time, "value"] pair; "NaN" and "+Inf" parse.
func number(v [2]any) (float64, string, error) {
	s, ok := v[1].(string)
	if !ok {
		return 0, "", fmt.Errorf("sample value %v is not a string", v[1])
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, "", fmt.Errorf("sample value %q: %w", s, err)
	}
	return f, s, nil
}
