// Package hosted holds the Argo Rollouts metric providers that query an
// observability service's public HTTP API: Datadog, New Relic, Wavefront,
// Graphite, InfluxDB, Apache SkyWalking, Kayenta and Amazon CloudWatch.
// Each is a Provider of its own (one file each) built from Base, which
// sends every request through the egress policy and reads credentials from
// the run's project Secrets (redacted from measurements).
package hosted

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/services/verifier/internal/analysis"
)

// DefaultTimeout bounds a request without a timeout of its own.
const DefaultTimeout = 10 * time.Second

// Base is what every hosted provider shares.
type Base struct {
	client *http.Client
	// Now replaces the clock (tests).
	Now func() time.Time
}

// NewBase returns a Base sending requests through policy (nil: the default
// policy).
func NewBase(policy *egress.Policy) Base {
	return Base{client: policy.Client(false)}
}

func (b Base) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// Register adds every hosted provider, by its name in a metric's
// provider block, to providers.
func Register(providers map[string]analysis.Provider, policy *egress.Policy) {
	base := NewBase(policy)
	providers["datadog"] = &Datadog{base}
	providers["newRelic"] = &NewRelic{base}
	providers["wavefront"] = &Wavefront{base}
	providers["graphite"] = &Graphite{base}
	providers["influxdb"] = &InfluxDB{base}
	providers["skywalking"] = &SkyWalking{base}
	providers["kayenta"] = &Kayenta{Base: base}
	providers["cloudWatch"] = &CloudWatch{Base: base}
}

// secret reads a key of the run's project Secret name.
func secret(ctx context.Context, req analysis.Request, name, key string) (string, error) {
	if req.Run.Secret == nil {
		return "", fmt.Errorf("secret %q key %q: no secrets available", name, key)
	}
	return req.Run.Secret(ctx, name, key)
}

// optionalSecret is secret, with "" when the Secret or the key does not
// exist.
func optionalSecret(ctx context.Context, req analysis.Request, name, key string) (string, error) {
	v, err := secret(ctx, req, name, key)
	if errors.Is(err, analysis.ErrNoSecret) {
		return "", nil
	}
	return v, err
}

// interval parses a provider's lookback window (default def).
func interval(field, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q is not a positive duration", field, s)
	}
	return d, nil
}

// baseURL returns address without a trailing slash, with https:// when it
// names no scheme.
func baseURL(address string) string {
	address = strings.TrimRight(strings.TrimSpace(address), "/")
	if !strings.Contains(address, "://") {
		address = "https://" + address
	}
	return address
}
