// Package gateway is Caravan's HTTP API: it applies and deletes resources,
// serves them back in Kargo's shape, and exposes health and metrics.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/services/gateway/internal/api"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
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
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("CARAVAN_SHUTDOWN_TIMEOUT: %s is negative", c.ShutdownTimeout))
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
}

// NewHandler returns the gateway's whole router.
func NewHandler(d Deps) (http.Handler, error) {
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
	return api.New(api.Options{
		Store:        env.Store,
		Bus:          env.Bus,
		Auth:         auth.NewStaticToken(d.Config.AdminToken),
		Logger:       d.Logger,
		Registry:     reg,
		MaxBodyBytes: d.Config.MaxBodyBytes,
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
	h, err := NewHandler(d)
	if err != nil {
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
