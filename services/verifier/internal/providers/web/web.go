// Package web is the web metric provider: an HTTP request whose JSON
// response, or the part of it a jsonPath selects, is the measurement, as in
// Argo Rollouts.
package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/util/jsonpath"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/auth"
)

// DefaultTimeout bounds a request without timeoutSeconds (Argo: 10s).
const DefaultTimeout = 10 * time.Second

// maxBody bounds the response body read.
const maxBody = 10 << 20

// Provider measures web metrics. It is safe for concurrent use.
type Provider struct {
	client   *http.Client
	insecure *http.Client
}

var _ analysis.Provider = (*Provider)(nil)

// New returns a Provider sending requests through the egress policy
// (nil: the default policy), which bounds where they go, how long they
// take and how large a response may be; metrics with insecure: true skip
// TLS verification on a separate client.
func New(policy *egress.Policy) *Provider {
	return &Provider{client: policy.Client(false), insecure: policy.Client(true)}
}

// Measure sends the metric's request. A transport error, a timeout, a
// status outside 2xx, a body that is not JSON or a jsonPath that finds
// nothing is an error (the measurement's phase is Error, not Failed).
func (p *Provider) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	m := req.Metric.Metric.Provider.Web
	if m == nil {
		return analysis.Value{}, errors.New("not a web metric")
	}
	authn, err := auth.Decode(m.Authentication)
	if err != nil {
		return analysis.Value{}, err
	}
	if authn != nil && authn.Sigv4 != nil {
		return analysis.Value{}, errors.New("authentication.sigv4 is supported by the prometheus provider only; use oauth2 or basicAuth")
	}
	method := strings.ToUpper(m.Method)
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	switch {
	case m.Body != "" && m.JSONBody != nil:
		return analysis.Value{}, errors.New("body and jsonBody are mutually exclusive")
	case m.Body != "":
		body = strings.NewReader(m.Body)
	case m.JSONBody != nil:
		b, err := json.Marshal(m.JSONBody)
		if err != nil {
			return analysis.Value{}, fmt.Errorf("encode jsonBody: %w", err)
		}
		body = bytes.NewReader(b)
	}
	switch method {
	case http.MethodGet:
		if body != nil {
			return analysis.Value{}, errors.New("a GET request cannot have a body")
		}
	case http.MethodPost, http.MethodPut:
	default:
		return analysis.Value{}, fmt.Errorf("method %q is not one of GET, POST, PUT", m.Method)
	}
	timeout := DefaultTimeout
	if m.TimeoutSeconds > 0 {
		timeout = time.Duration(m.TimeoutSeconds) * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, method, m.URL, body)
	if err != nil {
		return analysis.Value{}, fmt.Errorf("request: %w", err)
	}
	for _, h := range m.Headers {
		if strings.EqualFold(h.Key, "Host") {
			hreq.Host = h.Value
			continue
		}
		hreq.Header.Add(h.Key, h.Value)
	}
	if m.JSONBody != nil && hreq.Header.Get("Content-Type") == "" {
		hreq.Header.Set("Content-Type", "application/json")
	}
	client := p.client
	if m.Insecure {
		client = p.insecure
	}
	if client, err = authn.Client(ctx, client, auth.Options{}); err != nil {
		return analysis.Value{}, err
	}
	resp, err := client.Do(hreq)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return analysis.Value{}, fmt.Errorf("%s %s: timed out after %s", method, m.URL, timeout)
		}
		return analysis.Value{}, fmt.Errorf("%s %s: %w", method, m.URL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return analysis.Value{}, fmt.Errorf("%s %s: read body: %w", method, m.URL, err)
	}
	if len(raw) > maxBody {
		return analysis.Value{}, fmt.Errorf("%s %s: response body larger than %d bytes", method, m.URL, maxBody)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return analysis.Value{}, fmt.Errorf("%s %s: received non-2xx response code %d", method, m.URL, resp.StatusCode)
	}
	var data any
	if err := json.Unmarshal(raw, &data); err != nil {
		return analysis.Value{}, fmt.Errorf("%s %s: response is not JSON: %w", method, m.URL, err)
	}
	result, err := find(m.JSONPath, data)
	if err != nil {
		return analysis.Value{}, err
	}
	return analysis.Value{Result: result}, nil
}

// find applies a Kubernetes-style JSONPath ("{$.data.ok}") to data. One
// match is the result itself; several are a list; none is an error.
func find(path string, data any) (any, error) {
	if path == "" {
		return data, nil
	}
	jp := jsonpath.New("metric")
	if err := jp.Parse(path); err != nil {
		return nil, fmt.Errorf("jsonPath %q: %w", path, err)
	}
	results, err := jp.FindResults(data)
	if err != nil {
		return nil, fmt.Errorf("jsonPath %q: %w", path, err)
	}
	var out []any
	for _, r := range results {
		for _, v := range r {
			if v.IsValid() && v.CanInterface() {
				out = append(out, v.Interface())
			} else {
				out = append(out, nil)
			}
		}
	}
	switch len(out) {
	case 0:
		return nil, fmt.Errorf("jsonPath %q matches nothing", path)
	case 1:
		return out[0], nil
	}
	return out, nil
}
