// Package client is a small client of Caravan's REST API v1: resources,
// reads, actions and the project event stream. It never logs; errors from
// the API come back as *Error with the API's code, message and details.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// DefaultTimeout bounds a request whose ctx has no deadline. The event
// stream is not bounded.
const DefaultTimeout = 30 * time.Second

// Client talks to one Caravan API server. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	token     string
	http      *http.Client
	userAgent string
}

// Option configures New.
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// New returns a client of the server at server (e.g. http://127.0.0.1:8080)
// sending token as its bearer token.
func New(server, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(server, "/"))
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %w", server, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http(s)://host[:port]", server)
	}
	c := &Client{base: u, token: token, http: &http.Client{}, userAgent: "caravan-cli"}
	for _, opt := range opts {
		opt(c)
	}
	return c, nil
}

// Server is the server's base URL.
func (c *Client) Server() string { return c.base.String() }

// Error is an error answer of the API.
type Error struct {
	// Status is the HTTP status code.
	Status  int          `json:"-"`
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Details model.Issues `json:"details,omitempty"`
}

// Error formats the message followed by one line per detail.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	if e.Message == "" {
		fmt.Fprintf(&b, "HTTP %d %s", e.Status, http.StatusText(e.Status))
	}
	for _, d := range e.Details {
		b.WriteString("\n  ")
		b.WriteString(d.String())
	}
	return b.String()
}

// IsNotFound reports whether err is an API answer 404.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// request is one call.
type request struct {
	method      string
	path        string // escaped, below /
	query       url.Values
	contentType string
	body        []byte
	header      http.Header
}

func (c *Client) newRequest(ctx context.Context, r request) (*http.Request, error) {
	u := *c.base
	raw := strings.TrimRight(c.base.EscapedPath(), "/") + r.path
	p, err := url.PathUnescape(raw)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", raw, err)
	}
	u.Path, u.RawPath = p, raw
	u.RawQuery = r.query.Encode()
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	return req, nil
}

// do sends the request and decodes a 2xx JSON answer into out (unless out
// is nil); any other answer becomes *Error.
func (c *Client) do(ctx context.Context, r request, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	req, err := c.newRequest(ctx, r)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", r.method, req.URL.Redacted(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", r.method, req.URL.Redacted(), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(resp.StatusCode, b)
	}
	if out == nil || len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], b...)
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", r.method, req.URL.Redacted(), err)
	}
	return nil
}

func decodeError(status int, body []byte) error {
	e := &Error{Status: status}
	if err := json.Unmarshal(body, e); err != nil || e.Message == "" {
		msg := strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		if msg == "" {
			msg = http.StatusText(status)
		}
		e.Message = fmt.Sprintf("HTTP %d: %s", status, msg)
	}
	return e
}

// esc escapes one path segment.
func esc(s string) string { return url.PathEscape(s) }

// projectPath is /v1/projects/{project} followed by the segments.
func projectPath(project string, segments ...string) string {
	var b strings.Builder
	b.WriteString("/v1/projects/")
	b.WriteString(esc(project))
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(esc(s))
	}
	return b.String()
}
