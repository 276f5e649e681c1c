// Package api is the gateway's HTTP surface: the /v1 routes over the store,
// the actions people take, the live event stream, webhook receivers, the
// health and metrics endpoints and the OpenAPI document, and the
// middleware every request goes through (panic recovery, metrics, logging,
// authentication, authorization, JSON errors).
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/buildinfo"
	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/services/gateway/internal/apply"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
	"github.com/caravan-cd/caravan/services/gateway/internal/gitdiff"
	"github.com/caravan-cd/caravan/services/gateway/internal/notify"
)

// Options configure the handler.
type Options struct {
	Store *state.Store
	Bus   *events.Bus
	// Credentials finds the git credentials of diffs and commit logs (nil:
	// a Finder over Store, SSH hosts refused).
	Credentials *creds.Finder
	// JetStream serves the event stream (SSE) and dead letters; nil: the
	// Bus's.
	JetStream jetstream.JetStream
	Auth      auth.Authenticator
	// Sessions, when set, lets the web UI's session cookie stand in for
	// the Authorization header (unsafe methods also need its CSRF token).
	Sessions *auth.Sessions
	// Tokens manages API tokens; nil: over the store's token bucket.
	Tokens *auth.Tokens
	// Logger receives one debug line per request and handled errors.
	Logger *slog.Logger
	// Registry receives the HTTP metrics and the Go and process
	// collectors, and is what /metrics serves.
	Registry *prometheus.Registry
	// MaxBodyBytes bounds request bodies (413 beyond).
	MaxBodyBytes int64
	// Ready reports whether the gateway can serve (/readyz).
	Ready func(context.Context) error
	// ExternalURL prefixes webhook receiver paths in ProjectConfig status.
	ExternalURL string
	// Heartbeat is the interval of SSE heartbeat comments (default 15s).
	Heartbeat time.Duration
	// Webhooks bound receiver deliveries.
	Webhooks WebhookLimits
	// Index serves lists from memory when set (see NewIndex).
	Index *Index
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Stopping is closed when the gateway begins to shut down: event
	// streams then send a final "shutdown" event and end, so that
	// shutdown does not wait for their clients.
	Stopping <-chan struct{}
	// Version is what GET /version says of the server (build info).
	Version buildinfo.Info
	// Audit is the audit log every change is appended to; nil: the
	// JetStream's audit stream, declared with the default retention when
	// absent.
	Audit *audit.Log
	// Notifications serves the project's notification deliveries; nil:
	// the route answers an empty list.
	Notifications Notifications
}

// Notifications lists a project's notification deliveries.
type Notifications interface {
	List(ctx context.Context, project, status string) ([]notify.Delivery, error)
}

// WebhookLimits bound what one receiver accepts.
type WebhookLimits struct {
	// MaxBodyBytes bounds a delivery's body (413 beyond; default 1 MiB).
	MaxBodyBytes int64
	// Rate is the sustained deliveries per second per receiver (default 10).
	Rate float64
	// Burst is how many deliveries may come at once (default 20).
	Burst int
}

type server struct {
	store     *state.Store
	reg       *prometheus.Registry
	bus       *events.Bus
	js        jetstream.JetStream
	applier   *apply.Applier
	tokens    *auth.Tokens
	logger    *slog.Logger
	maxBody   int64
	ready     func(context.Context) error
	external  string
	heartbeat time.Duration
	hooks     WebhookLimits
	index     *Index
	now       func() time.Time
	// idemBeat and idemPending: see idempotencyBeat.
	idemBeat, idemPending time.Duration
	stopping              <-chan struct{}
	version               buildinfo.Info
	git                   *gitdiff.Reader
	creds                 *creds.Finder
	audit                 *audit.Log
	notes                 Notifications

	limitersMu sync.Mutex
	limiters   map[string]*limiter
	// known holds the webhook paths that matched a receiver, and when.
	known map[string]time.Time

	deadOnce sync.Once
	dead     *events.DeadLetters
	deadErr  error
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
	if o.JetStream == nil {
		o.JetStream = o.Bus.JetStream()
	}
	if o.Tokens == nil {
		o.Tokens = auth.NewTokens(o.Store.KV(state.Tokens), auth.ProjectUIDsOf(o.Store))
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.Webhooks.MaxBodyBytes <= 0 {
		o.Webhooks.MaxBodyBytes = 1 << 20
	}
	if o.Webhooks.Rate <= 0 {
		o.Webhooks.Rate = 10
	}
	if o.Webhooks.Burst <= 0 {
		o.Webhooks.Burst = 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Version.Version == "" {
		o.Version = buildinfo.Read()
	}
	if o.Audit == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		// Only for callers without a Log (tests): the gateway passes the
		// one of the stream caravan setup declared.
		log, err := audit.Setup(ctx, o.JetStream, audit.DefaultMaxAge, 1)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		o.Audit = log
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
	if o.Credentials == nil {
		o.Credentials = creds.NewFinder(creds.Store{Store: o.Store}, creds.Options{})
	}
	s := &server{
		store:       o.Store,
		reg:         o.Registry,
		bus:         o.Bus,
		js:          o.JetStream,
		applier:     apply.New(o.Store, o.Bus),
		tokens:      o.Tokens,
		logger:      o.Logger,
		maxBody:     o.MaxBodyBytes,
		ready:       o.Ready,
		external:    o.ExternalURL,
		heartbeat:   o.Heartbeat,
		hooks:       o.Webhooks,
		index:       o.Index,
		now:         o.Now,
		stopping:    o.Stopping,
		idemBeat:    idempotencyBeat,
		idemPending: idempotencyPending,
		version:     o.Version,
		limiters:    map[string]*limiter{},
		known:       map[string]time.Time{},
		git:         gitdiff.NewReader(256),
		creds:       o.Credentials,
		audit:       o.Audit,
		notes:       o.Notifications,
	}
	mux := http.NewServeMux()
	for _, rt := range s.routes(o.Registry) {
		var h http.Handler = rt.handler
		if rt.idempotent {
			h = s.idempotent(h)
		}
		if rt.access != public {
			h = s.authorize(rt.access, h)
		}
		// Inside authentication (the record names the caller), outside
		// authorization (refused attempts are recorded too).
		if rt.mutating() {
			h = s.audited(rt, h)
		}
		if rt.access != public {
			h = authenticate(h, o.Auth, o.Sessions, o.Logger)
		}
		if rt.method != http.MethodGet {
			h = traced(rt.method+" "+rt.path, h)
		}
		mux.Handle(rt.method+" "+rt.path, h)
	}
	return observe(mux, m, o.Logger), nil
}

// traced runs h in a server span named route, so the events a request
// publishes (a promotion, a refresh) continue its trace. Reads are not
// traced: they publish nothing.
func traced(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r, span := telemetry.StartHTTPSpan(r, route)
		defer span.End()
		h.ServeHTTP(w, r)
	})
}

// kind is one kind served under /v1/projects/{project}/<path>.
type kind struct {
	path string
	kind string
	// match filters lists by query parameters (nil: no filter).
	match func(q map[string][]string, obj model.Object) bool
	// filters are the query parameters match reads (documented).
	filters []string
}

var kinds = []kind{
	{path: "warehouses", kind: model.KindWarehouse},
	{path: "stages", kind: model.KindStage, match: matchStage, filters: []string{"warehouse"}},
	{path: "freight", kind: model.KindFreight, match: matchFreight, filters: []string{"warehouse", "stage", "verifiedIn", "currentlyIn", "inUse"}},
	{path: "promotions", kind: model.KindPromotion, match: matchPromotion, filters: []string{"stage", "phase", "freight"}},
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
