package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/caravan-cd/caravan/pkg/events"
)

// AdminConfig is a standalone service's admin listener: liveness,
// readiness, metrics and (optionally) pprof, apart from any API it serves.
// caravan server does not read it (its HTTP listener has /healthz, /readyz
// and /metrics).
type AdminConfig struct {
	// Addr is where the admin listener binds, host:port; empty: no admin
	// listener. The Helm chart sets :9090 and probes it.
	Addr string `envconfig:"ADMIN_ADDR" desc:"standalone services: admin listener (/healthz, /readyz, /metrics) host:port, e.g. :9090; empty: none"`
	// Pprof serves net/http/pprof under /debug/pprof/ on the admin
	// listener.
	Pprof bool `envconfig:"ADMIN_PPROF" default:"false" desc:"standalone services: serve /debug/pprof/ on the admin listener"`
}

// Validate checks the admin configuration.
func (c AdminConfig) Validate() error {
	if c.Addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("CARAVAN_ADMIN_ADDR: %q is not host:port: %w", c.Addr, err)
	}
	return nil
}

// Check is one readiness condition: nil when it holds.
type Check func(context.Context) error

// Health is what the admin listener answers: the process is alive as long
// as it answers; it is ready once the service said it runs (Started: its
// durable consumers are bound) and every check holds: NATS connected, each
// consumer bound (Consumer), the service's leases renewed (Add).
type Health struct {
	mu     sync.Mutex
	checks []namedCheck
	// starting is why the service is not running yet ("" once it runs).
	starting atomic.Pointer[string]
	// stopping: a stop was asked; never ready again.
	stopping atomic.Bool
}

type namedCheck struct {
	name string
	fn   Check
}

// NewHealth returns a Health that reports "starting" until Started.
func NewHealth() *Health {
	h := &Health{}
	h.Starting("starting")
	return h
}

// Starting marks the service not ready yet, for reason. Nil h does
// nothing.
func (h *Health) Starting(reason string) {
	if h != nil {
		h.starting.Store(&reason)
	}
}

// Started marks start-up done: readiness is the checks from now on. A
// service calls it once its consumers are bound. Nil h does nothing.
func (h *Health) Started() { h.Starting("") }

// Stopping marks the service not ready for good: it is shutting down.
func (h *Health) Stopping() {
	if h != nil {
		h.stopping.Store(true)
	}
}

// Consumer adds the check that c is bound ("consumer <durable>"). Nil h
// does nothing.
func (h *Health) Consumer(c *events.Consumer) {
	h.Add("consumer "+c.Durable(), c.Bound)
}

// Add adds a readiness check. Safe for concurrent use; nil h does nothing.
func (h *Health) Add(name string, fn Check) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name, fn})
}

// Ready reports nil when the service is ready, otherwise why not.
func (h *Health) Ready(ctx context.Context) error {
	failing := h.Failing(ctx)
	errs := make([]error, 0, len(failing))
	for _, f := range failing {
		errs = append(errs, fmt.Errorf("%s: %s", f.Check, f.Reason))
	}
	return errors.Join(errs...)
}

// Failure is a readiness check that does not hold.
type Failure struct {
	Check  string `json:"check"`
	Reason string `json:"reason"`
}

// Failing returns the checks that do not hold, in the order they were
// added ("starting" alone while the service starts or stops).
func (h *Health) Failing(ctx context.Context) []Failure {
	if h.stopping.Load() {
		return []Failure{{Check: "stopping", Reason: "shutting down"}}
	}
	if r := h.starting.Load(); r != nil && *r != "" {
		return []Failure{{Check: "starting", Reason: *r}}
	}
	h.mu.Lock()
	checks := append([]namedCheck(nil), h.checks...)
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var out []Failure
	for _, c := range checks {
		if err := c.fn(ctx); err != nil {
			out = append(out, Failure{Check: c.name, Reason: err.Error()})
		}
	}
	return out
}

// AdminHandler serves /healthz, /readyz, /metrics (reg; nil: none) and,
// with pprof, /debug/pprof/.
func AdminHandler(h *Health, reg *prometheus.Registry, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter, code int, status string, failing []Failure) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		body := struct {
			Status  string    `json:"status"`
			Reason  string    `json:"reason,omitempty"`
			Failing []Failure `json:"failing,omitempty"`
		}{Status: status, Failing: failing}
		reasons := make([]string, 0, len(failing))
		for _, f := range failing {
			reasons = append(reasons, f.Check+": "+f.Reason)
		}
		body.Reason = strings.Join(reasons, "; ")
		_ = json.NewEncoder(w).Encode(body)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		answer(w, http.StatusOK, "ok", nil)
	})
	// Not ready names every failing check: {"status": "not ready",
	// "reason": "<check>: <why>; …", "failing": [{"check", "reason"}]}.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if failing := h.Failing(r.Context()); len(failing) > 0 {
			answer(w, http.StatusServiceUnavailable, "not ready", failing)
			return
		}
		answer(w, http.StatusOK, "ok", nil)
	})
	if reg != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	}
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// ServeAdmin listens on cfg.Addr and serves AdminHandler until ctx ends,
// then shuts the listener down. It returns once listening (the address
// actually bound, for :0) and a function that waits for the shutdown.
func ServeAdmin(ctx context.Context, cfg AdminConfig, h *Health, reg *prometheus.Registry) (addr string, wait func(), err error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return "", nil, fmt.Errorf("CARAVAN_ADMIN_ADDR: %w", err)
	}
	srv := &http.Server{Handler: AdminHandler(h, reg, cfg.Pprof), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-done:
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-done
	}()
	return ln.Addr().String(), func() { <-stopped }, nil
}
