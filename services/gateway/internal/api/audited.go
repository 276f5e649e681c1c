package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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

// hashingBody hashes what the handler reads of the request body.
type hashingBody struct {
	io.ReadCloser
	sum hash.Hash
}

func (b *hashingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.sum.Write(p[:n])
	return n, err
}

// auditNote lets a handler refine its call's audit record.
type auditNote struct {
	action, object, reason string
	// target is the stored object the call changes, and before its hash
	// when the handler named it (auditTarget).
	target *objectRef
	before string
}

// objectRef names a stored object: a kind of the model, or "Token".
type objectRef struct {
	project, kind, name string
}

func (o objectRef) String() string { return o.kind + "/" + o.name }

// kindToken names API tokens among the objects an audit record hashes.
const kindToken = "Token"

// auditTarget names the stored object the call is about to change and
// hashes it as it is now; after the call, the audit record holds that hash
// (before) and the object's hash then (after). Call it before the change.
func (s *server) auditTarget(r *http.Request, project, kind, name string) {
	n, ok := r.Context().Value(auditNoteKey{}).(*auditNote)
	if !ok {
		return
	}
	ref := objectRef{project: project, kind: kind, name: name}
	n.target, n.before = &ref, s.objectHash(r.Context(), ref)
}

// objectHash returns the hex SHA-256 (audit.CanonicalHash) of the stored
// object as GET answers for it — Secrets redacted, Stages and Warehouses
// without their status (the services' to change) — or "" when it does not
// exist or cannot be read.
func (s *server) objectHash(ctx context.Context, o objectRef) string {
	var v any
	switch o.kind {
	case kindToken:
		toks, err := s.tokens.List(ctx, o.project)
		if err != nil {
			return ""
		}
		for _, t := range toks {
			if t.Name == o.name {
				v = t
			}
		}
	default:
		obj, _, err := s.store.GetObject(ctx, o.project, o.kind, o.name)
		if err != nil {
			return ""
		}
		v = obj
		switch o := obj.(type) {
		case *model.Secret:
			v = redact(o)
		case *model.Stage, *model.Warehouse:
			b, err := json.Marshal(obj)
			if err != nil {
				return ""
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(b, &m); err != nil {
				return ""
			}
			delete(m, "status")
			v = m
		}
	}
	if v == nil {
		return ""
	}
	h, err := audit.CanonicalHash(v)
	if err != nil {
		return ""
	}
	return h
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
// and object), the answer's status, and hashes. Calls that change a stored
// object record the SHA-256 of the object's canonical JSON before and
// after the call ("" where it did not exist); apply and delete record one
// entry per project their documents touch, with each object's hashes.
// Calls that change nothing stored themselves (they ask a service to act)
// record the SHA-256 of the request body (before) and of the answer
// (after).
func (s *server) audited(rt route, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := &hashingBody{ReadCloser: r.Body, sum: sha256.New()}
		resources := rt.action == "apply" || rt.action == "delete"
		var docs map[string][]objectRef
		var before map[objectRef]string
		if resources {
			// Read the body here, to hash the objects before the call,
			// and hand the handler what was read.
			var src io.Reader = r.Body
			if s.maxBody > 0 {
				src = io.LimitReader(r.Body, s.maxBody+1)
			}
			raw, _ := io.ReadAll(src)
			_ = r.Body.Close()
			docs = auditObjects(raw)
			before = map[objectRef]string{}
			for _, refs := range docs {
				for _, o := range refs {
					before[o] = s.objectHash(r.Context(), o)
				}
			}
			body.ReadCloser = io.NopCloser(bytes.NewReader(raw))
		}
		r.Body = body
		answer := sha256.New()
		rec := &capture{ResponseWriter: w, copy: answer}
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
			After:  hex.EncodeToString(answer.Sum(nil)),
			Reason: note.reason,
		}
		if note.action != "" {
			base.Action = note.action
		}
		var recs []audit.Record
		if docs != nil {
			for _, project := range sortedKeys(docs) {
				rc := base
				rc.Hashes = audit.HashesObject
				var names []string
				for _, o := range docs[project] {
					names = append(names, o.String())
					rc.Objects = append(rc.Objects, audit.ObjectHashes{Object: o.String(), Before: before[o], After: s.objectHash(r.Context(), o)})
				}
				rc.Project, rc.Object = project, strings.Join(names, ",")
				rc.Before, rc.After = "", ""
				if len(rc.Objects) == 1 {
					rc.Before, rc.After = rc.Objects[0].Before, rc.Objects[0].After
				}
				recs = append(recs, rc)
			}
		} else {
			base.Project = r.PathValue("project")
			base.Object = auditObject(rt.path, r)
			if note.object != "" {
				base.Object = note.object
			}
			if note.target != nil {
				base.Hashes = audit.HashesObject
				base.Object = note.target.String()
				base.Before, base.After = note.before, s.objectHash(r.Context(), *note.target)
			} else {
				base.Hashes = audit.HashesCall
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
// ("" for cluster-scoped kinds), or nil for bodies that do not decode.
func auditObjects(body []byte) map[string][]objectRef {
	dec, err := decodeForAuth(body)
	if err != nil || len(dec.Documents) == 0 {
		return nil
	}
	out := map[string][]objectRef{}
	for _, d := range dec.Documents {
		kind := d.Object.GetTypeMeta().Kind
		project := ""
		if !model.ClusterScoped(kind) {
			project = model.ProjectName(d.Object)
		}
		out[project] = append(out[project], objectRef{project: project, kind: kind, name: d.Object.GetObjectMeta().Name})
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

func sortedKeys[V any](m map[string]V) []string {
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
