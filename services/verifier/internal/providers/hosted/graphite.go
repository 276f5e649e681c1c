package hosted

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
	"github.com/caravan-cd/caravan/services/verifier/internal/providers/remote"
)

// Graphite queries Graphite's render API (GET /render?format=json) over
// the last five minutes; the result is the list of the first series'
// non-null values, each rounded to 6 decimals as in Argo Rollouts.
type Graphite struct{ Base }

// Measure runs the metric's query (a target, with or without "target=").
func (p *Graphite) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	var m struct {
		Address string `json:"address"`
		Query   string `json:"query"`
	}
	if err := remote.Decode(req.Metric.Metric.Provider.Graphite, &m); err != nil {
		return analysis.Value{}, fmt.Errorf("graphite: %w", err)
	}
	target := strings.TrimSpace(m.Query)
	target = strings.TrimPrefix(target, "target=")
	if m.Address == "" || target == "" {
		return analysis.Value{}, errors.New("graphite: address and query must be set")
	}
	q := url.Values{"target": {target}, "from": {"-5min"}, "until": {"now"}, "format": {"json"}}
	var series []struct {
		Target     string        `json:"target"`
		Datapoints [][2]*float64 `json:"datapoints"`
	}
	if err := remote.Do(ctx, p.client, remote.Call{URL: baseURL(m.Address) + "/render?" + q.Encode(), Timeout: DefaultTimeout}, &series); err != nil {
		return analysis.Value{}, err
	}
	if len(series) == 0 {
		return analysis.Value{}, errors.New("graphite: no series")
	}
	values := []float64{}
	var texts []string
	for _, dp := range series[0].Datapoints {
		if dp[0] == nil {
			continue
		}
		v, _ := strconv.ParseFloat(strconv.FormatFloat(*dp[0], 'f', 6, 64), 64)
		values = append(values, v)
		texts = append(texts, strconv.FormatFloat(v, 'f', 6, 64))
	}
	return analysis.Value{Result: values, Text: "[" + strings.Join(texts, ",") + "]"}, nil
}
