package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
	"github.com/caravan-cd/caravan/services/gateway/internal/notify"
)

// codeWindowClosed answers a promotion that promotion windows refuse.
const codeWindowClosed = "window_closed"

// windowOverride is the part of a promotion request that overrides
// closed promotion windows (project admins only).
type windowOverride struct {
	// Reason says why the promotion may not wait (required, recorded on
	// the promotion and in the audit log).
	Reason string `json:"reason"`
}

// checkWindows refuses a promotion into st while promotion windows are
// closed (409 with the next opening), unless a project admin overrides
// them with a reason; it returns the override annotation value ("" for
// none) and false when it answered.
func (s *server) checkWindows(w http.ResponseWriter, r *http.Request, st *model.Stage, over *windowOverride) (string, bool) {
	pol, err := state.LoadPolicies(r.Context(), s.store, st.Namespace)
	if err != nil {
		s.internal(w, r, err)
		return "", false
	}
	ws := model.WindowStatus(pol.Windows(st), s.now())
	if over != nil {
		if strings.TrimSpace(over.Reason) == "" || len(over.Reason) > 500 || strings.ContainsAny(over.Reason, "\r\n") {
			invalid(w, "windowOverride.reason", "required: one line of at most 500 bytes saying why the promotion may not wait")
			return "", false
		}
		p, _ := auth.FromContext(r.Context())
		role, err := s.roleIn(r.Context(), p, st.Namespace)
		if err != nil {
			s.internal(w, r, err)
			return "", false
		}
		if role < auth.RoleAdmin {
			forbidden(w, fmt.Sprintf("%s may not override promotion windows in project %q: it needs the admin role", p.Name, st.Namespace))
			return "", false
		}
		if ws == nil || !ws.Closed {
			return "", true // nothing to override
		}
		return actor(r) + ": " + over.Reason, true
	}
	if ws == nil || !ws.Closed {
		return "", true
	}
	msg := fmt.Sprintf("promotion windows do not let stage %q promote now: %s", st.Name, ws.Reason)
	if ws.NextOpen != nil {
		msg += "; they open at " + ws.NextOpen.UTC().Format(time.RFC3339)
	} else {
		msg += "; no opening is known"
	}
	msg += " (a project admin may override them with a reason)"
	details := []model.Issue{{Field: "stage", Message: ws.Reason}}
	writeError(w, http.StatusConflict, codeWindowClosed, msg, details...)
	return "", false
}

// approvalRequest is the body of POST …/promotions/{name}/approve.
type approvalRequest struct {
	// Reason says why the promotion may go (required).
	Reason string `json:"reason"`
}

// approvalAnswer is where a promotion stands with its stage's approval
// policy.
type approvalAnswer struct {
	Promotion string `json:"promotion"`
	Stage     string `json:"stage"`
	// Policy is false when no approval policy gates the stage.
	Policy bool `json:"policy"`
	model.ApprovalState
	Approved bool `json:"approved"`
	// Approvals are every approval given, counting or not.
	Approvals []model.PromotionApproval `json:"approvals,omitempty"`
	Message   string                    `json:"message,omitempty"`
}

func (s *server) approval(w http.ResponseWriter, r *http.Request) (*model.Promotion, *model.ApprovalPolicy, bool) {
	if _, ok := s.project(w, r); !ok {
		return nil, nil, false
	}
	project, name := r.PathValue("project"), r.PathValue("name")
	p, _, err := state.GetAs[*model.Promotion](r.Context(), s.store, project, model.KindPromotion, name)
	if !s.loaded(w, r, err, model.KindPromotion, name) {
		return nil, nil, false
	}
	st, _, err := state.GetAs[*model.Stage](r.Context(), s.store, project, model.KindStage, p.Spec.Stage)
	if errors.Is(err, state.ErrNotFound) {
		return p, nil, true
	}
	if err != nil {
		s.internal(w, r, err)
		return nil, nil, false
	}
	pol, err := state.LoadPolicies(r.Context(), s.store, project)
	if err != nil {
		s.internal(w, r, err)
		return nil, nil, false
	}
	return p, pol.Approval(st), true
}

func (s *server) answerApproval(p *model.Promotion, pol *model.ApprovalPolicy) approvalAnswer {
	a := approvalAnswer{Promotion: p.Name, Stage: p.Spec.Stage, Policy: pol != nil, Approvals: p.Status.Approvals, Approved: true}
	if pol != nil {
		a.ApprovalState = model.Approval(pol, p, s.now())
		a.Approved = a.ApprovalState.Approved()
		if !a.Approved {
			a.Message = fmt.Sprintf("%d more approval(s) needed", a.Missing)
		}
	}
	return a
}

func (s *server) getApproval(w http.ResponseWriter, r *http.Request) {
	p, pol, ok := s.approval(w, r)
	if ok {
		writeJSON(w, http.StatusOK, s.answerApproval(p, pol))
	}
}

// groupsOf are the groups an approver is in: an OIDC caller's groups
// claim, else its role name (an API token's role, "admin" for the system
// admin).
func groupsOf(p auth.Principal, role auth.Role) []string {
	var out []string
	switch g := p.Claims["groups"].(type) {
	case string:
		out = append(out, g)
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
	case []string:
		out = append(out, g...)
	}
	if p.Claims == nil {
		out = append(out, role.String())
	}
	return out
}

func (s *server) approvePromotion(w http.ResponseWriter, r *http.Request) {
	var req approvalRequest
	if !s.actionBody(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Reason) == "" || len(req.Reason) > 500 || strings.ContainsAny(req.Reason, "\r\n") {
		invalid(w, "reason", "required: one line of at most 500 bytes")
		return
	}
	p, pol, ok := s.approval(w, r)
	if !ok {
		return
	}
	noteAudit(r, "", "Promotion/"+p.Name, req.Reason)
	s.auditTarget(r, r.PathValue("project"), model.KindPromotion, p.Name)
	if pol == nil {
		conflict(w, fmt.Sprintf("no approval policy gates stage %q: promotion %s needs no approval", p.Spec.Stage, p.Name))
		return
	}
	if p.Status.Phase != "" && p.Status.Phase != model.PromotionPhasePending {
		conflict(w, fmt.Sprintf("promotion %s is %s: only a pending promotion can be approved", p.Name, p.Status.Phase))
		return
	}
	who := principalName(r)
	if who == p.Annotations[model.AnnotationPromotionCreatedBy] {
		forbidden(w, fmt.Sprintf("%s asked for promotion %s and may not approve it: another person must", who, p.Name))
		return
	}
	pr, _ := auth.FromContext(r.Context())
	role, err := s.roleIn(r.Context(), pr, p.Namespace)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	groups := groupsOf(pr, role)
	if len(pol.Groups) > 0 && !slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(pol.Groups, g) }) {
		forbidden(w, fmt.Sprintf("%s is in none of the groups that approve promotions into stage %q: %s", who, p.Spec.Stage, strings.Join(pol.Groups, ", ")))
		return
	}
	now := model.NewTime(s.now().UTC().Truncate(time.Second))
	project := p.Namespace
	updated, rev, err := state.Update(r.Context(), s.store.KV(state.Promotions), state.Key(project, p.Name), func(cur model.Promotion, exists bool) (model.Promotion, error) {
		if !exists {
			return cur, fmt.Errorf("promotion %q: %w", p.Name, state.ErrNotFound)
		}
		if cur.Status.Phase != "" && cur.Status.Phase != model.PromotionPhasePending {
			return cur, errStarted
		}
		// One approval per person: a new one replaces (renews) the old.
		cur.Status.Approvals = slices.DeleteFunc(cur.Status.Approvals, func(a model.PromotionApproval) bool { return a.Approver == who })
		cur.Status.Approvals = append(cur.Status.Approvals, model.PromotionApproval{Approver: who, Groups: groups, Reason: req.Reason, At: now})
		return cur, nil
	})
	switch {
	case errors.Is(err, errStarted):
		conflict(w, fmt.Sprintf("promotion %s started meanwhile: it can no longer be approved", p.Name))
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	updated.ResourceVersion = strconv.FormatUint(rev, 10)
	ans := s.answerApproval(&updated, pol)
	ev := events.PromotionApproved{Promotion: p.Name, Stage: p.Spec.Stage, Approver: who, Missing: ans.Missing}
	if _, ok := s.send(w, r, "", project, events.Ref{Kind: model.KindPromotion, Name: p.Name}, ev); ok {
		writeJSON(w, http.StatusOK, ans)
	}
}

var errStarted = errors.New("promotion started")

// auditList is the answer of GET …/audit.
type auditList struct {
	Items []audit.Record `json:"items"`
	// Before pages on: pass it as ?before= for older records.
	Before string `json:"before,omitempty"`
}

func (s *server) listAudit(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.project(w, r); !ok {
		return
	}
	q := r.URL.Query()
	f := audit.Filter{Actor: q.Get("actor"), Action: q.Get("action"), Object: q.Get("object"), Limit: 100}
	for _, t := range []struct {
		name string
		to   *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(t.name); v != "" {
			at, err := time.Parse(time.RFC3339, v)
			if err != nil {
				invalid(w, t.name, "an RFC 3339 time such as 2026-01-02T15:04:05Z")
				return
			}
			*t.to = at
		}
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			invalid(w, "before", "a record sequence number (seq)")
			return
		}
		f.Before = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			invalid(w, "limit", fmt.Sprintf("an integer from 1 to %d", maxLimit))
			return
		}
		f.Limit = n
	}
	recs, err := s.audit.List(r.Context(), r.PathValue("project"), f)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	out := auditList{Items: recs}
	if out.Items == nil {
		out.Items = []audit.Record{}
	}
	if len(recs) == f.Limit {
		out.Before = strconv.FormatUint(recs[len(recs)-1].Seq, 10)
	}
	writeJSON(w, http.StatusOK, out)
}

type notificationList struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Items      []notify.Delivery `json:"items"`
}

func (s *server) listNotifications(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.project(w, r); !ok {
		return
	}
	project := r.PathValue("project")
	q := r.URL.Query()
	status := q.Get("status")
	if status != "" && !slices.Contains(notify.Statuses, status) {
		invalid(w, "status", "one of "+strings.Join(notify.Statuses, ", "))
		return
	}
	out := notificationList{APIVersion: "v1", Kind: "NotificationDeliveryList", Items: []notify.Delivery{}}
	if s.notes != nil {
		items, err := s.notes.List(r.Context(), project, status)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		if sub := q.Get("subscription"); sub != "" {
			items = slices.DeleteFunc(items, func(d notify.Delivery) bool { return d.Subscription != sub })
		}
		out.Items = append(out.Items, items...)
	}
	writeJSON(w, http.StatusOK, out)
}
