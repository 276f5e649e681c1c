package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/model"
)

// Approval is where a promotion stands with its stage's approval policy.
type Approval struct {
	Promotion string `json:"promotion"`
	Stage     string `json:"stage"`
	Policy    bool   `json:"policy"`
	model.ApprovalState
	Approved  bool                      `json:"approved"`
	Approvals []model.PromotionApproval `json:"approvals,omitempty"`
}

// ApprovePromotion approves a pending promotion with a reason.
func (c *Client) ApprovePromotion(ctx context.Context, project, promotion, reason string) (*Approval, error) {
	body, err := json.Marshal(map[string]string{"reason": reason})
	if err != nil {
		return nil, err
	}
	var a Approval
	err = c.do(ctx, request{method: http.MethodPost, path: projectPath(project, "promotions", promotion, "approve"), contentType: "application/json", body: body}, &a)
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// PromotionApproval reads where a promotion stands with its approvals.
func (c *Client) PromotionApproval(ctx context.Context, project, promotion string) (*Approval, error) {
	var a Approval
	if err := c.do(ctx, request{method: http.MethodGet, path: projectPath(project, "promotions", promotion, "approval")}, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// AuditPage is a page of the audit log, newest first.
type AuditPage struct {
	Items  []audit.Record `json:"items"`
	Before string         `json:"before,omitempty"`
}

// Audit reads the project's audit log; query holds the filters (actor,
// action, object, since, until, before, limit).
func (c *Client) Audit(ctx context.Context, project string, query url.Values) (*AuditPage, error) {
	var p AuditPage
	if err := c.do(ctx, request{method: http.MethodGet, path: projectPath(project, "audit"), query: query}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}
