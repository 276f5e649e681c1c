package hosted

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/remote"
)

// Wavefront queries Wavefront's chart API (GET /api/v2/chart/api) over the
// last five minutes; the result is the latest point of the first series.
// The API token is key <address> of the project Secret
// "wavefront-api-tokens", as in Argo Rollouts.
type Wavefront struct{ Base }

// WavefrontSecret names the Secret holding API tokens by address.
const WavefrontSecret = "wavefront-api-tokens"

// Measure runs the metric's query.
func (p *Wavefront) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	var m struct {
		Address string `json:"address"`
		Query   string `json:"query"`
	}
	if err := remote.Decode(req.Metric.Metric.Provider.Wavefront, &m); err != nil {
		return analysis.Value{}, fmt.Errorf("wavefront: %w", err)
	}
	if m.Address == "" || m.Query == "" {
		return analysis.Value{}, errors.New("wavefront: address and query must be set")
	}
	token, err := secret(ctx, req, WavefrontSecret, m.Address)
	if err != nil {
		return analysis.Value{}, fmt.Errorf("wavefront: %w", err)
	}
	start := p.now().Add(-5 * time.Minute)
	q := url.Values{"q": {m.Query}, "s": {strconv.FormatInt(start.UnixMilli(), 10)}, "g": {"m"}, "strict": {"true"}, "sorted": {"true"}}
	var resp struct {
		Warnings   string `json:"warnings"`
		Timeseries []struct {
			Data [][2]float64 `json:"data"`
		} `json:"timeseries"`
	}
	call := remote.Call{URL: baseURL(m.Address) + "/api/v2/chart/api?" + q.Encode(), Header: http.Header{"Authorization": {"Bearer " + token}}, Timeout: DefaultTimeout}
	if err := remote.Do(ctx, p.client, call, &resp); err != nil {
		return analysis.Value{}, err
	}
	if len(resp.Timeseries) == 0 || len(resp.Timeseries[0].Data) == 0 {
		msg := "wavefront: no data"
		if resp.Warnings != "" {
			msg += ": " + resp.Warnings
		}
		return analysis.Value{}, errors.New(msg)
	}
	data := resp.Timeseries[0].Data
	v := data[len(data)-1][1]
	return analysis.Value{Result: v, Text: strconv.FormatFloat(v, 'f', -1, 64)}, nil
}
