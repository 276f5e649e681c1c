// Package gateway is Caravan's HTTP API: it applies and deletes resources,
// serves them back in Kargo's shape, takes people's actions (promote,
// approve, refresh, …) and turns them into events, streams a project's
// events, receives registry and git webhooks, authenticates callers (admin
// token, API tokens, OIDC) and authorizes them by role, and exposes health,
// metrics and its OpenAPI document.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/api"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
	"github.com/caravan-cd/caravan/services/gateway/internal/notify"
	"github.com/caravan-cd/caravan/services/gateway/internal/ui"
)

// Config of the gateway (envconfig prefix CARAVAN_).
type Config struct {
	service.Common

	// HTTPAddr is the address the API listens on.
	HTTPAddr string `envconfig:"HTTP_ADDR" default:"127.0.0.1:8080" desc:"address the HTTP API listens on"`
	// AdminToken is the bearer token of the system admin. It has no
	// default: caravan server generates one into <data dir>/admin-token
	// when it is unset.
	AdminToken string `envconfig:"ADMIN_TOKEN" desc:"bearer token of the system admin; caravan server generates one into <data dir>/admin-token when unset"`
	// MaxBodyBytes bounds the size of a request body.
	MaxBodyBytes int64 `envconfig:"MAX_BODY_BYTES" default:"10485760" desc:"largest request body accepted, in bytes (413 beyond)"`
	// ShutdownTimeout is how long in-flight requests may take to finish
	// once the gateway is asked to stop.
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"10s" desc:"how long in-flight requests may finish at shutdown"`
	// ExternalURL is where clients and senders reach the gateway; webhook
	// receiver URLs in ProjectConfig status start with it.
	ExternalURL string `envconfig:"EXTERNAL_URL" default:"http://127.0.0.1:8080" desc:"URL clients and webhook senders reach the gateway at; prefixes webhook receiver URLs"`
	// OIDCIssuer enables OIDC bearer tokens (ID tokens of this issuer).
	OIDCIssuer string `envconfig:"OIDC_ISSUER" default:"" desc:"OIDC issuer URL whose ID tokens are accepted as bearer tokens (empty: OIDC off)"`
	// OIDCAudience is the audience (client ID) ID tokens must carry.
	OIDCAudience string `envconfig:"OIDC_AUDIENCE" default:"caravan" desc:"audience (client ID) OIDC ID tokens must be issued for"`
	// WebhookMaxBodyBytes bounds a webhook delivery's body.
	WebhookMaxBodyBytes int64 `envconfig:"WEBHOOK_MAX_BODY_BYTES" default:"1048576" desc:"largest webhook delivery accepted, in bytes (413 beyond)"`
	// WebhookRate is the sustained deliveries per second one receiver takes.
	WebhookRate float64 `envconfig:"WEBHOOK_RATE" default:"10" desc:"deliveries per second one webhook receiver accepts (429 beyond the burst)"`
	// WebhookBurst is how many deliveries one receiver takes at once.
	WebhookBurst int `envconfig:"WEBHOOK_BURST" default:"20" desc:"deliveries one webhook receiver accepts at once"`
	// SSEHeartbeat is the interval of heartbeat comments on event streams.
	SSEHeartbeat time.Duration `envconfig:"SSE_HEARTBEAT" default:"15s" desc:"interval of heartbeat comments on /v1/projects/{p}/events"`
	// ListIndex serves lists from an in-memory index kept current by KV
	// watches instead of KV key scans.
	ListIndex bool `envconfig:"LIST_INDEX" default:"true" desc:"serve lists from an in-memory index kept current by KV watches"`
	// SessionTTL is how long a web UI sign-in lasts (an OIDC session ends
	// with its ID token); zero means 12h.
	SessionTTL time.Duration `envconfig:"SESSION_TTL" default:"12h" desc:"how long a web UI sign-in lasts (an OIDC session ends with its ID token)"`
	// OIDCClientSecret is the web UI's OIDC client secret; empty for a
	// public client (PKCE alone).
	OIDCClientSecret string `envconfig:"OIDC_CLIENT_SECRET" desc:"client secret of the web UI's OIDC client (CARAVAN_OIDC_AUDIENCE is its client ID); empty for a public client, which PKCE protects"`
	// OIDCScopes are the scopes the web UI asks the issuer for.
	OIDCScopes []string `envconfig:"OIDC_SCOPES" default:"openid,profile,email" desc:"scopes the web UI's OIDC sign-in asks for, comma-separated (add groups where the issuer needs it for a groups claim)"`
	// NotifyBackoff is the delay before a failed notification is tried
	// again, doubled after each failure (at most 10m); zero means 5s.
	NotifyBackoff time.Duration `envconfig:"NOTIFY_BACKOFF" default:"5s" desc:"delay before a failed notification is sent again, doubled after each failure up to 10m"`
	// NotifyTimeout bounds one notification request; zero means 30s.
	NotifyTimeout time.Duration `envconfig:"NOTIFY_TIMEOUT" default:"30s" desc:"longest time one notification request may take"`
}

// Validate checks the configuration.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("CARAVAN_HTTP_ADDR: must not be empty"))
	}
	if c.AdminToken == "" {
		errs = append(errs, errors.New("CARAVAN_ADMIN_TOKEN: required"))
	}
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("CARAVAN_MAX_BODY_BYTES: %d is not positive", c.MaxBodyBytes))
	}
	if c.OIDCIssuer != "" && c.OIDCAudience == "" {
		errs = append(errs, errors.New("CARAVAN_OIDC_AUDIENCE: required with CARAVAN_OIDC_ISSUER"))
	}
	if c.WebhookMaxBodyBytes < 0 || c.WebhookRate < 0 || c.WebhookBurst < 0 {
		errs = append(errs, errors.New("CARAVAN_WEBHOOK_*: must not be negative"))
	}
	if c.SSEHeartbeat < 0 {
		errs = append(errs, fmt.Errorf("CARAVAN_SSE_HEARTBEAT: %s is negative", c.SSEHeartbeat))
	}
	if c.SessionTTL < 0 {
		errs = append(errs, fmt.Errorf("CARAVAN_SESSION_TTL: %s is negative", c.SessionTTL))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("CARAVAN_SHUTDOWN_TIMEOUT: %s is negative", c.ShutdownTimeout))
	}
	if c.NotifyBackoff < 0 || c.NotifyTimeout < 0 {
		errs = append(errs, errors.New("CARAVAN_NOTIFY_BACKOFF, CARAVAN_NOTIFY_TIMEOUT: must not be negative"))
	}
	return errors.Join(errs...)
}

// Deps are what the gateway runs on.
type Deps struct {
	Config Config
	// Logger is required.
	Logger *slog.Logger
	// Env is the backbone (required).
	Env *service.Env
	// Registry is served on /metrics; nil: Env.Registry, else a new one.
	Registry *prometheus.Registry
	// Listener, when set, is served instead of listening on HTTPAddr.
	Listener net.Listener
	// Ready is an extra readiness check for /readyz (optional).
	Ready func(context.Context) error
	// HTTPClient fetches the OIDC issuer's discovery document and keys
	// (nil: the client of Env.Egress, with the issuer's host:port, the
	// operator's choice, allowed).
	HTTPClient *http.Client
	// LoginLinks are one-time web UI sign-in links the caller issues
	// (caravan server prints one for the admin); nil: none.
	LoginLinks *LoginLinks
	// UIReadsAnew makes the web UI read a project anew through the API on
	// every request instead of keeping it current with a feed of KV
	// changes (the UI benchmark's baseline).
	UIReadsAnew bool
	// SharedFreight, when set, holds the freight the list index shares
	// with other indexes of the freight bucket in the process (caravan
	// server's promoter), so that each freight is held once; nil: the
	// index holds its own.
	SharedFreight *freightindex.Shared
}

// LoginLinks are one-time sign-in links for the web UI: NewLoginLinks,
// then Issue(token, name, ttl) gives the code of /login/link/<code>.
type LoginLinks = auth.LoginLinks

// NewLoginLinks returns an empty set of one-time sign-in links.
func NewLoginLinks() *LoginLinks { return auth.NewLoginLinks() }

// NewHandler returns the gateway's whole router. ctx bounds what it runs in
// the background (the list index's watches).
func NewHandler(ctx context.Context, d Deps) (http.Handler, error) {
	if d.Env == nil {
		return nil, errors.New("gateway: Env is required")
	}
	reg := d.Registry
	if reg == nil {
		reg = d.Env.Registry
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	env := d.Env
	c := d.Config
	tokens := auth.NewTokens(env.Store.KV(state.Tokens), auth.ProjectUIDsOf(env.Store))
	chain := auth.Chain{Admin: auth.NewStaticToken(c.AdminToken), Tokens: tokens}
	if c.OIDCIssuer != "" {
		hc := d.HTTPClient
		if hc == nil {
			hc = env.Egress.AllowURL(c.OIDCIssuer).Client(false)
		}
		chain.OIDC = auth.NewOIDC(c.OIDCIssuer, c.OIDCAudience, hc)
	}
	// caravan setup declared the audit stream; Connect checked it.
	auditLog := audit.New(env.JS)
	var index *api.Index
	if c.ListIndex {
		var err error
		if index, err = api.NewIndex(ctx, env.Store, d.SharedFreight); err != nil {
			return nil, err
		}
	}
	notifier := notify.New(notify.Options{Store: env.Store, Bus: env.Bus.With(events.WithLogger(d.Logger)), Egress: env.Egress,
		Logger: d.Logger, Backoff: c.NotifyBackoff, Timeout: c.NotifyTimeout, Source: "caravan"})
	notifications, err := notifier.Start(ctx)
	if err != nil {
		return nil, err
	}
	env.Health.Consumer(notifications)
	external := strings.TrimSuffix(c.ExternalURL, "/")
	sessions, err := auth.NewSessions(c.AdminToken, c.SessionTTL, strings.HasPrefix(external, "https://"))
	if err != nil {
		return nil, err
	}
	finder, err := c.Credentials(env)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	apiHandler, err := api.New(api.Options{
		Credentials:   finder,
		Store:         env.Store,
		Sessions:      sessions,
		Bus:           env.Bus.With(events.WithLogger(d.Logger)),
		Auth:          chain,
		Tokens:        tokens,
		Logger:        d.Logger,
		Registry:      reg,
		MaxBodyBytes:  c.MaxBodyBytes,
		ExternalURL:   external,
		Heartbeat:     c.SSEHeartbeat,
		Webhooks:      api.WebhookLimits{MaxBodyBytes: c.WebhookMaxBodyBytes, Rate: c.WebhookRate, Burst: c.WebhookBurst},
		Index:         index,
		Audit:         auditLog,
		Notifications: notifier,
		Stopping:      ctx.Done(),
		Ready: func(ctx context.Context) error {
			if err := env.Ready(ctx); err != nil {
				return err
			}
			if d.Ready != nil {
				return d.Ready(ctx)
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	uo := ui.Options{API: apiHandler, Sessions: sessions, Links: d.LoginLinks, Logger: d.Logger}
	if !d.UIReadsAnew {
		if uo.Feed, err = ui.NewFeed(ctx, env.Store); err != nil {
			return nil, err
		}
	}
	if c.OIDCIssuer != "" {
		uo.OIDC = &ui.OIDCConfig{Issuer: c.OIDCIssuer, ClientID: c.OIDCAudience, ClientSecret: c.OIDCClientSecret,
			Scopes: c.OIDCScopes, RedirectURL: external + "/auth/oidc/callback", HTTPClient: d.HTTPClient}
	}
	return ui.New(uo)
}

// Run serves the API until ctx ends, then shuts down gracefully, giving
// in-flight requests Config.ShutdownTimeout to finish.
func Run(ctx context.Context, d Deps) error {
	if err := d.Config.Validate(); err != nil {
		return err
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := NewHandler(ctx, d)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	ln := d.Listener
	if ln == nil {
		var lc net.ListenConfig
		if ln, err = lc.Listen(ctx, "tcp", d.Config.HTTPAddr); err != nil {
			return fmt.Errorf("listen on %s: %w", d.Config.HTTPAddr, err)
		}
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(d.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	d.Env.Health.Started()
	d.Logger.Info("gateway listening", "addr", ln.Addr().String())

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	d.Logger.Info("gateway shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.Config.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
