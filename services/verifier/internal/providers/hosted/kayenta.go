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

// Kayenta runs a canary judgement on a Kayenta server: it starts one (POST
// /canary/<canaryConfigName>), polls it (GET /canary/<id>) until it is
// complete, and judges its score against thresholds as Argo Rollouts
// does: score >= pass is Successful, >= marginal Inconclusive, else
// Failed. The measurement's value is the score.
type Kayenta struct {
	Base
	// Poll is how often a running judgement is looked at (default 5s).
	Poll time.Duration
}

type kayentaScope struct {
	Scope  string `json:"scope"`
	Region string `json:"region,omitempty"`
	Step   int64  `json:"step"`
	Start  string `json:"start"`
	End    string `json:"end"`
}

type kayentaMetric struct {
	Address                  string `json:"address"`
	Application              string `json:"application"`
	CanaryConfigName         string `json:"canaryConfigName"`
	MetricsAccountName       string `json:"metricsAccountName,omitempty"`
	ConfigurationAccountName string `json:"configurationAccountName,omitempty"`
	StorageAccountName       string `json:"storageAccountName,omitempty"`
	Threshold                struct {
		Pass     int64 `json:"pass"`
		Marginal int64 `json:"marginal"`
	} `json:"threshold"`
	Scopes []struct {
		Name            string       `json:"name"`
		ControlScope    kayentaScope `json:"controlScope"`
		ExperimentScope kayentaScope `json:"experimentScope"`
	} `json:"scopes"`
}

// Measure starts a judgement and waits for its score.
func (p *Kayenta) Measure(ctx context.Context, req analysis.Request) (analysis.Value, error) {
	var m kayentaMetric
	if err := remote.Decode(req.Metric.Metric.Provider.Kayenta, &m); err != nil {
		return analysis.Value{}, fmt.Errorf("kayenta: %w", err)
	}
	switch {
	case m.Address == "" || m.Application == "" || m.CanaryConfigName == "":
		return analysis.Value{}, errors.New("kayenta: address, application and canaryConfigName must be set")
	case len(m.Scopes) == 0:
		return analysis.Value{}, errors.New("kayenta.scopes must not be empty")
	case m.Threshold.Marginal > m.Threshold.Pass:
		return analysis.Value{}, errors.New("kayenta.threshold.marginal must not exceed pass")
	}
	base := baseURL(m.Address)
	q := url.Values{"application": {m.Application}}
	for k, v := range map[string]string{"metricsAccountName": m.MetricsAccountName, "configurationAccountName": m.ConfigurationAccountName, "storageAccountName": m.StorageAccountName} {
		if v != "" {
			q.Set(k, v)
		}
	}
	scopes := map[string]any{}
	for _, s := range m.Scopes {
		scopes[s.Name] = map[string]kayentaScope{"controlScope": s.ControlScope, "experimentScope": s.ExperimentScope}
	}
	body := map[string]any{"scopes": scopes, "thresholds": map[string]int64{"pass": m.Threshold.Pass, "marginal": m.Threshold.Marginal}}
	var started struct {
		CanaryExecutionID string `json:"canaryExecutionId"`
	}
	if err := remote.Do(ctx, p.client, remote.Call{Method: http.MethodPost, URL: base + "/canary/" + url.PathEscape(m.CanaryConfigName) + "?" + q.Encode(), Body: body, Timeout: DefaultTimeout}, &started); err != nil {
		return analysis.Value{}, err
	}
	if started.CanaryExecutionID == "" {
		return analysis.Value{}, errors.New("kayenta: the answer has no canaryExecutionId")
	}
	poll := p.Poll
	if poll <= 0 {
		poll = 5 * time.Second
	}
	for {
		var status struct {
			Complete bool `json:"complete"`
			Result   *struct {
				JudgeResult struct {
					Score float64 `json:"score"`
				} `json:"judgeResult"`
			} `json:"result"`
			Exception map[string]any `json:"exception"`
		}
		if err := remote.Do(ctx, p.client, remote.Call{URL: base + "/canary/" + url.PathEscape(started.CanaryExecutionID), Timeout: DefaultTimeout}, &status); err != nil {
			return analysis.Value{}, err
		}
		if status.Complete {
			if status.Result == nil {
				return analysis.Value{}, fmt.Errorf("kayenta: judgement %s ended without a result (%v)", started.CanaryExecutionID, status.Exception)
			}
			score := status.Result.JudgeResult.Score
			phase := analysis.PhaseFailed
			switch {
			case score >= float64(m.Threshold.Pass):
				phase = analysis.PhaseSuccessful
			case score >= float64(m.Threshold.Marginal):
				phase = analysis.PhaseInconclusive
			}
			return analysis.Value{Result: score, Text: strconv.FormatFloat(score, 'f', -1, 64), Phase: phase}, nil
		}
		select {
		case <-ctx.Done():
			return analysis.Value{}, fmt.Errorf("kayenta: judgement %s: %w", started.CanaryExecutionID, ctx.Err())
		case <-time.After(poll):
		}
	}
}
