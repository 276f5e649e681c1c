package hosted

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/remote"
)

// NewRelic runs an NRQL query through New Relic's NerdGraph (GraphQL) API.
// The profile Secret (default "newrelic") holds personal-api-key and
// account-id, and optionally region (us, eu) and base-url-nerdgraph. One
// row is the result as a map; several are a list of maps.
type NewRelic struct{ Base }

// NerdGraph endpoints by region.
const (
	NerdGraphUS = "https://api.newrelic.com/graphql"
	NerdGraphEU = "https://api.eu.newrelic.com/graphql"
)

const nrqlQuery = `query($accountId: Int!, $nrql: Nrql!, $timeout: Seconds) { actor { account(id: $accountId) { nrql(query: $nrql, timeout: $timeout) { results } } } }`

// Measure runs the metric's NRQL query.
func (p *NewRelic) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	var m struct {
		Profile string `json:"profile,omitempty"`
		Query   string `json:"query"`
		Timeout *int64 `json:"timeout,omitempty"`
	}
	if err := remote.Decode(req.Metric.Metric.Provider.NewRelic, &m); err != nil {
		return analysis.Value{}, fmt.Errorf("newRelic: %w", err)
	}
	if strings.TrimSpace(m.Query) == "" {
		return analysis.Value{}, errors.New("newRelic.query must be set")
	}
	profile := m.Profile
	if profile == "" {
		profile = "newrelic"
	}
	key, err := secret(ctx, req, profile, "personal-api-key")
	if err != nil {
		return analysis.Value{}, fmt.Errorf("newRelic: %w", err)
	}
	account, err := secret(ctx, req, profile, "account-id")
	if err != nil {
		return analysis.Value{}, fmt.Errorf("newRelic: %w", err)
	}
	accountID, err := strconv.Atoi(strings.TrimSpace(account))
	if err != nil {
		return analysis.Value{}, fmt.Errorf("newRelic: secret %q key account-id is not a number", profile)
	}
	endpoint, err := optionalSecret(ctx, req, profile, "base-url-nerdgraph")
	if err != nil {
		return analysis.Value{}, fmt.Errorf("newRelic: %w", err)
	}
	if endpoint == "" {
		region, err := optionalSecret(ctx, req, profile, "region")
		if err != nil {
			return analysis.Value{}, fmt.Errorf("newRelic: %w", err)
		}
		endpoint = NerdGraphUS
		if strings.EqualFold(region, "eu") {
			endpoint = NerdGraphEU
		}
	}
	timeout := int64(5)
	if m.Timeout != nil {
		if *m.Timeout <= 0 {
			return analysis.Value{}, errors.New("newRelic.timeout must be positive")
		}
		timeout = *m.Timeout
	}
	body := map[string]any{"query": nrqlQuery, "variables": map[string]any{"accountId": accountID, "nrql": m.Query, "timeout": timeout}}
	var resp struct {
		Data struct {
			Actor struct {
				Account struct {
					NRQL *struct {
						Results []map[string]any `json:"results"`
					} `json:"nrql"`
				} `json:"account"`
			} `json:"actor"`
		} `json:"data"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	call := remote.Call{Method: http.MethodPost, URL: endpoint, Header: http.Header{"Api-Key": {key}}, Body: body, Timeout: time.Duration(timeout)*time.Second + DefaultTimeout}
	if err := remote.Do(ctx, p.client, call, &resp); err != nil {
		return analysis.Value{}, err
	}
	if len(resp.Errors) > 0 {
		msgs := make([]string, len(resp.Errors))
		for i, e := range resp.Errors {
			msgs[i] = e.Message
		}
		return analysis.Value{}, fmt.Errorf("newRelic: %s", strings.Join(msgs, "; "))
	}
	if resp.Data.Actor.Account.NRQL == nil {
		return analysis.Value{}, errors.New("newRelic: the answer has no nrql results")
	}
	results := resp.Data.Actor.Account.NRQL.Results
	if len(results) == 1 {
		return analysis.Value{Result: results[0]}, nil
	}
	out := make([]any, len(results))
	for i, r := range results {
		out[i] = r
	}
	return analysis.Value{Result: out}, nil
}
