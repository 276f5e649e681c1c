package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// List paging.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// list is Kargo's list shape.
type list struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Items      []any    `json:"items"`
	Metadata   listMeta `json:"metadata"`
}

type listMeta struct {
	// Continue is an opaque token: the base64url of the last key listed.
	Continue string `json:"continue,omitempty"`
}

// paging reads limit and continue, answering 400 itself (ok false).
func paging(w http.ResponseWriter, r *http.Request) (limit int, after string, ok bool) {
	q := r.URL.Query()
	limit = defaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			writeError(w, http.StatusBadRequest, codeInvalid, fmt.Sprintf("limit: %q is not an integer between 1 and %d", v, maxLimit),
				model.Issue{Field: "limit", Message: fmt.Sprintf("must be an integer between 1 and %d", maxLimit)})
			return 0, "", false
		}
		limit = n
	}
	if v := q.Get("continue"); v != "" {
		b, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || len(b) == 0 {
			writeError(w, http.StatusBadRequest, codeInvalid, "continue: not a token this server issued",
				model.Issue{Field: "continue", Message: "not a token this server issued"})
			return 0, "", false
		}
		after = string(b)
	}
	return limit, after, true
}

// collect lists up to limit objects of kind in project after the key
// `after` that match, and the token of the next page ("" when none).
func (s *server) collect(ctx context.Context, project, kind string, limit int, after string, match func(model.Object) bool) ([]model.Object, string, error) {
	return s.collectFrom(ctx, false, project, kind, limit, after, match)
}

// collectFrom is collect; shared takes the index's own objects, which the
// caller must not modify (see Index.ListShared).
func (s *server) collectFrom(ctx context.Context, shared bool, project, kind string, limit int, after string, match func(model.Object) bool) ([]model.Object, string, error) {
	var out []model.Object
	list := s.store.ListObjects
	if s.index != nil && s.index.Serves(kind) {
		if err := s.index.Sync(ctx, kind); err != nil {
			return nil, "", err
		}
		list = s.index.ListObjects
		if shared {
			list = s.index.ListShared
		}
	}
	for {
		objs, next, err := list(ctx, project, kind, limit-len(out), after)
		if err != nil {
			return nil, "", err
		}
		for _, o := range objs {
			if match == nil || match(o) {
				out = append(out, o)
			}
		}
		if next == "" {
			return out, "", nil
		}
		if len(out) == limit {
			return out, base64.RawURLEncoding.EncodeToString([]byte(next)), nil
		}
		after = next
	}
}

// writeList answers a list: the JSON of list (the same bytes), written
// item by item. It consumes objs: each entry is cleared once encoded, so
// that the copies a long list was given (a thousand stages with their
// status) can be collected while the rest is encoded.
//
// The answer is buffered up to listFlushBytes, so that a short list that
// fails answers a clean 500; a longer one is sent as it is encoded, in
// pieces of about that size, instead of being held whole (a thousand
// stages are megabytes, one buffer per request in flight), and a failure
// after its first piece aborts the response (http.ErrAbortHandler): the
// client sees a broken answer, never a truncated list.
func (s *server) writeList(w http.ResponseWriter, r *http.Request, kind string, objs []model.Object, next string) {
	if err := s.syncStatus(r.Context(), kind); err != nil {
		s.internal(w, r, err)
		return
	}
	buf := jsonBuffers.Get().(*bytes.Buffer)
	defer putJSONBuffer(buf)
	buf.Reset()
	enc := json.NewEncoder(buf)
	encode := func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		buf.Truncate(buf.Len() - 1) // Encode's newline
		return nil
	}
	buf.WriteString(`{"apiVersion":"v1","kind":`)
	if err := encode(kind + "List"); err != nil {
		writeBody(w, http.StatusInternalServerError, []byte(unencodable))
		return
	}
	buf.WriteString(`,"items":[`)
	streaming := false
	// fail answers err: a 500 while nothing was sent, else an abort.
	fail := func(answer func()) {
		if streaming {
			panic(http.ErrAbortHandler)
		}
		answer()
	}
	for i, o := range objs {
		v, err := s.present(r.Context(), o)
		if err != nil {
			fail(func() { s.internal(w, r, err) })
			return
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := encode(v); err != nil {
			fail(func() { writeBody(w, http.StatusInternalServerError, []byte(unencodable)) })
			return
		}
		objs[i] = nil
		if buf.Len() >= listFlushBytes {
			if !streaming {
				writeHeader(w, http.StatusOK)
				streaming = true
			}
			if _, err := w.Write(buf.Bytes()); err != nil {
				return // the client left
			}
			buf.Reset()
		}
	}
	buf.WriteString(`],"metadata":`)
	if err := encode(listMeta{Continue: next}); err != nil {
		fail(func() { writeBody(w, http.StatusInternalServerError, []byte(unencodable)) })
		return
	}
	buf.WriteString("}\n")
	if !streaming {
		writeHeader(w, http.StatusOK)
	}
	_, _ = w.Write(buf.Bytes())
}

// listFlushBytes is how much of a list writeList buffers before it sends
// what it has.
const listFlushBytes = 64 << 10

func notFound(w http.ResponseWriter, kind, name string) {
	writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("%s %q not found", strings.ToLower(kind), name))
}

// loaded reports whether loading kind/name succeeded (err is nil);
// otherwise it answers 404 for state.ErrNotFound, 400 for an ambiguous
// freight prefix, or 500.
func (s *server) loaded(w http.ResponseWriter, r *http.Request, err error, kind, name string) bool {
	switch {
	case errors.Is(err, errAmbiguous):
		writeError(w, http.StatusBadRequest, codeInvalid, err.Error()+": give more of its ID, or its alias")
		return false
	case errors.Is(err, state.ErrNotFound):
		notFound(w, kind, name)
		return false
	case err != nil:
		s.internal(w, r, err)
		return false
	}
	return true
}

func (s *server) listProjects(w http.ResponseWriter, r *http.Request) {
	limit, after, ok := paging(w, r)
	if !ok {
		return
	}
	p, _ := auth.FromContext(r.Context())
	var match func(model.Object) bool
	var matchErr error
	if !p.Admin {
		match = func(o model.Object) bool {
			ok, err := s.visible(r.Context(), p, o.GetObjectMeta().Name)
			if err != nil {
				matchErr = err
			}
			return ok
		}
	}
	order, ok := ordering(w, r)
	if !ok {
		return
	}
	objs, next, ok := s.ordered(w, r, "", model.KindProject, order, limit, after, match)
	if !ok {
		return
	}
	if matchErr != nil {
		s.internal(w, r, matchErr)
		return
	}
	s.writeList(w, r, model.KindProject, objs, next)
}

// project checks that the {project} of the path exists, answering 404 or
// 500 itself (ok false).
func (s *server) project(w http.ResponseWriter, r *http.Request) (model.Object, bool) {
	name := r.PathValue("project")
	obj, _, err := s.store.GetObject(r.Context(), "", model.KindProject, name)
	if !s.loaded(w, r, err, model.KindProject, name) {
		return nil, false
	}
	return obj, true
}

func (s *server) getProject(w http.ResponseWriter, r *http.Request) {
	if obj, ok := s.project(w, r); ok {
		writeJSON(w, http.StatusOK, obj)
	}
}

func (s *server) getProjectConfig(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.project(w, r); !ok {
		return
	}
	project := r.PathValue("project")
	obj, _, err := s.store.GetObject(r.Context(), project, model.KindProjectConfig, project)
	if !s.loaded(w, r, err, model.KindProjectConfig, project) {
		return
	}
	pc := obj.(*model.ProjectConfig)
	// A receiver's path is the only credential of some providers' senders
	// (generic, Quay, Docker Hub): only project admins see paths and URLs.
	p, _ := auth.FromContext(r.Context())
	role, err := s.roleIn(r.Context(), p, project)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if role >= auth.RoleAdmin {
		if pc.Status.WebhookReceivers, err = s.receiverDetails(r.Context(), pc); err != nil {
			s.internal(w, r, err)
			return
		}
	} else {
		pc.Status.WebhookReceivers = nil
		for _, rc := range pc.Spec.WebhookReceivers {
			pc.Status.WebhookReceivers = append(pc.Status.WebhookReceivers, model.WebhookReceiverDetails{Name: rc.Name})
		}
	}
	writeJSON(w, http.StatusOK, pc)
}

func (s *server) getOne(w http.ResponseWriter, r *http.Request, project, kind, name string) {
	obj, _, err := s.store.GetObject(r.Context(), project, kind, name)
	if !s.loaded(w, r, err, kind, name) {
		return
	}
	if err := s.syncStatus(r.Context(), kind); err != nil {
		s.internal(w, r, err)
		return
	}
	v, err := s.present(r.Context(), obj)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *server) list(k kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		limit, after, ok := paging(w, r)
		if !ok {
			return
		}
		order, ok := ordering(w, r)
		if !ok {
			return
		}
		if _, ok := s.project(w, r); !ok {
			return
		}
		if k.kind == model.KindFreight && r.URL.Query().Get("stage") != "" {
			s.availableFreight(w, r, order, limit, after)
			return
		}
		var match func(model.Object) bool
		if k.match != nil {
			q := r.URL.Query()
			match = func(o model.Object) bool { return k.match(q, o) }
		}
		if st := r.URL.Query().Get("stage"); k.kind == model.KindPromotion && st != "" && s.index != nil {
			// The stage's promotions only, from the index.
			all, err := s.index.PromotionsOf(r.Context(), r.PathValue("project"), st)
			if err != nil {
				s.internal(w, r, err)
				return
			}
			objs, next, ok := pageOf(all, r.PathValue("project"), match, order, limit, after)
			if !ok {
				invalid(w, "continue", "a token of another sort order")
				return
			}
			s.writeList(w, r, k.kind, objs, next)
			return
		}
		objs, next, ok := s.ordered(w, r, r.PathValue("project"), k.kind, order, limit, after, match)
		if !ok {
			return
		}
		s.writeList(w, r, k.kind, objs, next)
	}
}

func (s *server) get(k kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.project(w, r); !ok {
			return
		}
		project, name := r.PathValue("project"), r.PathValue("name")
		if k.kind == model.KindFreight {
			s.getFreight(w, r, project, name)
			return
		}
		s.getOne(w, r, project, k.kind, name)
	}
}

// getFreight finds freight by name, then by alias.
func (s *server) getFreight(w http.ResponseWriter, r *http.Request, project, name string) {
	f, _, err := s.findFreight(r.Context(), project, name)
	if s.loaded(w, r, err, model.KindFreight, name) {
		writeJSON(w, http.StatusOK, f)
	}
}

// minFreightPrefix is the shortest prefix of a freight ID accepted in its
// place (as git accepts short commit IDs).
const minFreightPrefix = 7

// errAmbiguous marks a freight prefix more than one freight starts with.
var errAmbiguous = errors.New("ambiguous")

// findFreight returns freight by name, by alias, or by a unique prefix of
// its name of at least minFreightPrefix characters.
func (s *server) findFreight(ctx context.Context, project, ref string) (*model.Freight, uint64, error) {
	f, rev, err := state.GetAs[*model.Freight](ctx, s.store, project, model.KindFreight, ref)
	if !errors.Is(err, state.ErrNotFound) {
		return f, rev, err
	}
	prefix := ""
	if len(ref) >= minFreightPrefix {
		prefix = ref
	}
	var byPrefix []string
	if s.index != nil {
		sets, err := s.index.Freight(ctx)
		if err != nil {
			return nil, 0, err
		}
		var byAlias *model.Freight
		if byAlias, byPrefix = sets.Find(project, ref, prefix); byAlias != nil {
			return state.GetAs[*model.Freight](ctx, s.store, project, model.KindFreight, byAlias.Name)
		}
	} else {
		all, err := s.allFreight(ctx, project)
		if err != nil {
			return nil, 0, err
		}
		for _, f := range all {
			if f.Alias == ref {
				return state.GetAs[*model.Freight](ctx, s.store, project, model.KindFreight, f.Name)
			}
			if prefix != "" && strings.HasPrefix(f.Name, prefix) {
				byPrefix = append(byPrefix, f.Name)
			}
		}
	}
	switch len(byPrefix) {
	case 0:
		return nil, 0, fmt.Errorf("freight %q: %w", ref, state.ErrNotFound)
	case 1:
		return state.GetAs[*model.Freight](ctx, s.store, project, model.KindFreight, byPrefix[0])
	}
	slices.Sort(byPrefix)
	return nil, 0, fmt.Errorf("freight %q is %w (%s start with it)", ref, errAmbiguous, strings.Join(byPrefix, ", "))
}

// aliases returns a lookup of the names of the project's freight that
// carry an alias: from the freight index's aliases when there is an index,
// else from a listing of every freight.
func (s *server) aliases(ctx context.Context, project string) (func(alias string) []string, error) {
	if s.index != nil {
		sets, err := s.index.Freight(ctx)
		if err != nil {
			return nil, err
		}
		return func(alias string) []string { return sets.Aliased(project, alias) }, nil
	}
	all, err := s.allFreight(ctx, project)
	if err != nil {
		return nil, err
	}
	byAlias := map[string][]string{}
	for _, f := range all {
		if f.Alias != "" {
			byAlias[f.Alias] = append(byAlias[f.Alias], f.Name)
		}
	}
	return func(alias string) []string { return byAlias[alias] }, nil
}

// allFreight lists every freight of the project.
func (s *server) allFreight(ctx context.Context, project string) ([]*model.Freight, error) {
	objs, _, err := s.collect(ctx, project, model.KindFreight, 0, "", nil)
	if err != nil {
		return nil, err
	}
	out := make([]*model.Freight, 0, len(objs))
	for _, o := range objs {
		if f, ok := o.(*model.Freight); ok {
			out = append(out, f)
		}
	}
	return out, nil
}

// matchFreight filters freight by ?warehouse= (the origin's name),
// ?verifiedIn= and ?currentlyIn= (stage names), and ?inUse=true (in some
// stage now).
func matchFreight(q map[string][]string, obj model.Object) bool {
	f, ok := obj.(*model.Freight)
	if !ok {
		return false
	}
	if w := first(q, "warehouse"); w != "" && (f.Origin.Kind != model.FreightOriginKindWarehouse || f.Origin.Name != w) {
		return false
	}
	if st := first(q, "verifiedIn"); st != "" && !f.IsVerifiedIn(st) {
		return false
	}
	if st := first(q, "currentlyIn"); st != "" && !f.IsCurrentlyIn(st) {
		return false
	}
	if first(q, "inUse") == "true" && len(f.Status.CurrentlyIn) == 0 {
		return false
	}
	return true
}

// matchStage filters stages by ?warehouse= (requested from it).
func matchStage(q map[string][]string, obj model.Object) bool {
	st, ok := obj.(*model.Stage)
	if !ok {
		return false
	}
	if w := first(q, "warehouse"); w != "" && !st.RequestsOrigin(model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: w}) {
		return false
	}
	return true
}

// matchPromotion filters promotions by ?stage= and ?phase=.
func matchPromotion(q map[string][]string, obj model.Object) bool {
	p, ok := obj.(*model.Promotion)
	if !ok {
		return false
	}
	if st := first(q, "stage"); st != "" && p.Spec.Stage != st {
		return false
	}
	if ph := first(q, "phase"); ph != "" && string(p.Status.Phase) != ph {
		return false
	}
	if f := first(q, "freight"); f != "" && p.Spec.Freight != f {
		return false
	}
	return true
}

func first(q map[string][]string, key string) string {
	if v := q[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// present returns what the API shows of a stored object: Stages and
// Warehouses with the status their owning services keep, Secrets without
// their values.
func (s *server) present(ctx context.Context, obj model.Object) (any, error) {
	switch o := obj.(type) {
	case *model.Stage:
		// A list hands over the index's own objects, which others share:
		// the status goes into a shallow copy (the rest is only read).
		c := *o
		c.Status = model.StageStatus{}
		if err := s.status(ctx, state.Stages, state.Key(o.Namespace, o.Name), &c.Status); err != nil {
			return nil, err
		}
		return &c, nil
	case *model.Warehouse:
		c := *o
		c.Status = model.WarehouseStatus{}
		if err := s.status(ctx, state.Warehouses, state.Key(o.Namespace, o.Name), &c.Status); err != nil {
			return nil, err
		}
		return &c, nil
	case *model.Secret:
		return redact(o), nil
	}
	return obj, nil
}

// status reads the status of key in bucket b into v (left zero when
// absent): from the index when there is one (synced by syncStatus), else
// from KV.
func (s *server) status(ctx context.Context, b state.Bucket, key string, v any) error {
	if s.index != nil {
		raw, ok := s.index.Raw(b, key)
		if !ok {
			return nil
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return fmt.Errorf("decode %s %s: %w", b, key, err)
		}
		return nil
	}
	raw, _, err := state.Get[json.RawMessage](ctx, s.store.KV(b), key)
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode %s %s: %w", b, key, err)
	}
	return nil
}

// syncStatus brings the index's status buckets for kind up to date.
func (s *server) syncStatus(ctx context.Context, kind string) error {
	if s.index == nil {
		return nil
	}
	switch kind {
	case model.KindStage:
		return s.index.SyncBucket(ctx, state.Stages)
	case model.KindWarehouse:
		return s.index.SyncBucket(ctx, state.Warehouses)
	}
	return nil
}
