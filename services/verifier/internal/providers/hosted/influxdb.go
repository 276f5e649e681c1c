package hosted

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/remote"
)

// InfluxDB runs a Flux query through InfluxDB's v2 HTTP API (POST
// /api/v2/query, CSV answer). The profile Secret (default "influxdb")
// holds address, authToken and org. The result is the list of every
// record's _value, as in Argo Rollouts (conditions read result[0]).
type InfluxDB struct{ Base }

// Measure runs the metric's Flux query.
func (p *InfluxDB) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	var m struct {
		Profile string `json:"profile,omitempty"`
		Query   string `json:"query"`
	}
	if err := remote.Decode(req.Metric.Metric.Provider.Influxdb, &m); err != nil {
		return analysis.Value{}, fmt.Errorf("influxdb: %w", err)
	}
	if strings.TrimSpace(m.Query) == "" {
		return analysis.Value{}, errors.New("influxdb.query must be set")
	}
	profile := m.Profile
	if profile == "" {
		profile = "influxdb"
	}
	var address, token, org string
	for key, dst := range map[string]*string{"address": &address, "authToken": &token, "org": &org} {
		v, err := secret(ctx, req, profile, key)
		if err != nil {
			return analysis.Value{}, fmt.Errorf("influxdb: %w", err)
		}
		*dst = v
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	u := baseURL(address) + "/api/v2/query?" + url.Values{"org": {org}}.Encode()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(m.Query))
	if err != nil {
		return analysis.Value{}, fmt.Errorf("influxdb: %w", err)
	}
	hreq.Header.Set("Authorization", "Token "+token)
	hreq.Header.Set("Content-Type", "application/vnd.flux")
	hreq.Header.Set("Accept", "application/csv")
	resp, err := p.client.Do(hreq)
	if err != nil {
		return analysis.Value{}, fmt.Errorf("influxdb: POST %s/api/v2/query: %w", baseURL(address), err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 10<<20))
	if err != nil {
		return analysis.Value{}, fmt.Errorf("influxdb: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return analysis.Value{}, fmt.Errorf("influxdb: POST %s/api/v2/query: status %d: %s", baseURL(address), resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	values, err := fluxValues(string(raw))
	if err != nil {
		return analysis.Value{}, fmt.Errorf("influxdb: %w", err)
	}
	return analysis.Value{Result: values}, nil
}

// fluxValues reads the _value column of every table of an (optionally
// annotated) Flux CSV answer; numbers become float64, the rest strings.
func fluxValues(body string) ([]any, error) {
	out := []any{}
	for _, block := range strings.Split(strings.ReplaceAll(body, "\r\n", "\n"), "\n\n") {
		r := csv.NewReader(strings.NewReader(block))
		r.FieldsPerRecord = -1
		r.Comment = '#'
		col := -1
		for {
			rec, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read CSV answer: %w", err)
			}
			if col < 0 {
				for i, name := range rec {
					if name == "_value" {
						col = i
					}
				}
				if col < 0 {
					break // a table without values (or an error table)
				}
				continue
			}
			if col >= len(rec) {
				continue
			}
			if f, err := strconv.ParseFloat(rec[col], 64); err == nil {
				out = append(out, f)
			} else {
				out = append(out, rec[col])
			}
		}
	}
	return out, nil
}
