package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// auditRecorder captures the status and a hash of the answer.
type auditRecorder struct {
	http.ResponseWriter
	status int
	sum    hash.Hash
}

func (a *auditRecorder) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *auditRecorder) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	a.sum.Write(b)
	return a.ResponseWriter.Write(b)
}

func (a *auditRecorder) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// hashingBody hashes what the handler reads of the request body.
type hashingBody struct {
	io.ReadCloser
	sum  hash.Hash
	read []byte
	keep int64
}

func (b *hashingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.sum.Write(p[:n])
	if room := b.keep - int64(len(b.read)); room > 0 {
		b.read = append(b.read, p[:min(int64(n), room)]...)
	}
	return n, err
}

// auditNote lets a handler refine its call's audit record.
type auditNote struct {
	action, object, reason string
}

type auditNoteKey struct{}

// noteAudit sets what the call's audit record says it did (empty values
// keep the route's).
func noteAudit(r *http.Request, action, object, reason string) {
	if n, ok := r.Context().Value(auditNoteKey{}).(*auditNote); ok {
		n.action, n.object, n.reason = action, object, reason
	}
}

// audited appends one record to the audit log for every call of a route
// that changes something, after it answered: who, what (the route's action
// and object), the answer's status, and SHA-256 hashes of the request
// body (before) and of the answer (after). Apply and delete record one
// entry per project their documents touch.
func (s *server) audited(rt route, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := &hashingBody{ReadCloser: r.Body, sum: sha256.New()}
		if rt.action == "apply" || rt.action == "delete" {
			body.keep = s.maxBody
		}
		r.Body = body
		rec := &auditRecorder{ResponseWriter: w, sum: sha256.New()}
		note := &auditNote{}
		r = r.WithContext(context.WithValue(r.Context(), auditNoteKey{}, note))
		next.ServeHTTP(rec, r)
		p, _ := auth.FromContext(r.Context())
		actorName := auth.Actor(p)
		if rt.access == public {
			actorName = "webhook"
		}
		base := audit.Record{
			Time:   s.now().UTC(),
			Actor:  actorName,
			Action: rt.action,
			Method: rt.method,
			Route:  rt.path,
			Status: rec.status,
			Before: hex.EncodeToString(body.sum.Sum(nil)),
			After:  hex.EncodeToString(rec.sum.Sum(nil)),
			Reason: note.reason,
		}
		if note.action != "" {
			base.Action = note.action
		}
		var recs []audit.Record
		if objs := auditObjects(rt, body.read); objs != nil {
			for _, project := range sortedKeys(objs) {
				rc := base
				rc.Project, rc.Object = project, strings.Join(objs[project], ",")
				recs = append(recs, rc)
			}
		} else {
			base.Project = r.PathValue("project")
			base.Object = auditObject(rt.path, r)
			if note.object != "" {
				base.Object = note.object
			}
			recs = append(recs, base)
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
		defer cancel()
		for _, rc := range recs {
			if err := s.audit.Append(ctx, rc); err != nil {
				s.logger.Error("append audit record", "route", rt.method+" "+rt.path, "err", err)
			}
		}
	})
}

// auditObjects returns the objects of an apply or delete body by project
// ("" for cluster-scoped kinds), or nil for other routes and bodies that do
// not decode.
func auditObjects(rt route, body []byte) map[string][]string {
	if rt.action != "apply" && rt.action != "delete" {
		return nil
	}
	dec, err := decodeForAuth(body)
	if err != nil || len(dec.Documents) == 0 {
		return nil
	}
	out := map[string][]string{}
	for _, d := range dec.Documents {
		project := ""
		if !model.ClusterScoped(d.Object.GetTypeMeta().Kind) {
			project = model.ProjectName(d.Object)
		}
		out[project] = append(out[project], d.Object.GetTypeMeta().Kind+"/"+d.Object.GetObjectMeta().Name)
	}
	return out
}

// auditObject names what a route acts on: its path after the project,
// with the path's values filled in ("stages/prod/promotions").
func auditObject(pattern string, r *http.Request) string {
	pattern = strings.TrimPrefix(pattern, "/v1/projects/{project}/")
	pattern = strings.TrimPrefix(pattern, "/v1/")
	parts := strings.Split(strings.TrimPrefix(pattern, "/"), "/")
	for i, p := range parts {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			parts[i] = r.PathValue(strings.Trim(p, "{}"))
		}
	}
	return strings.Join(parts, "/")
}

func sortedKeys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// mutating says whether a route changes something (and is audited).
func (rt route) mutating() bool {
	switch rt.method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}
