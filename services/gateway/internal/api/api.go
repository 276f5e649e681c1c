// Package api is the gateway's HTTP surface: the /v1 routes over the store,
// the health and metrics endpoints, and the middleware every request goes
// through (panic recovery, metrics, logging, authentication, JSON errors).
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/apply"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// Options configure the handler.
type Options struct {
	Store *state.Store
	Bus   apply.Publisher
	Auth  auth.Authenticator
	// Logger receives one debug line per request and handled errors.
	Logger *slog.Logger
	// Registry receives the HTTP metrics and the Go and process
	// collectors, and is what /metrics serves.
	Registry *prometheus.Registry
	// MaxBodyBytes bounds request bodies (413 beyond).
	MaxBodyBytes int64
	// Ready reports whether the gateway can serve (/readyz).
	Ready func(context.Context) error
}

type server struct {
	store   *state.Store
	applier *apply.Applier
	logger  *slog.Logger
	maxBody int64
	ready   func(context.Context) error
}

// New returns the gateway's router.
func New(o Options) (http.Handler, error) {
	if o.Store == nil || o.Bus == nil || o.Auth == nil || o.Registry == nil {
		return nil, errors.New("api: Store, Bus, Auth and Registry are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Ready == nil {
		o.Ready = func(context.Context) error { return nil }
	}
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if _, err := register(o.Registry, c); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, err
	}
	s := &server{
		store:   o.Store,
		applier: apply.New(o.Store, o.Bus),
		logger:  o.Logger,
		maxBody: o.MaxBodyBytes,
		ready:   o.Ready,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{}))

	v1 := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, authenticate(h, o.Auth, o.Logger))
	}
	v1("POST /v1/resources", s.apply)
	v1("DELETE /v1/resources", s.delete)
	v1("GET /v1/projects", s.listProjects)
	v1("GET /v1/projects/{project}", s.getProject)
	v1("GET /v1/projects/{project}/projectconfig", s.getProjectConfig)
	for _, k := range kinds {
		v1("GET /v1/projects/{project}/"+k.path, s.list(k))
		v1("GET /v1/projects/{project}/"+k.path+"/{name}", s.get(k))
	}
	return observe(mux, m, o.Logger), nil
}

// kind is one kind served under /v1/projects/{project}/<path>.
type kind struct {
	path string
	kind string
	// match filters lists by query parameters (nil: no filter).
	match func(q map[string][]string, obj model.Object) bool
}

var kinds = []kind{
	{path: "warehouses", kind: model.KindWarehouse},
	{path: "stages", kind: model.KindStage},
	{path: "freight", kind: model.KindFreight, match: matchFreight},
	{path: "promotions", kind: model.KindPromotion, match: matchPromotion},
	{path: "promotiontasks", kind: model.KindPromotionTask},
	{path: "analysistemplates", kind: model.KindAnalysisTemplate},
	{path: "secrets", kind: model.KindSecret},
}

func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := s.ready(ctx); err != nil {
		writeError(w, http.StatusServiceUnavailable, codeNotReady, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// internal answers 500 for an error that is not the client's, logging it.
func (s *server) internal(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	s.logger.Error("request failed", "method", r.Method, "route", r.Pattern, "err", err)
	writeError(w, http.StatusInternalServerError, codeInternal, "internal error; see the gateway log")
}
