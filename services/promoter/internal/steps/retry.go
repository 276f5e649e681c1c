package steps

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
)

// Retries of one hosting API request by retryTransport (the SDK clients of
// the pull request steps): at most retryAttempts sends, waiting what the
// host's Retry-After asks for or, without one, retryBackoff doubled at each
// attempt. A wait longer than retryMaxWait is not waited: the answer goes
// back to the SDK, its error to the engine, which runs the step again
// later.
const (
	retryAttempts = 3
	retryBackoff  = time.Second
	retryMaxWait  = 10 * time.Second
)

// retryTransport sends a request again when the host answers it is rate
// limited (429, or 403 with Retry-After or X-RateLimit-Remaining: 0) or
// failing on its side (500, 502, 503, 504), or the connection fails. Only
// idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE) are sent again
// after a 5xx or a failed connection: a POST or PATCH answered 5xx may
// have been carried out. A rate-limited request was not carried out and is
// sent again whatever its method. A request refused by the egress policy
// is never sent again. Waits end with the request's context (the step's).
//
// A request body is sent again through Request.GetBody, which
// http.NewRequest sets for the in-memory bodies the SDKs send.
type retryTransport struct {
	next http.RoundTripper
}

// retrying returns a client like c whose requests go through
// retryTransport. Its Timeout (the egress policy's) bounds a request with
// its retries.
func retrying(c *http.Client) *http.Client {
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	return &http.Client{Transport: retryTransport{next: next}, Timeout: c.Timeout, CheckRedirect: c.CheckRedirect, Jar: c.Jar}
}

func (t retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	idempotent := req.Method == http.MethodGet || req.Method == http.MethodHead || req.Method == http.MethodOptions ||
		req.Method == http.MethodPut || req.Method == http.MethodDelete
	for attempt := 1; ; attempt++ {
		resp, err := t.next.RoundTrip(req)
		wait, again := retryWait(resp, err, idempotent, attempt)
		if !again || attempt == retryAttempts || wait > retryMaxWait || (req.Body != nil && req.GetBody == nil) {
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
		}
		timer := time.NewTimer(wait)
		select {
		case <-req.Context().Done():
			timer.Stop()
			return nil, req.Context().Err()
		case <-timer.C:
		}
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

// retryWait tells whether an answer (or a failed send) is to be retried
// and after how long.
func retryWait(resp *http.Response, err error, idempotent bool, attempt int) (time.Duration, bool) {
	backoff := retryBackoff << (attempt - 1)
	if err != nil {
		if errors.Is(err, egress.ErrRefused) || errors.Is(err, egress.ErrTooLarge) {
			return 0, false
		}
		return backoff, idempotent
	}
	h := resp.Header
	switch resp.StatusCode {
	case http.StatusTooManyRequests:
		return retryAfterOr(h, backoff), true
	case http.StatusForbidden:
		if h.Get("X-RateLimit-Remaining") == "0" || h.Get("Retry-After") != "" {
			return retryAfterOr(h, backoff), true
		}
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return retryAfterOr(h, backoff), idempotent
	}
	return 0, false
}

// retryAfterOr reads Retry-After (seconds or an HTTP date) or GitHub's
// X-RateLimit-Reset (Unix time), else def.
func retryAfterOr(h http.Header, def time.Duration) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s >= 0 {
			return time.Duration(s) * time.Second
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(time.Until(t), 0)
		}
	}
	if t, err := strconv.ParseInt(strings.TrimSpace(h.Get("X-RateLimit-Reset")), 10, 64); err == nil {
		return max(time.Until(time.Unix(t, 0)), 0)
	}
	return def
}
