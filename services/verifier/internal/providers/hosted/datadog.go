package hosted

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/remote"
)

// Datadog queries Datadog's metrics API: v1 GET /api/v1/query (the last
// point of the first series) or v2 POST /api/v2/query/scalar (queries,
// formula, aggregator; one value, or a list for grouped queries). Keys
// come from the project Secret secretRef.name (default "datadog"): api-key,
// app-key and optionally address.
type Datadog struct{ Base }

// DatadogSite is the API address used when the Secret has none.
const DatadogSite = "https://api.datadoghq.com"

type datadogMetric struct {
	APIVersion     string            `json:"apiVersion,omitempty"`
	Interval       string            `json:"interval,omitempty"`
	Query          string            `json:"query,omitempty"`
	Queries        map[string]string `json:"queries,omitempty"`
	Formula        string            `json:"formula,omitempty"`
	Aggregator     string            `json:"aggregator,omitempty"`
	RequestTimeout string            `json:"requestTimeout,omitempty"`
	SecretRef      *struct {
		Name       string `json:"name"`
		Namespaced bool   `json:"namespaced,omitempty"`
	} `json:"secretRef,omitempty"`
}

var datadogAggregators = []string{"avg", "min", "max", "sum", "last", "percentile", "mean", "l2norm", "area"}

// Measure runs the metric's query.
func (p *Datadog) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	var m datadogMetric
	if err := remote.Decode(req.Metric.Metric.Provider.Datadog, &m); err != nil {
		return analysis.Value{}, fmt.Errorf("datadog: %w", err)
	}
	window, err := interval("datadog.interval", m.Interval, 5*time.Minute)
	if err != nil {
		return analysis.Value{}, err
	}
	timeout, err := interval("datadog.requestTimeout", m.RequestTimeout, DefaultTimeout)
	if err != nil {
		return analysis.Value{}, err
	}
	version := m.APIVersion
	if version == "" {
		version = "v1"
	}
	switch {
	case version != "v1" && version != "v2":
		return analysis.Value{}, fmt.Errorf("datadog.apiVersion %q is not v1 or v2", m.APIVersion)
	case m.Query == "" && len(m.Queries) == 0:
		return analysis.Value{}, errors.New("datadog: query or queries must be set")
	case m.Query != "" && len(m.Queries) > 0:
		return analysis.Value{}, errors.New("datadog: query and queries are mutually exclusive")
	case version == "v1" && (len(m.Queries) > 0 || m.Formula != ""):
		return analysis.Value{}, errors.New("datadog: queries and formula need apiVersion v2")
	case len(m.Queries) > 1 && m.Formula == "":
		return analysis.Value{}, errors.New("datadog: several queries need a formula")
	}
	if m.Aggregator == "" {
		m.Aggregator = "last"
	} else if !slices.Contains(datadogAggregators, m.Aggregator) {
		return analysis.Value{}, fmt.Errorf("datadog.aggregator %q is not one of %s", m.Aggregator, strings.Join(datadogAggregators, ", "))
	}
	name := "datadog"
	if m.SecretRef != nil && m.SecretRef.Name != "" {
		name = m.SecretRef.Name
	}
	apiKey, err := secret(ctx, req, name, "api-key")
	if err != nil {
		return analysis.Value{}, fmt.Errorf("datadog: %w", err)
	}
	appKey, err := secret(ctx, req, name, "app-key")
	if err != nil {
		return analysis.Value{}, fmt.Errorf("datadog: %w", err)
	}
	address, err := optionalSecret(ctx, req, name, "address")
	if err != nil {
		return analysis.Value{}, fmt.Errorf("datadog: %w", err)
	}
	if address == "" {
		address = DatadogSite
	}
	header := http.Header{"Dd-Api-Key": {apiKey}, "Dd-Application-Key": {appKey}}
	to := p.now()
	from := to.Add(-window)
	if version == "v1" {
		return p.v1(ctx, baseURL(address), header, m.Query, from, to, timeout)
	}
	return p.v2(ctx, baseURL(address), header, m, from, to, timeout)
}

func (p *Datadog) v1(ctx context.Context, address string, header http.Header, query string, from, to time.Time, timeout time.Duration) (analysis.Value, error) {
	q := url.Values{"query": {query}, "from": {strconv.FormatInt(from.Unix(), 10)}, "to": {strconv.FormatInt(to.Unix(), 10)}}
	var resp struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Series []struct {
			Pointlist [][2]*float64 `json:"pointlist"`
		} `json:"series"`
	}
	if err := remote.Do(ctx, p.client, remote.Call{URL: address + "/api/v1/query?" + q.Encode(), Header: header, Timeout: timeout}, &resp); err != nil {
		return analysis.Value{}, err
	}
	if resp.Status == "error" {
		return analysis.Value{}, fmt.Errorf("datadog: %s", resp.Error)
	}
	// No data in the window: result is nil, for default(result, 0).
	if len(resp.Series) == 0 || len(resp.Series[0].Pointlist) == 0 {
		return analysis.Value{Result: nil, Text: "null"}, nil
	}
	last := resp.Series[0].Pointlist[len(resp.Series[0].Pointlist)-1][1]
	if last == nil {
		return analysis.Value{Result: nil, Text: "null"}, nil
	}
	return analysis.Value{Result: *last, Text: strconv.FormatFloat(*last, 'f', -1, 64)}, nil
}

func (p *Datadog) v2(ctx context.Context, address string, header http.Header, m datadogMetric, from, to time.Time, timeout time.Duration) (analysis.Value, error) {
	type query struct {
		DataSource string `json:"data_source"`
		Query      string `json:"query"`
		Name       string `json:"name"`
		Aggregator string `json:"aggregator"`
	}
	var queries []query
	formula := m.Formula
	if m.Query != "" {
		queries = append(queries, query{"metrics", m.Query, "query", m.Aggregator})
		formula = "query"
	} else {
		names := make([]string, 0, len(m.Queries))
		for n := range m.Queries {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			queries = append(queries, query{"metrics", m.Queries[n], n, m.Aggregator})
		}
		if formula == "" {
			formula = names[0]
		}
	}
	body := map[string]any{"data": map[string]any{
		"type": "scalar_request",
		"attributes": map[string]any{
			"from": from.UnixMilli(), "to": to.UnixMilli(),
			"queries":  queries,
			"formulas": []map[string]string{{"formula": formula}},
		},
	}}
	var resp struct {
		Errors []string `json:"errors"`
		Data   struct {
			Attributes struct {
				Columns []struct {
					Name   string `json:"name"`
					Type   string `json:"type"`
					Values []any  `json:"values"`
				} `json:"columns"`
			} `json:"attributes"`
			Errors string `json:"errors"`
		} `json:"data"`
	}
	if err := remote.Do(ctx, p.client, remote.Call{Method: http.MethodPost, URL: address + "/api/v2/query/scalar", Header: header, Body: body, Timeout: timeout}, &resp); err != nil {
		return analysis.Value{}, err
	}
	if len(resp.Errors) > 0 {
		return analysis.Value{}, fmt.Errorf("datadog: %s", strings.Join(resp.Errors, "; "))
	}
	if resp.Data.Errors != "" {
		return analysis.Value{}, fmt.Errorf("datadog: %s", resp.Data.Errors)
	}
	grouped := false
	var values []any
	for _, c := range resp.Data.Attributes.Columns {
		switch c.Type {
		case "group":
			grouped = true
		case "number":
			if values == nil {
				values = c.Values
			}
		}
	}
	if grouped {
		out := make([]float64, 0, len(values))
		for _, v := range values {
			if f, ok := v.(float64); ok {
				out = append(out, f)
			}
		}
		return analysis.Value{Result: out}, nil
	}
	if len(values) == 0 || values[0] == nil {
		return analysis.Value{Result: nil, Text: "null"}, nil
	}
	f, ok := values[0].(float64)
	if !ok {
		return analysis.Value{}, fmt.Errorf("datadog: value %v is not a number", values[0])
	}
	return analysis.Value{Result: f, Text: strconv.FormatFloat(f, 'f', -1, 64)}, nil
}
