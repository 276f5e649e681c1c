package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/caravan-cd/caravan/pkg/buildinfo"
	"github.com/caravan-cd/caravan/pkg/model"
)

// Result is the outcome of applying or deleting one document.
type Result struct {
	Kind    string `json:"kind"`
	Project string `json:"project,omitempty"`
	Name    string `json:"name"`
	Action  string `json:"action"`
}

// Outcome is the answer to an apply or a delete.
type Outcome struct {
	Results  []Result     `json:"results"`
	Warnings model.Issues `json:"warnings,omitempty"`
}

// Apply sends body (multi-document YAML, or JSON) to POST /v1/resources.
func (c *Client) Apply(ctx context.Context, body []byte) (*Outcome, error) {
	var out Outcome
	err := c.do(ctx, request{method: http.MethodPost, path: "/v1/resources", contentType: "application/yaml", body: body}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Delete sends body to DELETE /v1/resources.
func (c *Client) Delete(ctx context.Context, body []byte) (*Outcome, error) {
	var out Outcome
	err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/resources", contentType: "application/yaml", body: body}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Get reads one object at path (escaped, e.g. /v1/projects/demo) as JSON.
func (c *Client) Get(ctx context.Context, path string, query url.Values) (json.RawMessage, error) {
	var raw json.RawMessage
	if err := c.do(ctx, request{method: http.MethodGet, path: path, query: query}, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// list is the API's list shape.
type list struct {
	Items    []json.RawMessage `json:"items"`
	Metadata struct {
		Continue string `json:"continue"`
	} `json:"metadata"`
}

// List reads every page of the list at path.
func (c *Client) List(ctx context.Context, path string, query url.Values) ([]json.RawMessage, error) {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	q.Set("limit", strconv.Itoa(1000))
	var all []json.RawMessage
	for {
		var raw json.RawMessage
		if err := c.do(ctx, request{method: http.MethodGet, path: path, query: q}, &raw); err != nil {
			return nil, err
		}
		raw = bytes.TrimSpace(raw)
		if len(raw) > 0 && raw[0] == '[' { // a bare array
			var items []json.RawMessage
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("GET %s: decode answer: %w", path, err)
			}
			return append(all, items...), nil
		}
		var l list
		if err := json.Unmarshal(raw, &l); err != nil {
			return nil, fmt.Errorf("GET %s: decode answer: %w", path, err)
		}
		all = append(all, l.Items...)
		if l.Metadata.Continue == "" {
			return all, nil
		}
		q.Set("continue", l.Metadata.Continue)
	}
}

// ProjectPath is the escaped path /v1/projects/{project}/{segments...}.
func ProjectPath(project string, segments ...string) string {
	return projectPath(project, segments...)
}

// Freight reads one piece of freight by name or alias.
func (c *Client) Freight(ctx context.Context, project, nameOrAlias string) (*model.Freight, error) {
	var f model.Freight
	if err := c.do(ctx, request{method: http.MethodGet, path: projectPath(project, "freight", nameOrAlias)}, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// Promotion reads one promotion.
func (c *Client) Promotion(ctx context.Context, project, name string) (*model.Promotion, error) {
	var p model.Promotion
	if err := c.do(ctx, request{method: http.MethodGet, path: projectPath(project, "promotions", name)}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// PromoteRequest says what to promote: a piece of freight (name or
// alias), or the newest freight of a warehouse available to the stage.
type PromoteRequest struct {
	Freight   string `json:"freight,omitempty"`
	Warehouse string `json:"warehouse,omitempty"`
	// WindowOverride, when set, lets the promotion run while promotion
	// windows are closed (project admins; the reason is recorded).
	WindowOverride *WindowOverride `json:"windowOverride,omitempty"`
}

// WindowOverride says why a promotion may not wait for its windows.
type WindowOverride struct {
	Reason string `json:"reason"`
}

// Promote asks to promote a stage (POST …/stages/{stage}/promotions) and
// returns the Promotion created.
func (c *Client) Promote(ctx context.Context, project, stage string, pr PromoteRequest) (*model.Promotion, error) {
	body, err := json.Marshal(pr)
	if err != nil {
		return nil, err
	}
	var p model.Promotion
	err = c.do(ctx, request{method: http.MethodPost, path: projectPath(project, "stages", stage, "promotions"), contentType: "application/json", body: body}, &p)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// PromoteDryRun asks what promoting the stage would do (POST
// …/promotions?dryRun=true): the steps run up to the first with effects
// outside the work tree and each git repository's diff; nothing is stored.
func (c *Client) PromoteDryRun(ctx context.Context, project, stage string, pr PromoteRequest) (*model.PromotionDryRun, error) {
	body, err := json.Marshal(pr)
	if err != nil {
		return nil, err
	}
	var d model.PromotionDryRun
	err = c.do(ctx, request{method: http.MethodPost, path: projectPath(project, "stages", stage, "promotions"), query: url.Values{"dryRun": {"true"}}, contentType: "application/json", body: body}, &d)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// Approve approves a piece of freight (by name) for a stage.
func (c *Client) Approve(ctx context.Context, project, freight, stage string) (*model.Freight, error) {
	body, err := json.Marshal(map[string]string{"stage": stage})
	if err != nil {
		return nil, err
	}
	var f model.Freight
	err = c.do(ctx, request{method: http.MethodPost, path: projectPath(project, "freight", freight, "approve"), contentType: "application/json", body: body}, &f)
	if err != nil {
		return nil, err
	}
	return &f, nil
}

// Refresh asks discovery to discover a warehouse now; reason (optional)
// says why in the event.
func (c *Client) Refresh(ctx context.Context, project, warehouse, reason string) error {
	r := request{method: http.MethodPost, path: projectPath(project, "warehouses", warehouse, "refresh")}
	if reason != "" {
		body, err := json.Marshal(map[string]string{"reason": reason})
		if err != nil {
			return err
		}
		r.contentType, r.body = "application/json", body
	}
	return c.do(ctx, r, nil)
}

// ResumeAutoPromotion lifts a stage's auto-promotion holds.
func (c *Client) ResumeAutoPromotion(ctx context.Context, project, stage string) error {
	return c.do(ctx, request{method: http.MethodPost, path: projectPath(project, "stages", stage, "auto-promotion", "resume")}, nil)
}

// Version reads the server's build information (GET /version, no token
// needed).
func (c *Client) Version(ctx context.Context) (buildinfo.Info, error) {
	var v buildinfo.Info
	err := c.do(ctx, request{method: http.MethodGet, path: "/version"}, &v)
	return v, err
}

// Verify asks to re-verify a stage's current freight.
func (c *Client) Verify(ctx context.Context, project, stage string) error {
	return c.do(ctx, request{method: http.MethodPost, path: projectPath(project, "stages", stage, "verification")}, nil)
}

// AbortVerification aborts a stage's running verification.
func (c *Client) AbortVerification(ctx context.Context, project, stage string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: projectPath(project, "stages", stage, "verification")}, nil)
}

// AbortPromotion asks to abort a promotion.
func (c *Client) AbortPromotion(ctx context.Context, project, promotion string) error {
	return c.do(ctx, request{method: http.MethodPost, path: projectPath(project, "promotions", promotion, "abort")}, nil)
}

// Ready calls /readyz.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, request{method: http.MethodGet, path: "/readyz"}, nil)
}
