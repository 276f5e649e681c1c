package events

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSConfig says how to reach an external NATS server or cluster. It is
// embedded in every service's configuration.
type NATSConfig struct {
	// URL is one or more comma-separated server URLs. Empty means the
	// all-in-one server starts an embedded NATS server instead.
	URL string `envconfig:"NATS_URL" desc:"NATS server URL(s), comma-separated; empty runs an embedded server (caravan server only)"`
	// CredsFile is a NATS credentials file (JWT and NKey).
	CredsFile string `envconfig:"NATS_CREDS" desc:"NATS credentials file"`
	// NKeyFile is a file holding an NKey seed to authenticate with (the
	// one caravan server generates when its embedded NATS listens).
	NKeyFile string `envconfig:"NATS_NKEY" desc:"file holding the NKey seed to authenticate to NATS with (caravan server writes <data dir>/nats-client.nk when its embedded NATS listens)"`
	// User and Password authenticate with a NATS user and password (the
	// Helm chart gives each service its own user).
	User     string `envconfig:"NATS_USER" desc:"NATS user name (with CARAVAN_NATS_PASSWORD); the Helm chart sets one user per service"`
	Password string `envconfig:"NATS_PASSWORD" desc:"password of CARAVAN_NATS_USER"`
	// CAFile is a PEM file of CAs to trust for TLS.
	CAFile string `envconfig:"NATS_CA_FILE" desc:"PEM file of CAs trusted for NATS TLS"`
	// CertFile and KeyFile are a client certificate for mutual TLS.
	CertFile string `envconfig:"NATS_CERT_FILE" desc:"client certificate for NATS mutual TLS"`
	KeyFile  string `envconfig:"NATS_KEY_FILE" desc:"client key for NATS mutual TLS"`
	// ConnectTimeout is how long to wait for NATS at start before giving up.
	ConnectTimeout time.Duration `envconfig:"NATS_CONNECT_TIMEOUT" default:"2m" desc:"how long to wait for NATS at start"`
}

// Connect connects to cfg.URL, waiting for the server with backoff until it
// answers, ctx ends or cfg.ConnectTimeout passes. Once connected, the
// client reconnects on its own forever.
func Connect(ctx context.Context, cfg NATSConfig, name string, extra ...nats.Option) (*nats.Conn, error) {
	if strings.TrimSpace(cfg.URL) == "" {
		return nil, errors.New("connect to NATS: CARAVAN_NATS_URL is empty")
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(5 * time.Second),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.User != "" || cfg.Password != "" {
		if cfg.User == "" {
			return nil, errors.New("connect to NATS: CARAVAN_NATS_PASSWORD is set without CARAVAN_NATS_USER")
		}
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.NKeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("CARAVAN_NATS_NKEY: %w", err)
		}
		opts = append(opts, opt)
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	opts = append(opts, extra...)

	timeout := cfg.ConnectTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(cfg.URL, opts...)
		if err == nil {
			return nc, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to NATS at %s: %w (after %d attempts)", redactURL(cfg.URL), err, attempt)
		case <-time.After(backoff(attempt, 100*time.Millisecond, 5*time.Second)):
		}
	}
}

// redactURL drops user information from NATS URLs for error messages.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		if at := strings.LastIndex(u, "@"); at >= 0 {
			if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
				parts[i] = u[:scheme+3] + "***@" + u[at+1:]
			}
		}
	}
	return strings.Join(parts, ",")
}
