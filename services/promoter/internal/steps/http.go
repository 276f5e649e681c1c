package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/model"
	"go.yaml.in/yaml/v3"
)

type nameValue struct {
	Name  string `json:"name" step:"required"`
	Value string `json:"value"`
}

type httpConfig struct {
	Method      string      `json:"method"`
	URL         string      `json:"url" step:"required"`
	Headers     []nameValue `json:"headers"`
	QueryParams []nameValue `json:"queryParams"`
	Body        string      `json:"body"`
	// BodyFromFile is a file of the work dir sent as the body.
	BodyFromFile string         `json:"bodyFromFile"`
	Timeout      model.Duration `json:"timeout"`
	// PollInterval is how long to wait before asking again while neither
	// expression matches.
	PollInterval model.Duration `json:"pollInterval"`
	// ResponseContentType overrides the response's Content-Type for
	// parsing the body: application/json, application/yaml or text/plain.
	ResponseContentType string `json:"responseContentType"`
	SuccessExpression   string `json:"successExpression"`
	FailureExpression   string `json:"failureExpression"`
	// ErrorExpression gives the message of a failed request.
	ErrorExpression string `json:"errorExpression"`
	Outputs         []struct {
		Name           string `json:"name" step:"required"`
		FromExpression string `json:"fromExpression" step:"required"`
	} `json:"outputs"`
	InsecureSkipTLSVerify bool `json:"insecureSkipTLSVerify"`
}

// maxResponse bounds the response body the http step reads.
const maxResponse = 2 << 20

// defaultDownloadTimeout bounds an http-download without a timeout
// (Kargo's default).
const defaultDownloadTimeout = 5 * time.Minute

func (c *httpConfig) request(ctx context.Context) (*http.Request, error) {
	if err := model.CheckHTTPURL(c.URL); err != nil {
		return nil, Terminal(fmt.Errorf("url: %w", err))
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, Terminal(fmt.Errorf("url %q: %w", c.URL, err))
	}
	q := u.Query()
	for _, p := range c.QueryParams {
		q.Add(p.Name, p.Value)
	}
	u.RawQuery = q.Encode()
	method := c.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if c.Body != "" {
		body = strings.NewReader(c.Body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, Terminal(err)
	}
	for _, h := range c.Headers {
		req.Header.Add(h.Name, h.Value)
	}
	return req, nil
}

// client is the egress policy's client (pull request APIs).
func (sc *Context) client() *http.Client { return sc.Egress.Client(false) }

// send sends req through the egress policy's client. A refused address
// and a response over the size limit are terminal: retrying cannot help.
func (sc *Context) send(req *http.Request, insecure bool) (*http.Response, error) {
	resp, err := sc.Egress.Client(insecure).Do(req)
	if err != nil {
		return nil, egressError(err)
	}
	return resp, nil
}

func egressError(err error) error {
	if errors.Is(err, egress.ErrRefused) || errors.Is(err, egress.ErrTooLarge) {
		return Terminal(err)
	}
	return err
}

// httpStep sends a request and judges the response with
// successExpression / failureExpression (by default: a 2xx status
// succeeds). Neither matching means "not yet": the step is Running and is
// polled again. The expressions see `response` {status, header(name),
// headers, body}.
func httpStep(ctx context.Context, sc *Context, cfg *httpConfig) (Result, error) {
	if cfg.BodyFromFile != "" {
		if cfg.Body != "" {
			return Result{}, Terminal(errors.New("body and bodyFromFile are mutually exclusive"))
		}
		b, err := sc.readFile(cfg.BodyFromFile)
		if err != nil {
			return Result{}, err
		}
		cfg.Body = string(b)
	}
	req, err := cfg.request(ctx)
	if err != nil {
		return Result{}, err
	}
	timeout := cfg.Timeout.Duration
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := sc.send(req.WithContext(rctx), cfg.InsecureSkipTLSVerify)
	if err != nil {
		return Result{}, fmt.Errorf("http %s: %w", req.URL.Redacted(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return Result{}, fmt.Errorf("read response: %w", egressError(err))
	}
	if len(raw) > maxResponse {
		return Result{}, Terminal(fmt.Errorf("http %s: response body larger than %d bytes, the most the http step reads", req.URL.Redacted(), maxResponse))
	}
	body, err := parseBody(raw, cfg.ResponseContentType, resp.Header.Get("Content-Type"))
	if err != nil {
		return Result{}, Terminal(err)
	}
	headers := map[string]any{}
	for k, v := range resp.Header {
		headers[k] = strings.Join(v, ", ")
	}
	vars := map[string]any{
		"response": map[string]any{
			"status":  float64(resp.StatusCode),
			"headers": headers,
			"body":    body,
			"header":  func(name string) string { return resp.Header.Get(name) },
		},
	}
	eval := func(code string) (bool, error) {
		v, err := sc.Eval(code, vars)
		if err != nil {
			return false, Terminal(err)
		}
		b, ok := v.(bool)
		if !ok {
			return false, Terminal(fmt.Errorf("expression %q is not a boolean", code))
		}
		return b, nil
	}
	out := map[string]any{}
	for _, o := range cfg.Outputs {
		v, err := sc.Eval(o.FromExpression, vars)
		if err != nil {
			return Result{}, Terminal(fmt.Errorf("output %s: %w", o.Name, err))
		}
		out[o.Name] = v
	}
	if cfg.FailureExpression != "" {
		failed, err := eval(cfg.FailureExpression)
		if err != nil {
			return Result{}, err
		}
		if failed {
			msg := fmt.Sprintf("HTTP %d matched the failure expression", resp.StatusCode)
			if cfg.ErrorExpression != "" {
				v, err := sc.Eval(cfg.ErrorExpression, vars)
				if err != nil {
					return Result{}, Terminal(fmt.Errorf("errorExpression: %w", err))
				}
				msg = fmt.Sprint(v)
			}
			return Result{Status: model.PromotionStepStatusFailed, Output: out, Message: msg}, nil
		}
	}
	succeeded := resp.StatusCode >= 200 && resp.StatusCode < 300
	if cfg.SuccessExpression != "" {
		if succeeded, err = eval(cfg.SuccessExpression); err != nil {
			return Result{}, err
		}
	}
	switch {
	case succeeded:
		return Result{Output: out}, nil
	case cfg.SuccessExpression == "" && cfg.FailureExpression == "":
		return Result{Status: model.PromotionStepStatusFailed, Output: out, Message: fmt.Sprintf("HTTP %d", resp.StatusCode)}, nil
	}
	return Result{Status: StatusRunning, Output: out, PollAfter: cfg.PollInterval.Duration,
		Message: fmt.Sprintf("HTTP %d: waiting for the success expression", resp.StatusCode)}, nil
}

// parseBody reads a response body as its content type says (override,
// else the response's header): JSON, YAML or text; a body of another
// type is JSON when it parses as JSON, else text.
func parseBody(raw []byte, override, header string) (any, error) {
	ct := override
	if ct == "" {
		ct, _, _ = mime.ParseMediaType(header)
	}
	switch ct {
	case "text/plain":
		return string(raw), nil
	case "application/yaml", "application/x-yaml", "text/yaml":
		var v any
		if err := yaml.Unmarshal(raw, &v); err != nil {
			if override != "" {
				return nil, fmt.Errorf("response body is not YAML: %w", err)
			}
			return string(raw), nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		var out any
		return out, json.Unmarshal(b, &out)
	}
	var parsed any
	if err := json.Unmarshal(raw, &parsed); err != nil {
		if override == "application/json" {
			return nil, fmt.Errorf("response body is not JSON: %w", err)
		}
		return string(raw), nil
	}
	return parsed, nil
}

type httpDownloadConfig struct {
	URL            string      `json:"url" step:"required"`
	OutPath        string      `json:"outPath" step:"required"`
	Headers        []nameValue `json:"headers"`
	QueryParams    []nameValue `json:"queryParams"`
	AllowOverwrite bool        `json:"allowOverwrite"`
	// Timeout bounds the whole download; 5 minutes when empty, as
	// Kargo's.
	Timeout               model.Duration `json:"timeout"`
	InsecureSkipTLSVerify bool           `json:"insecureSkipTLSVerify"`
}

// httpDownload writes a URL's content to outPath.
func httpDownload(ctx context.Context, sc *Context, cfg *httpDownloadConfig) (Result, error) {
	if err := sc.newPath(cfg.OutPath, cfg.AllowOverwrite); err != nil {
		return Result{}, err
	}
	hc := httpConfig{URL: cfg.URL, Headers: cfg.Headers, QueryParams: cfg.QueryParams}
	req, err := hc.request(ctx)
	if err != nil {
		return Result{}, err
	}
	// The egress policy bounds time and size too (CARAVAN_EGRESS_TIMEOUT,
	// CARAVAN_EGRESS_MAX_BYTES); the step's timeout can only shorten it.
	timeout := cfg.Timeout.Duration
	if timeout <= 0 {
		timeout = defaultDownloadTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := sc.send(req.WithContext(rctx), cfg.InsecureSkipTLSVerify)
	if err != nil {
		return Result{}, fmt.Errorf("download %s: %w", req.URL.Redacted(), err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return Result{}, fmt.Errorf("download %s: HTTP %d", req.URL.Redacted(), resp.StatusCode)
	}
	f, err := sc.Workspace.Dir.Create(cfg.OutPath, 0o644)
	if err != nil {
		return Result{}, fsError(fmt.Errorf("create %s: %w", cfg.OutPath, err))
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		_ = sc.Workspace.Dir.RemoveAll(cfg.OutPath) // no partial file
		return Result{}, fmt.Errorf("download %s: %w", req.URL.Redacted(), egressError(err))
	}
	return Result{}, f.Close()
}
