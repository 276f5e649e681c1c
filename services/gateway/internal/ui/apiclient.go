package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"github.com/caravan-cd/caravan/pkg/model"
)

// apiClient calls the gateway's public API in process, with the signed-in
// user's bearer token: the UI reads only what the API serves to that user,
// so it shows exactly what the CLI would.
type apiClient struct {
	h     http.Handler
	token string
}

// apiError is an error answer of the API.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// memWriter is an in-memory http.ResponseWriter.
type memWriter struct {
	h      http.Header
	status int
	body   *bytes.Buffer
}

func (m *memWriter) Header() http.Header { return m.h }
func (m *memWriter) WriteHeader(s int) {
	if m.status == 0 {
		m.status = s
	}
}

func (m *memWriter) Write(b []byte) (int, error) {
	if m.status == 0 {
		m.status = http.StatusOK
	}
	return m.body.Write(b)
}

var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// get reads path (with query) into out.
func (c apiClient) get(ctx context.Context, path string, q url.Values, out any) error {
	u := path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	r.RemoteAddr = "ui"
	r.Header.Set("Authorization", "Bearer "+c.token)
	buf := bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufs.Put(buf)
	w := &memWriter{h: http.Header{}, body: buf}
	c.h.ServeHTTP(w, r)
	if w.status >= 300 {
		e := &apiError{Status: w.status}
		if json.Unmarshal(buf.Bytes(), e) != nil || e.Message == "" {
			e.Message = http.StatusText(w.status)
		}
		return e
	}
	if err := json.Unmarshal(buf.Bytes(), out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

type listOf[T any] struct {
	Items    []T `json:"items"`
	Metadata struct {
		Continue string `json:"continue"`
	} `json:"metadata"`
}

// all reads every page of a list (limit 1000 each).
func all[T any](ctx context.Context, c apiClient, path string, q url.Values) ([]T, error) {
	if q == nil {
		q = url.Values{}
	}
	q.Set("limit", "1000")
	var out []T
	for {
		var l listOf[T]
		if err := c.get(ctx, path, q, &l); err != nil {
			return nil, err
		}
		out = append(out, l.Items...)
		if l.Metadata.Continue == "" {
			return out, nil
		}
		q.Set("continue", l.Metadata.Continue)
	}
}

// page reads one page of a list.
func page[T any](ctx context.Context, c apiClient, path string, q url.Values) ([]T, string, error) {
	var l listOf[T]
	if err := c.get(ctx, path, q, &l); err != nil {
		return nil, "", err
	}
	return l.Items, l.Metadata.Continue, nil
}

// whoami is GET /v1/whoami.
type whoami struct {
	Name    string `json:"name"`
	Admin   bool   `json:"admin"`
	Project string `json:"project"`
	Role    string `json:"role"`
}

func projectPath(project string, parts ...string) string {
	p := "/v1/projects/" + url.PathEscape(project)
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

func (c apiClient) whoami(ctx context.Context, project string) (whoami, error) {
	var w whoami
	q := url.Values{}
	if project != "" {
		q.Set("project", project)
	}
	err := c.get(ctx, "/v1/whoami", q, &w)
	return w, err
}

func (c apiClient) stages(ctx context.Context, project string) ([]model.Stage, error) {
	return all[model.Stage](ctx, c, projectPath(project, "stages"), nil)
}

func (c apiClient) warehouses(ctx context.Context, project string) ([]model.Warehouse, error) {
	return all[model.Warehouse](ctx, c, projectPath(project, "warehouses"), nil)
}
