package hosted

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/remote"
)

// SkyWalking runs a GraphQL query against an Apache SkyWalking OAP server
// (POST <address>/graphql) with $duration set to the last interval
// (default 5m) at minute steps; the result is the answer's data object.
type SkyWalking struct{ Base }

// Measure runs the metric's GraphQL query.
func (p *SkyWalking) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	var m struct {
		Address  string `json:"address"`
		Query    string `json:"query"`
		Interval string `json:"interval,omitempty"`
	}
	if err := remote.Decode(req.Metric.Metric.Provider.SkyWalking, &m); err != nil {
		return analysis.Value{}, fmt.Errorf("skywalking: %w", err)
	}
	if m.Address == "" || strings.TrimSpace(m.Query) == "" {
		return analysis.Value{}, errors.New("skywalking: address and query must be set")
	}
	window, err := interval("skywalking.interval", m.Interval, 5*time.Minute)
	if err != nil {
		return analysis.Value{}, err
	}
	end := p.now().UTC()
	const layout = "2006-01-02 1504" // SkyWalking's MINUTE step format
	body := map[string]any{"query": m.Query, "variables": map[string]any{"duration": map[string]string{
		"start": end.Add(-window).Format(layout), "end": end.Format(layout), "step": "MINUTE",
	}}}
	var resp struct {
		Data   map[string]any `json:"data"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := remote.Do(ctx, p.client, remote.Call{Method: http.MethodPost, URL: baseURL(m.Address) + "/graphql", Body: body, Timeout: DefaultTimeout}, &resp); err != nil {
		return analysis.Value{}, err
	}
	if len(resp.Errors) > 0 {
		msgs := make([]string, len(resp.Errors))
		for i, e := range resp.Errors {
			msgs[i] = e.Message
		}
		return analysis.Value{}, fmt.Errorf("skywalking: %s", strings.Join(msgs, "; "))
	}
	return analysis.Value{Result: resp.Data}, nil
}
