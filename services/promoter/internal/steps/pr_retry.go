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

// Retries of one request to a Git host's API (retryTransport).
const (
	// apiAttempts is how many times a request is sent at most.
	apiAttempts = 3
	// maxRetryWait is the longest wait between two sends; a longer one is
	// left to the engine, which runs the step again later.
	maxRetryWait = 10 * time.Second
	// maxPages bounds how many pages of a list are read.
	maxPages = 50
)

// sdkClient is the HTTP client every pull request host's SDK is given
// (go-github, GitLab's client-go, Gitea's SDK, go-bitbucket, the Azure
// DevOps SDK): the egress policy's client with retryTransport on it.
func (sc *Context) sdkClient() *http.Client { return retrying(sc.client()) }

// retrying returns a client like c (its dialer, TLS settings, body limit,
// redirect policy) whose requests go through retryTransport. c's Timeout
// bounds each attempt; the retries together are bounded by the context of
// the request (the step's).
func retrying(c *http.Client) *http.Client {
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	return &http.Client{Transport: &retryTransport{next: next, timeout: c.Timeout}, CheckRedirect: c.CheckRedirect, Jar: c.Jar}
}

// retryTransport sends a request again when the host asks for it:
//
//   - a rate limit (429, or 403 with X-RateLimit-Remaining: 0 or a
//     Retry-After: GitHub's primary and secondary limits), whatever the
//     method, since the host refused the request without acting on it;
//   - 500, 502, 503, 504 and failed connections, for GET, HEAD, OPTIONS
//     and DELETE only: a POST, PATCH or PUT may have been carried out (the
//     only PUTs sent are GitHub's and GitLab's merges), so it is not sent
//     twice; the engine retries the step, which finds what was done;
//
// at most apiAttempts times, after the wait the host asks for (Retry-After,
// or at a rate limit X-RateLimit-Reset / RateLimit-Reset), else a short
// backoff. A wait longer than maxRetryWait, or than what is left of the
// request's context, is not waited: the answer goes back to the SDK and
// its error to the engine. A request the egress policy refuses, or whose
// answer is over its size limit, is never sent again. A body is sent again
// through Request.GetBody, which http.NewRequest sets for the in-memory
// bodies the SDKs send; a request without one is sent once.
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
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
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
	idempotent := method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions || method == http.MethodDelete
	if err != nil {
		if !idempotent || errors.Is(err, egress.ErrRefused) || errors.Is(err, egress.ErrTooLarge) ||
			errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return 0, false
		}
		return backoff(attempt), true
	}
	if rateLimited(resp.StatusCode, resp.Header) {
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
// (X-RateLimit-Remaining: 0) or secondary (Retry-After) rate limit. h may
// be nil (an SDK that keeps only the status).
func rateLimited(status int, h http.Header) bool {
	return status == http.StatusTooManyRequests ||
		(status == http.StatusForbidden && (h.Get("X-RateLimit-Remaining") == "0" || h.Get("Retry-After") != ""))
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
// resp (nil without one), made fit for the engine (statusError; an egress
// refusal or an over-long body is terminal), with secret (the token) cut
// out of its text wherever an SDK might have echoed it.
func hostError(op string, resp *http.Response, err error, secret string) error {
	if err == nil {
		return nil
	}
	err = egressError(fmt.Errorf("%s: %w", op, err))
	if resp != nil && !IsTerminal(err) {
		err = statusError(err, resp.StatusCode, resp.Header)
	}
	return redact(err, secret)
}

// statusError marks err, the error of an answer with status and headers h
// (nil when the SDK keeps none), for the engine: a rate limit says so and
// is retried later; a 4xx other than 405, 408 and 409 is terminal, since
// sending the same request again cannot help.
func statusError(err error, status int, h http.Header) error {
	switch {
	case rateLimited(status, h):
		return fmt.Errorf("%w (rate limited)", err)
	case status >= 400 && status < 500 && status != http.StatusMethodNotAllowed &&
		status != http.StatusRequestTimeout && status != http.StatusConflict:
		return Terminal(err)
	}
	return err
}

// redact is err with each of secrets replaced in its text; errors.Is and
// errors.As still see err.
func redact(err error, secrets ...string) error {
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			return &redactedError{err: err, secrets: secrets}
		}
	}
	return err
}

// redactedError is err with its secrets replaced in its text.
type redactedError struct {
	err     error
	secrets []string
}

func (e *redactedError) Error() string { return scrub(e.err.Error(), e.secrets) }

func (e *redactedError) Unwrap() error { return e.err }

// scrub replaces each of secrets in msg.
func scrub(msg string, secrets []string) string {
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return msg
}
