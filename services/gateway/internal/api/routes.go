package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/gateway/internal/apply"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// access is who may call a route.
type access int

const (
	// public routes take no token (health, metrics, OpenAPI, webhooks).
	public access = iota
	// anyone with a valid token; the handler checks further (listing
	// projects shows only the caller's, applying checks each document).
	anyone
	// viewer and up in the path's {project}.
	viewer
	// promoter and up in the path's {project}.
	promoter
	// projectAdmin: admin of the path's {project}.
	projectAdmin
	// systemAdmin: the system admin only.
	systemAdmin
)

var accessNames = map[access]string{
	public: "public", anyone: "any token", viewer: "viewer", promoter: "promoter",
	projectAdmin: "project admin", systemAdmin: "system admin",
}

var accessRoles = map[access]auth.Role{viewer: auth.RoleViewer, promoter: auth.RolePromoter, projectAdmin: auth.RoleAdmin}

// route is one route of the API, with what the OpenAPI document says of it.
type route struct {
	method, path string
	access       access
	handler      http.HandlerFunc
	summary      string
	// query names the query parameters the route reads.
	query []string
	// body describes the request body ("" when there is none).
	body string
	// optionalBody marks a body that may be left out.
	optionalBody bool
	// status is the success status (default 200).
	status int
	// stream marks a text/event-stream answer.
	stream bool
	// idempotent routes take an Idempotency-Key (see idempotent).
	idempotent bool
	// action names what a route that changes something does, in its
	// audit records.
	action string
}

// routes lists every route the gateway serves.
func (s *server) routes(reg *prometheus.Registry) []route {
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	rs := []route{
		{method: "GET", path: "/healthz", access: public, summary: "liveness", handler: func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}},
		{method: "GET", path: "/readyz", access: public, summary: "readiness: NATS, the event stream and every bucket", handler: s.readyz},
		{method: "GET", path: "/metrics", access: public, summary: "Prometheus metrics", handler: metricsHandler.ServeHTTP},
		{method: "GET", path: "/openapi.json", access: public, summary: "this OpenAPI document", handler: s.openAPI},
		{method: "GET", path: "/version", access: public, summary: "the server's build: version, VCS revision and time, Go version", handler: func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, s.version)
		}},
		{method: "POST", path: "/webhooks/{project}/{receiver}", access: public, summary: "a webhook delivery to a ProjectConfig receiver (authenticated by the receiver's own scheme)", handler: s.webhook, body: "the provider's payload", status: http.StatusAccepted, action: "webhook"},

		{method: "POST", path: "/v1/resources", access: anyone, summary: "apply multi-document YAML or JSON (admin of every project touched; system admin for cluster-scoped kinds)", handler: s.apply, body: "YAML or JSON documents", idempotent: true, action: "apply"},
		{method: "DELETE", path: "/v1/resources", access: anyone, summary: "delete the documents in the body (same roles as apply)", handler: s.delete, body: "YAML or JSON documents", action: "delete"},
		{method: "GET", path: "/v1/whoami", access: anyone, summary: "the caller's name and, with ?project=, its role there (none, viewer, promoter or admin)", handler: s.whoami, query: []string{"project"}},
		{method: "GET", path: "/v1/projects", access: anyone, summary: "the projects the caller may view", handler: s.listProjects, query: []string{"limit", "continue", "sort"}},
		{method: "GET", path: "/v1/projects/{project}", access: viewer, summary: "one project", handler: s.getProject},
		{method: "GET", path: "/v1/projects/{project}/projectconfig", access: viewer, summary: "the ProjectConfig with status.webhookReceivers[] {name, path, url}", handler: s.getProjectConfig},
	}
	for _, k := range kinds {
		rs = append(rs,
			route{method: "GET", path: "/v1/projects/{project}/" + k.path, access: viewer, summary: "list " + k.path, handler: s.list(k), query: append([]string{"limit", "continue", "sort"}, k.filters...)},
			route{method: "GET", path: "/v1/projects/{project}/" + k.path + "/{name}", access: viewer, summary: "get one of " + k.path, handler: s.get(k)},
		)
	}
	rs = append(rs, []route{
		{method: "GET", path: "/v1/projects/{project}/stages/{stage}/verifications", access: viewer, summary: "the stage's verifications, newest first, with each metric's measurements", handler: s.listVerifications},
		{method: "GET", path: "/v1/projects/{project}/stages/{stage}/verifications/{id}", access: viewer, summary: "one verification with each metric's measurements", handler: s.getVerification},
		{method: "GET", path: "/v1/projects/{project}/promotions/{name}/diff", access: viewer, summary: "the git diff of every commit the promotion pushed (read from the repository)", handler: s.promotionDiff},
		{method: "GET", path: "/v1/projects/{project}/freight/{name}/compare/{other}", access: viewer, summary: "the artifacts that differ between two freight and the git commits between them", handler: s.compareFreight},
		{method: "POST", path: "/v1/projects/{project}/warehouses/{name}/refresh", access: promoter, summary: "discover now (WarehouseRefreshRequested)", handler: s.refresh, body: `{"reason":"…"}, optional: why, for the event`, optionalBody: true, status: http.StatusAccepted, idempotent: true, action: "refresh"},
		{method: "POST", path: "/v1/projects/{project}/freight", access: promoter, summary: "assemble freight by hand from discovered artifacts", handler: s.createFreight, body: `{"origin":{"kind":"Warehouse","name":"…"},"images":[…],"commits":[…],"charts":[…],"alias":"…"}`, status: http.StatusCreated, idempotent: true, action: "create-freight"},
		{method: "PATCH", path: "/v1/projects/{project}/freight/{name}", access: promoter, summary: "change the freight's alias", handler: s.patchFreight, body: `{"alias":"…"}`, action: "alias-freight"},
		{method: "POST", path: "/v1/projects/{project}/freight/{name}/approve", access: promoter, summary: "approve the freight for a stage", handler: s.approveFreight, body: `{"stage":"…"}`, idempotent: true, action: "approve-freight"},
		{method: "POST", path: "/v1/projects/{project}/stages/{stage}/promotions", access: promoter, summary: "promote freight (by name or alias, or the newest available from a warehouse) into the stage; 409 window_closed while promotion windows are closed, unless a project admin overrides them; with ?dryRun=true, 200 with what the steps would do (each git repository's unified diff and the step outputs, up to the first step with effects outside the work tree) and nothing stored, pushed or published", handler: s.promote, body: `{"freight":"…"} or {"warehouse":"…"}, optional "windowOverride":{"reason":"…"}`, query: []string{"dryRun"}, status: http.StatusCreated, idempotent: true, action: "promote"},
		{method: "POST", path: "/v1/projects/{project}/promotions/{name}/abort", access: promoter, summary: "abort a promotion", handler: s.abortPromotion, status: http.StatusAccepted, idempotent: true, action: "abort"},
		{method: "POST", path: "/v1/projects/{project}/stages/{stage}/verification", access: promoter, summary: "re-verify the stage's current freight", handler: s.verify, status: http.StatusAccepted, idempotent: true, action: "verify"},
		{method: "DELETE", path: "/v1/projects/{project}/stages/{stage}/verification", access: promoter, summary: "abort the stage's running verification", handler: s.abortVerification, status: http.StatusAccepted, action: "abort-verification"},
		{method: "POST", path: "/v1/projects/{project}/stages/{stage}/auto-promotion/resume", access: promoter, summary: "lift the stage's auto-promotion hold", handler: s.resumeAutoPromotion, status: http.StatusAccepted, idempotent: true, action: "resume"},
		{method: "POST", path: "/v1/projects/{project}/promotions/{name}/approve", access: promoter, summary: "approve a pending promotion that an approval policy holds (not the person who asked for it; one approval per person)", handler: s.approvePromotion, body: `{"reason":"…"}`, action: "approve"},
		{method: "GET", path: "/v1/projects/{project}/promotions/{name}/approval", access: viewer, summary: "where the promotion stands with its stage's approval policy: who approved, how many more are needed, from which groups", handler: s.getApproval},
		{method: "GET", path: "/v1/projects/{project}/audit", access: viewer, summary: "the project's audit log, newest first: every change made through the API and every automatic decision (read-only)", handler: s.listAudit, query: []string{"actor", "action", "object", "since", "until", "before", "limit"}},
		{method: "GET", path: "/v1/projects/{project}/notifications", access: viewer, summary: "the project's notification deliveries (ProjectConfig spec.notifications), newest first: pending with their next attempt, sent, and dead (the dead-letter list, after the subscription's attempts)", handler: s.listNotifications, query: []string{"status", "subscription"}},
		{method: "POST", path: "/v1/projects/{project}/tokens", access: projectAdmin, summary: "create an API token (its secret is shown once)", handler: s.createToken, body: `{"name":"…","role":"viewer|promoter|admin"}`, status: http.StatusCreated, action: "token-create"},
		{method: "GET", path: "/v1/projects/{project}/tokens", access: projectAdmin, summary: "list the project's API tokens (never their secrets)", handler: s.listTokens},
		{method: "GET", path: "/v1/projects/{project}/tokens/{name}", access: projectAdmin, summary: "one API token (never its secret)", handler: s.getToken},
		{method: "DELETE", path: "/v1/projects/{project}/tokens/{name}", access: projectAdmin, summary: "revoke an API token", handler: s.deleteToken, action: "token-revoke"},
		{method: "GET", path: "/v1/projects/{project}/events", access: viewer, summary: "Server-Sent Events of the project (Last-Event-ID resumes)", handler: s.events, stream: true},
		{method: "GET", path: "/v1/deadletters", access: systemAdmin, summary: "events no handler could take", handler: s.listDeadLetters, query: []string{"limit", "continue", "sort", "project"}},
		{method: "POST", path: "/v1/deadletters/{id}/replay", access: systemAdmin, summary: "publish a dead letter's event again", handler: s.replayDeadLetter, status: http.StatusAccepted, action: "replay"},
	}...)
	return rs
}

// authorize lets a request through when its principal has the access.
func (s *server) authorize(a access, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := auth.FromContext(r.Context())
		switch a {
		case public, anyone:
			next.ServeHTTP(w, r)
			return
		case systemAdmin:
			if !p.Admin {
				forbidden(w, "only the system admin may do this")
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		project := r.PathValue("project")
		role, err := s.roleIn(r.Context(), p, project)
		if err != nil {
			s.internal(w, r, err)
			return
		}
		if need := accessRoles[a]; role < need {
			forbidden(w, fmt.Sprintf("%s may not do this in project %q: it needs the %s role", p.Name, project, need))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func forbidden(w http.ResponseWriter, msg string) {
	writeError(w, http.StatusForbidden, codeForbidden, msg)
}

// roleIn is the principal's role in project: admin for the system admin,
// an API token's role in its own project, and for OIDC callers what the
// project's ServiceAccounts and RoleBindings grant their claims.
func (s *server) roleIn(ctx context.Context, p auth.Principal, project string) (auth.Role, error) {
	switch {
	case p.Admin:
		return auth.RoleAdmin, nil
	case p.Project != "":
		if p.Project == project {
			return p.Role, nil
		}
		return auth.RoleNone, nil
	case p.Claims != nil && project != "":
		sas, _, err := s.collect(ctx, project, model.KindServiceAccount, 0, "", nil)
		if err != nil {
			return auth.RoleNone, err
		}
		rbs, _, err := s.collect(ctx, project, model.KindRoleBinding, 0, "", nil)
		if err != nil {
			return auth.RoleNone, err
		}
		var accounts []*model.ServiceAccount
		for _, o := range sas {
			if sa, ok := o.(*model.ServiceAccount); ok {
				accounts = append(accounts, sa)
			}
		}
		var bindings []*model.RoleBinding
		for _, o := range rbs {
			if rb, ok := o.(*model.RoleBinding); ok {
				bindings = append(bindings, rb)
			}
		}
		return auth.RoleFor(project, p.Claims, accounts, bindings), nil
	}
	return auth.RoleNone, nil
}

// mayApply checks that the principal may apply or delete every document:
// project admin of each document's project, system admin for
// cluster-scoped kinds. Bodies that do not decode pass: the applier
// reports them (400) and writes nothing.
func (s *server) mayApply(ctx context.Context, p auth.Principal, body []byte) (bool, string, error) {
	if p.Admin {
		return true, "", nil
	}
	dec, err := decodeForAuth(body)
	if err != nil {
		return true, "", nil //nolint:nilerr // invalid bodies are answered 400 by the applier
	}
	roles := map[string]auth.Role{}
	for _, d := range dec.Documents {
		kind := d.Object.GetTypeMeta().Kind
		if model.ClusterScoped(kind) {
			return false, fmt.Sprintf("document %d: only the system admin may apply or delete a %s", d.Index, kind), nil
		}
		project := model.ProjectName(d.Object)
		role, ok := roles[project]
		if !ok {
			if role, err = s.roleIn(ctx, p, project); err != nil {
				return false, "", err
			}
			roles[project] = role
		}
		if role < auth.RoleAdmin {
			return false, fmt.Sprintf("document %d: %s is not an admin of project %q", d.Index, p.Name, project), nil
		}
	}
	return true, "", nil
}

// visible reports whether the principal may view project.
func (s *server) visible(ctx context.Context, p auth.Principal, project string) (bool, error) {
	role, err := s.roleIn(ctx, p, project)
	return role >= auth.RoleViewer, err
}

func decodeForAuth(body []byte) (*model.Decoded, error) { return apply.Decode(body) }
