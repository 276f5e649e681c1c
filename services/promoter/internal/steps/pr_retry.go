package steps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
)

// sdkClient is the HTTP client the hosts' SDKs (go-github, GitLab's
// client-go, Gitea's SDK) are given: the egress policy's client (its
// dialer, TLS settings and body limit) with retryTransport between the SDK
// and it. Each attempt takes at most the policy's timeout; the retries
// together are bounded by ctx of the call.
func (sc *Context) sdkClient() *http.Client {
	base := sc.client()
	return &http.Client{
		Transport:     &retryTransport{next: base.Transport, timeout: base.Timeout},
		CheckRedirect: base.CheckRedirect,
		Jar:           base.Jar,
	}
}

// retryTransport sends a request again when the host asks for it, the way
// apiClient.send does for the hand-written hosts:
//
//   - a rate limit (429, or 403 with X-RateLimit-Remaining: 0 or a
//     Retry-After: GitHub's primary and secondary limits), whatever the
//     method, since the host refused the request without acting on it;
//   - 500, 502, 503, 504 and network errors, for GET and HEAD only: a POST
//     that opens a pull request is not sent twice (the engine retries the
//     step, which finds the one opened);
//
// at most apiAttempts times, after the wait the host asks for (Retry-After,
// or at a limit X-RateLimit-Reset / GitLab's RateLimit-Reset), else a short
// backoff. A wait longer than maxRetryWait, or than what is left of the
// request's context, is not waited: the response goes back to the SDK and
// its error to the engine, which retries the step later.
type retryTransport struct {
	next    http.RoundTripper
	timeout time.Duration // of one attempt; 0: none
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 1; ; attempt++ {
		r := req
		if attempt > 1 {
			r = req.Clone(ctx)
			if req.GetBody != nil {
				body, err := req.GetBody()
				if err != nil {
					return nil, err
				}
				r.Body = body
			}
		}
		resp, err := t.once(r)
		wait, again := retryWait(req.Method, resp, err, attempt)
		if !again || !replayable || attempt >= apiAttempts || wait > maxRetryWait {
			return resp, err
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return resp, err
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// once sends one attempt, bounded by t.timeout until its body is closed.
func (t *retryTransport) once(req *http.Request) (*http.Response, error) {
	if t.timeout <= 0 {
		return t.next.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody ends an attempt's context when its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// retryWait tells whether the answer to attempt of a method is one to
// retry, and after how long.
func retryWait(method string, resp *http.Response, err error, attempt int) (time.Duration, bool) {
	idempotent := method == http.MethodGet || method == http.MethodHead
	if err != nil {
		if !idempotent || errors.Is(err, egress.ErrRefused) || errors.Is(err, egress.ErrTooLarge) ||
			errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return 0, false
		}
		return backoff(attempt), true
	}
	if rateLimited(resp) {
		if d, ok := hostWait(resp.StatusCode, resp.Header); ok {
			return d, true
		}
		return backoff(attempt), true
	}
	switch resp.StatusCode {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		if !idempotent {
			return 0, false
		}
		if d, ok := hostWait(resp.StatusCode, resp.Header); ok {
			return d, true
		}
		return backoff(attempt), true
	}
	return 0, false
}

// rateLimited: 429, or a 403 that GitHub marks as a primary
// (X-RateLimit-Remaining: 0) or secondary (Retry-After) rate limit.
func rateLimited(resp *http.Response) bool {
	return resp.StatusCode == http.StatusTooManyRequests ||
		(resp.StatusCode == http.StatusForbidden && (resp.Header.Get("X-RateLimit-Remaining") == "0" || resp.Header.Get("Retry-After") != ""))
}

// backoff is the wait before attempt+1 when the host does not say: 0.5 s,
// 1 s, 2 s, … with up to a quarter more at random.
func backoff(attempt int) time.Duration {
	d := 500 * time.Millisecond << min(attempt-1, 5)
	return d + rand.N(d/4+1)
}

// hostWait is the wait a host asks for: Retry-After (seconds or an HTTP
// date) on any answer; on a rate limit (429, 403) also the Unix time of
// GitHub's X-RateLimit-Reset or GitLab's RateLimit-Reset. ok is false when
// the host does not say.
func hostWait(status int, h http.Header) (d time.Duration, ok bool) {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s >= 0 {
			return time.Duration(s) * time.Second, true
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(time.Until(t), 0), true
		}
	}
	if status != http.StatusTooManyRequests && status != http.StatusForbidden {
		return 0, false
	}
	for _, k := range []string{"X-RateLimit-Reset", "RateLimit-Reset"} {
		if t, err := strconv.ParseInt(strings.TrimSpace(h.Get(k)), 10, 64); err == nil {
			return max(time.Until(time.Unix(t, 0)), 0), true
		}
	}
	return 0, false
}

// hostError is err of the call op to a host's SDK, whose HTTP answer was
// resp (nil without one), made fit for the engine: terminal where
// retrying cannot help (an egress refusal, an over-long body, a 4xx other
// than 405, 409 and a rate limit), and with secret (the token) cut out of
// its text wherever an SDK might have echoed it.
func hostError(op string, resp *http.Response, err error, secret string) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s: %w", op, err)
	switch {
	case errors.Is(err, egress.ErrRefused) || errors.Is(err, egress.ErrTooLarge):
		err = Terminal(err)
	case resp != nil && rateLimited(resp):
		err = fmt.Errorf("%w (rate limited)", err)
	case resp != nil && resp.StatusCode >= 400 && resp.StatusCode < 500 &&
		resp.StatusCode != http.StatusConflict && resp.StatusCode != http.StatusMethodNotAllowed:
		err = Terminal(err)
	}
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redactedError{err: err, secret: secret}
}

// redactedError is err with its secret replaced in its text; errors.Is and
// errors.As still see err.
type redactedError struct {
	err    error
	secret string
}

func (e *redactedError) Error() string {
	return strings.ReplaceAll(e.err.Error(), e.secret, "[redacted]")
}

func (e *redactedError) Unwrap() error { return e.err }
