package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// recorder remembers the status a handler wrote. For requests the mux
// matched no pattern for (r.Pattern == ""), it turns the mux's plain-text
// 404 and 405 answers into JSON errors.
type recorder struct {
	http.ResponseWriter
	r       *http.Request
	status  int
	swallow bool
}

func (rec *recorder) WriteHeader(status int) {
	if rec.status != 0 {
		return
	}
	rec.status = status
	if rec.r.Pattern == "" && (status == http.StatusNotFound || status == http.StatusMethodNotAllowed) {
		rec.swallow = true
		h := rec.Header()
		h.Del("Content-Length")
		if status == http.StatusNotFound {
			writeError(rec.ResponseWriter, status, codeNotFound, fmt.Sprintf("no route for %s %s", rec.r.Method, rec.r.URL.Path))
		} else {
			writeError(rec.ResponseWriter, status, codeMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", rec.r.Method, rec.r.URL.Path, h.Get("Allow")))
		}
		return
	}
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	if rec.swallow {
		return len(b), nil
	}
	return rec.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// metrics counts and times requests by route pattern.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caravan_http_requests_total",
			Help: "HTTP requests served by the gateway, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "caravan_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route pattern and method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
	}
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same description (a second handler on the same registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}

// observe is the outermost middleware: it recovers panics (500, logged
// once), records metrics and logs one debug line per request. It never logs
// bodies or headers.
func observe(next http.Handler, m *metrics, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, r: r}
		defer func() {
			if v := recover(); v != nil {
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				logger.Error("panic serving request", "method", r.Method, "route", r.Pattern, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if rec.status == 0 {
					writeError(rec, http.StatusInternalServerError, codeInternal, "internal error")
				}
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			d := time.Since(start)
			m.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(route, r.Method).Observe(d.Seconds())
			logger.Debug("request", "method", r.Method, "route", route, "status", status, "duration", d)
		}()
		next.ServeHTTP(rec, r)
	})
}

// authenticate requires a bearer token the Authenticator accepts: from the
// Authorization header or, without one, from the web UI's session cookie
// (sessions may be nil), whose unsafe requests must carry its CSRF token.
func authenticate(next http.Handler, a auth.Authenticator, sessions *auth.Sessions, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := auth.BearerToken(r)
		if token == "" && r.Header.Get("Authorization") == "" && sessions != nil {
			var err error
			if token, err = sessions.Token(r); err != nil {
				forbidden(w, "a request with the session cookie must carry the session's CSRF token (X-CSRF-Token) and come from this site")
				return
			}
		}
		p, err := a.Authenticate(r.Context(), token)
		if errors.Is(err, auth.ErrUnauthenticated) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="caravan"`)
			writeError(w, http.StatusUnauthorized, codeUnauthorized, "a valid bearer token is required (Authorization: Bearer <token>)")
			return
		}
		if err != nil {
			logger.Error("authenticate", "route", r.Pattern, "err", err)
			writeError(w, http.StatusInternalServerError, codeInternal, "cannot check the token")
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	})
}
