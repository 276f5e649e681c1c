// Package remote holds what the metric providers that query a remote HTTP
// API share: decoding a provider's settings strictly, and one JSON call
// with bounded time and size and errors that name the endpoint.
package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// MaxBody bounds a response body read.
const MaxBody = 10 << 20

// Decode reads a provider's settings (kept as a map in the model) into
// out, refusing fields out does not know so a typo names the field.
func Decode(settings map[string]any, out any) error {
	raw, err := json.Marshal(settings)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	return nil
}

// Call is one HTTP request whose answer is JSON.
type Call struct {
	Method  string
	URL     string
	Header  http.Header
	Body    any // JSON-encoded when not nil; a []byte or string is sent as is
	Timeout time.Duration
}

// StatusError is an answer outside 2xx.
type StatusError struct {
	Method, URL string
	Code        int
	Body        string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s: status %d", e.Method, e.URL, e.Code)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Do sends c through client and decodes the JSON answer into out (nil:
// discarded). The URL in errors has no query string (it may hold a key).
func Do(ctx context.Context, client *http.Client, c Call, out any) error {
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	method := c.Method
	if method == "" {
		method = http.MethodGet
	}
	shown := c.URL
	if i := strings.IndexByte(shown, '?'); i >= 0 {
		shown = shown[:i]
	}
	var body io.Reader
	switch b := c.Body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("%s %s: encode body: %w", method, shown, err)
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, shown, err)
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded && c.Timeout > 0 {
			return fmt.Errorf("%s %s: timed out after %s", method, shown, c.Timeout)
		}
		return fmt.Errorf("%s %s: %w", method, shown, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return fmt.Errorf("%s %s: read body: %w", method, shown, err)
	}
	if len(raw) > MaxBody {
		return fmt.Errorf("%s %s: response body larger than %d bytes", method, shown, MaxBody)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return &StatusError{Method: method, URL: shown, Code: resp.StatusCode, Body: truncate(strings.TrimSpace(string(raw)), 200)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: response is not the expected JSON: %w", method, shown, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Secret reads a key of a project Secret through lookup, naming the
// provider field that needs it when there is no lookup.
func Secret(ctx context.Context, lookup func(ctx context.Context, name, key string) (string, error), name, key string) (string, error) {
	if lookup == nil {
		return "", fmt.Errorf("secret %q key %q: no secrets available", name, key)
	}
	return lookup(ctx, name, key)
}
