package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// actionBody decodes a JSON action body into v, answering 415, 413 or 400
// itself (ok false). Unknown fields are refused, so a typo is not ignored.
func (s *server) actionBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, codeUnsupportedMedia, fmt.Sprintf("Content-Type %q is not supported: send application/json", ct))
			return false
		}
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit))
		return false
	case err != nil:
		writeError(w, http.StatusBadRequest, codeInvalid, "cannot read the body")
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, "the body is not the JSON this action takes: "+err.Error())
		return false
	}
	return true
}

func invalid(w http.ResponseWriter, field, msg string) {
	writeError(w, http.StatusBadRequest, codeInvalid, field+": "+msg, model.Issue{Field: field, Message: msg})
}

func conflict(w http.ResponseWriter, msg string) {
	writeError(w, http.StatusConflict, codeConflict, msg)
}

// stage loads the path's {stage}, answering 404 (naming the project when
// it is the project that does not exist) or 500 itself.
func (s *server) stage(w http.ResponseWriter, r *http.Request) (*model.Stage, bool) {
	if _, ok := s.project(w, r); !ok {
		return nil, false
	}
	project, name := r.PathValue("project"), r.PathValue("stage")
	st, _, err := state.GetAs[*model.Stage](r.Context(), s.store, project, model.KindStage, name)
	if !s.loaded(w, r, err, model.KindStage, name) {
		return nil, false
	}
	return st, true
}

// publish publishes ev about ref in the path's project and answers 202
// with the envelope.
func (s *server) publish(w http.ResponseWriter, r *http.Request, id string, ref events.Ref, ev events.Event) {
	if env, ok := s.send(w, r, id, r.PathValue("project"), ref, ev); ok {
		writeJSON(w, http.StatusAccepted, env)
	}
}

// send publishes ev about ref in project, with id as its ID when id is not
// "" (so JetStream drops a repeat), answering 500 itself (ok false). It
// publishes under a context detached from the request: a client that goes
// away does not leave what it stored without its event (the services'
// reconcilers are the backstop if the publish fails all the same).
func (s *server) send(w http.ResponseWriter, r *http.Request, id, project string, ref events.Ref, ev events.Event) (events.Envelope, bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 15*time.Second)
	defer cancel()
	var (
		env events.Envelope
		err error
	)
	if id != "" {
		env, err = s.bus.PublishWithID(ctx, id, project, ref, ev)
	} else {
		env, err = s.bus.Publish(ctx, project, ref, ev)
	}
	if err != nil {
		s.internal(w, r, err)
		return events.Envelope{}, false
	}
	return env, true
}

func principalName(r *http.Request) string {
	p, _ := auth.FromContext(r.Context())
	return p.Name
}

// actor is the caller as Kargo's create-actor annotation writes it.
func actor(r *http.Request) string {
	p, _ := auth.FromContext(r.Context())
	return auth.Actor(p)
}

// refreshRequest is the optional body of POST …/warehouses/{name}/refresh.
type refreshRequest struct {
	// Reason says why, for people reading the event ("pushed app:1.2.3").
	Reason string `json:"reason,omitempty"`
}

// maxReasonLen bounds a refresh reason.
const maxReasonLen = 200

func (s *server) refresh(w http.ResponseWriter, r *http.Request) {
	var req refreshRequest
	if r.ContentLength != 0 && !s.actionBody(w, r, &req) {
		return
	}
	if len(req.Reason) > maxReasonLen || strings.ContainsAny(req.Reason, "\r\n") {
		invalid(w, "reason", fmt.Sprintf("one line of at most %d bytes", maxReasonLen))
		return
	}
	if _, ok := s.project(w, r); !ok {
		return
	}
	project, name := r.PathValue("project"), r.PathValue("name")
	_, _, err := s.store.GetObject(r.Context(), project, model.KindWarehouse, name)
	if !s.loaded(w, r, err, model.KindWarehouse, name) {
		return
	}
	reason := "refresh requested by " + principalName(r)
	if req.Reason != "" {
		reason = req.Reason + " (" + reason + ")"
	}
	s.publish(w, r, idempotentEventID(r), events.Ref{Kind: model.KindWarehouse, Name: name},
		events.WarehouseRefreshRequested{Warehouse: name, Reason: reason})
}

// freightRequest is the body of POST …/freight.
type freightRequest struct {
	Origin  model.FreightOrigin `json:"origin"`
	Alias   string              `json:"alias,omitempty"`
	Images  []model.Image       `json:"images,omitempty"`
	Commits []model.GitCommit   `json:"commits,omitempty"`
	Charts  []model.Chart       `json:"charts,omitempty"`
}

func (s *server) createFreight(w http.ResponseWriter, r *http.Request) {
	var req freightRequest
	if !s.actionBody(w, r, &req) {
		return
	}
	project := r.PathValue("project")
	if req.Origin.Kind == "" {
		req.Origin.Kind = model.FreightOriginKindWarehouse
	}
	if req.Origin.Kind != model.FreightOriginKindWarehouse || req.Origin.Name == "" {
		invalid(w, "origin", `must be {"kind": "Warehouse", "name": "<warehouse>"}`)
		return
	}
	if len(req.Images)+len(req.Commits)+len(req.Charts) == 0 {
		invalid(w, "images", "name at least one image, commit or chart")
		return
	}
	if req.Alias != "" && !model.IsDNS1123Subdomain(req.Alias) {
		invalid(w, "alias", "must be a lower-case RFC 1123 name")
		return
	}
	ctx := r.Context()
	wh, _, err := state.GetAs[*model.Warehouse](ctx, s.store, project, model.KindWarehouse, req.Origin.Name)
	switch {
	case errors.Is(err, state.ErrNotFound):
		invalid(w, "origin.name", fmt.Sprintf("warehouse %q not found", req.Origin.Name))
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	status, _, err := state.Get[model.WarehouseStatus](ctx, s.store.KV(state.Warehouses), state.Key(project, wh.Name))
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		s.internal(w, r, err)
		return
	}
	f := &model.Freight{
		TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
		Origin:   req.Origin,
	}
	if issue := resolveArtifacts(status.DiscoveredArtifacts, &req, f); issue != nil {
		writeError(w, http.StatusBadRequest, codeInvalid, issue.Field+": "+issue.Message, *issue)
		return
	}
	aliased, err := s.aliases(ctx, project)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	taken := func(a string) bool { return len(aliased(a)) > 0 }
	f.Name = f.GenerateID()
	alias := req.Alias
	switch {
	case alias == "":
		alias, err = s.store.ReserveUniqueAlias(ctx, project, f.Name, taken)
	case taken(alias):
		conflict(w, fmt.Sprintf("alias %q is taken", alias))
		return
	default:
		err = s.store.ReserveAlias(ctx, project, alias, f.Name)
	}
	if errors.Is(err, state.ErrAliasTaken) {
		conflict(w, err.Error())
		return
	} else if err != nil {
		s.internal(w, r, err)
		return
	}
	f.Namespace = project
	f.Alias = alias
	f.Labels = map[string]string{model.LabelAlias: alias}
	// Not truncated: freight created in the same second keep their order.
	f.CreationTimestamp = model.NewTime(s.now().UTC())
	f.Default() // discoveredAt
	f.Annotations = map[string]string{model.AnnotationCreateActor: actor(r)}
	f.UID = events.NewID()
	s.auditTarget(r, project, model.KindFreight, f.Name)
	if _, err := s.store.PutObject(ctx, f, 0); err != nil {
		if errors.Is(err, state.ErrExists) {
			if idempotentEventID(r) != "" {
				// A repeat of a request whose gateway died before it
				// answered: answer with what the first one stored.
				if stored, _, err := s.findFreight(ctx, project, f.Name); err == nil && stored.Alias == f.Alias {
					writeJSON(w, http.StatusCreated, stored)
					return
				}
			}
			conflict(w, fmt.Sprintf("freight %s with these artifacts already exists", f.Name))
			return
		}
		s.internal(w, r, err)
		return
	}
	ev := events.FreightDiscovered{Freight: f.Name, Alias: alias, Origin: events.FreightOrigin{Kind: string(f.Origin.Kind), Name: f.Origin.Name}}
	if _, ok := s.send(w, r, "FreightDiscovered."+project+"."+f.Name, project, events.Ref{Kind: model.KindFreight, Name: f.Name}, ev); ok {
		writeJSON(w, http.StatusCreated, f)
	}
}

// resolveArtifacts fills f from the request, taking every artifact from
// the warehouse's discovered artifacts (nil when it has none), or returns
// the issue with the request.
func resolveArtifacts(found *model.DiscoveredArtifacts, req *freightRequest, f *model.Freight) *model.Issue {
	if found == nil {
		found = &model.DiscoveredArtifacts{}
	}
	seen := map[string]bool{}
	once := func(field, repo string) *model.Issue {
		if seen[repo] {
			return &model.Issue{Field: field, Message: fmt.Sprintf("more than one artifact of %s", repo)}
		}
		seen[repo] = true
		return nil
	}
	for i, img := range req.Images {
		field := fmt.Sprintf("images[%d]", i)
		if img.Tag == "" && img.Digest == "" {
			return &model.Issue{Field: field, Message: "name a tag or a digest"}
		}
		var hit *model.DiscoveredImageReference
		repo := ""
		for _, res := range found.Images {
			if model.NormalizeImageURL(res.RepoURL) != model.NormalizeImageURL(img.RepoURL) {
				continue
			}
			for j, ref := range res.References {
				if (img.Tag == "" || ref.Tag == img.Tag) && (img.Digest == "" || ref.Digest == img.Digest) {
					hit, repo = &res.References[j], res.RepoURL
					break
				}
			}
		}
		if hit == nil {
			return &model.Issue{Field: field, Message: fmt.Sprintf("%s %s%s was not discovered by the warehouse", img.RepoURL, img.Tag, img.Digest)}
		}
		if is := once(field, model.NormalizeImageURL(repo)); is != nil {
			return is
		}
		f.Images = append(f.Images, model.Image{RepoURL: repo, Tag: hit.Tag, Digest: hit.Digest, Annotations: hit.Annotations})
	}
	for i, c := range req.Commits {
		field := fmt.Sprintf("commits[%d]", i)
		if c.ID == "" && c.Tag == "" {
			return &model.Issue{Field: field, Message: "name a commit id or a tag"}
		}
		var hit *model.DiscoveredCommit
		repo := ""
		for _, res := range found.Git {
			if model.NormalizeGitURL(res.RepoURL) != model.NormalizeGitURL(c.RepoURL) {
				continue
			}
			for j, dc := range res.Commits {
				if (c.ID == "" || dc.ID == c.ID) && (c.Tag == "" || dc.Tag == c.Tag) {
					hit, repo = &res.Commits[j], res.RepoURL
					break
				}
			}
		}
		if hit == nil {
			return &model.Issue{Field: field, Message: fmt.Sprintf("commit %s%s of %s was not discovered by the warehouse", c.ID, c.Tag, c.RepoURL)}
		}
		if is := once(field, model.NormalizeGitURL(repo)); is != nil {
			return is
		}
		f.Commits = append(f.Commits, model.GitCommit{RepoURL: repo, ID: hit.ID, Branch: hit.Branch, Tag: hit.Tag, Message: hit.Subject, Author: hit.Author, Committer: hit.Committer})
	}
	for i, ch := range req.Charts {
		field := fmt.Sprintf("charts[%d]", i)
		ok := false
		for _, res := range found.Charts {
			if model.NormalizeChartURL(res.RepoURL) == model.NormalizeChartURL(ch.RepoURL) && res.Name == ch.Name && slices.Contains(res.Versions, ch.Version) {
				ok = true
				break
			}
		}
		if !ok {
			return &model.Issue{Field: field, Message: fmt.Sprintf("chart %s %s %s was not discovered by the warehouse", ch.RepoURL, ch.Name, ch.Version)}
		}
		if is := once(field, model.NormalizeChartURL(ch.RepoURL)+"/"+ch.Name); is != nil {
			return is
		}
		f.Charts = append(f.Charts, ch)
	}
	return nil
}

// aliasRequest is the body of PATCH …/freight/{name}.
type aliasRequest struct {
	Alias string `json:"alias"`
}

func (s *server) patchFreight(w http.ResponseWriter, r *http.Request) {
	var req aliasRequest
	if !s.actionBody(w, r, &req) {
		return
	}
	if req.Alias == "" || !model.IsDNS1123Subdomain(req.Alias) {
		invalid(w, "alias", "must be a lower-case RFC 1123 name")
		return
	}
	ctx := r.Context()
	project, name := r.PathValue("project"), r.PathValue("name")
	f, _, err := s.findFreight(ctx, project, name)
	if !s.loaded(w, r, err, model.KindFreight, name) {
		return
	}
	aliased, err := s.aliases(ctx, project)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	for _, other := range aliased(req.Alias) {
		if other != f.Name {
			conflict(w, fmt.Sprintf("alias %q is taken by freight %s", req.Alias, other))
			return
		}
	}
	s.auditTarget(r, project, model.KindFreight, f.Name)
	updated, rev, err := s.store.SetFreightAlias(ctx, project, f.Name, req.Alias)
	if errors.Is(err, state.ErrAliasTaken) {
		conflict(w, err.Error())
		return
	} else if err != nil {
		s.internal(w, r, err)
		return
	}
	updated.ResourceVersion = strconv.FormatUint(rev, 10)
	ev := events.FreightUpdated{Freight: f.Name, Alias: req.Alias, Change: "alias"}
	if _, ok := s.send(w, r, "", project, events.Ref{Kind: model.KindFreight, Name: f.Name}, ev); ok {
		writeJSON(w, http.StatusOK, updated)
	}
}

// updateFreight read-modify-writes one freight (CAS, retried); fn returning
// state.ErrNoChange leaves it as it is.
func (s *server) updateFreight(ctx context.Context, project, name string, fn func(*model.Freight) error) (*model.Freight, error) {
	var out *model.Freight
	_, rev, err := state.Update(ctx, s.store.KV(state.Freight), state.Key(project, name), func(cur json.RawMessage, exists bool) (json.RawMessage, error) {
		if !exists {
			return nil, fmt.Errorf("freight %q: %w", name, state.ErrNotFound)
		}
		obj, err := model.DecodeJSONObject(cur)
		if err != nil {
			return nil, err
		}
		f, ok := obj.(*model.Freight)
		if !ok {
			return nil, fmt.Errorf("stored freight %q is a %T", name, obj)
		}
		out = f
		if err := fn(f); err != nil {
			return nil, err
		}
		return json.Marshal(f)
	})
	if err != nil {
		return nil, err
	}
	out.ResourceVersion = strconv.FormatUint(rev, 10)
	return out, nil
}

// approveRequest is the body of POST …/freight/{name}/approve.
type approveRequest struct {
	Stage string `json:"stage"`
}

func (s *server) approveFreight(w http.ResponseWriter, r *http.Request) {
	var req approveRequest
	if !s.actionBody(w, r, &req) {
		return
	}
	if req.Stage == "" {
		invalid(w, "stage", "required")
		return
	}
	ctx := r.Context()
	project, name := r.PathValue("project"), r.PathValue("name")
	f, _, err := s.findFreight(ctx, project, name)
	if !s.loaded(w, r, err, model.KindFreight, name) {
		return
	}
	st, _, err := state.GetAs[*model.Stage](ctx, s.store, project, model.KindStage, req.Stage)
	switch {
	case errors.Is(err, state.ErrNotFound):
		invalid(w, "stage", fmt.Sprintf("stage %q not found", req.Stage))
		return
	case err != nil:
		s.internal(w, r, err)
		return
	}
	if !st.RequestsOrigin(f.Origin) {
		conflict(w, fmt.Sprintf("stage %q does not request freight from %s", st.Name, f.Origin))
		return
	}
	now := model.NewTime(s.now().UTC().Truncate(time.Second))
	s.auditTarget(r, project, model.KindFreight, f.Name)
	updated, err := s.updateFreight(ctx, project, f.Name, func(f *model.Freight) error {
		if f.IsApprovedFor(req.Stage) {
			return state.ErrNoChange
		}
		if f.Status.ApprovedFor == nil {
			f.Status.ApprovedFor = map[string]model.ApprovedStage{}
		}
		f.Status.ApprovedFor[req.Stage] = model.ApprovedStage{ApprovedAt: now}
		return nil
	})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if updated == nil {
		updated = f
	}
	ev := events.FreightApproved{Freight: f.Name, Stage: req.Stage}
	if _, ok := s.send(w, r, "FreightApproved."+project+"."+f.Name+"."+req.Stage, project, events.Ref{Kind: model.KindFreight, Name: f.Name}, ev); ok {
		writeJSON(w, http.StatusOK, updated)
	}
}

// promoteRequest is the body of POST …/stages/{stage}/promotions: the
// freight by name, unique prefix or alias, or the warehouse whose newest
// available freight to take.
type promoteRequest struct {
	Freight   string `json:"freight,omitempty"`
	Warehouse string `json:"warehouse,omitempty"`
	// WindowOverride lets the promotion run while promotion windows are
	// closed (project admins only; the reason is recorded).
	WindowOverride *windowOverride `json:"windowOverride,omitempty"`
}

func (s *server) promote(w http.ResponseWriter, r *http.Request) {
	var req promoteRequest
	if !s.actionBody(w, r, &req) {
		return
	}
	if (req.Freight == "") == (req.Warehouse == "") {
		invalid(w, "freight", `name either "freight" (name or alias) or "warehouse"`)
		return
	}
	dryRun, ok := dryRunParam(w, r)
	if !ok {
		return
	}
	st, ok := s.stage(w, r)
	if !ok {
		return
	}
	if st.IsControlFlow() {
		conflict(w, fmt.Sprintf("stage %q is a control-flow stage (it has no promotion steps): nothing is promoted into it; the freight available to it passes downstream on its own", st.Name))
		return
	}
	// A dry run changes nothing: promotion windows do not hold it.
	var override string
	if dryRun && req.WindowOverride != nil {
		invalid(w, "windowOverride", "a dry run changes nothing, so promotion windows do not hold it: leave windowOverride out")
		return
	}
	if !dryRun {
		if override, ok = s.checkWindows(w, r, st, req.WindowOverride); !ok {
			return
		}
	}
	ctx := r.Context()
	project := st.Namespace
	now := s.now()
	var f *model.Freight
	if req.Freight != "" {
		var err error
		f, _, err = s.findFreight(ctx, project, req.Freight)
		if !s.loaded(w, r, err, model.KindFreight, req.Freight) {
			return
		}
		if ok, why := model.FreightAvailable(f, st, now); !ok {
			writeError(w, http.StatusConflict, codeNotAvailable, fmt.Sprintf("freight %s is not available to stage %q: %s", f.Name, st.Name, why))
			return
		}
	} else {
		var err error
		if f, err = s.newestAvailable(ctx, st, req.Warehouse, now); err != nil {
			s.internal(w, r, err)
			return
		}
		if f == nil {
			writeError(w, http.StatusConflict, codeNotAvailable, fmt.Sprintf("no freight from warehouse %q is available to stage %q", req.Warehouse, st.Name))
			return
		}
	}
	if dryRun {
		s.dryRun(w, r, model.NewPromotion(st, f, events.NewID(), principalName(r), now))
		return
	}
	// With an Idempotency-Key the promotion's name is derived from it, so
	// a repeat of a request whose gateway died mid-way finds the promotion
	// the first one stored instead of storing a second.
	p := model.NewPromotion(st, f, idempotencyID(r, events.NewID), principalName(r), now)
	p.Annotations[model.AnnotationCreateActor] = actor(r)
	if override != "" {
		p.Annotations[model.AnnotationWindowOverride] = override
	}
	s.auditTarget(r, project, model.KindPromotion, p.Name)
	p, err := s.storePromotion(ctx, p)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if override != "" {
		noteAudit(r, "override", "Promotion/"+p.Name, "promotion windows overridden: "+req.WindowOverride.Reason)
	} else {
		noteAudit(r, "", "Promotion/"+p.Name, "")
	}
	ev := events.PromotionRequested{Promotion: p.Name, Stage: st.Name, Freight: f.Name}
	if _, ok := s.send(w, r, "PromotionRequested."+project+"."+p.Name, project, events.Ref{Kind: model.KindPromotion, Name: p.Name}, ev); ok {
		writeJSON(w, http.StatusCreated, p)
	}
}

// storePromotion stores a new Promotion (with a fresh UID), or returns the
// one stored under its name already (a repeat of the same request).
func (s *server) storePromotion(ctx context.Context, p *model.Promotion) (*model.Promotion, error) {
	p.UID = events.NewID()
	rev, err := s.store.PutObject(ctx, p, 0)
	if errors.Is(err, state.ErrExists) {
		var stored *model.Promotion
		stored, rev, err = state.GetAs[*model.Promotion](ctx, s.store, p.Namespace, model.KindPromotion, p.Name)
		if err == nil {
			p = stored
		}
	}
	if err != nil {
		return nil, err
	}
	p.ResourceVersion = strconv.FormatUint(rev, 10)
	return p, nil
}

// newestAvailable is the newest freight available to st at now, from the
// Warehouse named warehouse only when it is not "".
func (s *server) newestAvailable(ctx context.Context, st *model.Stage, warehouse string, now time.Time) (*model.Freight, error) {
	avail, err := s.available(ctx, st, now)
	if err != nil {
		return nil, err
	}
	var f *model.Freight
	for _, a := range avail {
		if warehouse != "" && a.Origin != (model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: warehouse}) {
			continue
		}
		if f == nil || model.Newer(a, f) {
			f = a
		}
	}
	return f, nil
}

// available lists the freight that may be promoted into st at now, in no
// particular order.
func (s *server) available(ctx context.Context, st *model.Stage, now time.Time) ([]*model.Freight, error) {
	if s.index != nil {
		sets, err := s.index.Freight(ctx)
		if err != nil {
			return nil, err
		}
		return availableIn(sets, st, now, nil, 0), nil
	}
	all, err := s.allFreight(ctx, st.Namespace)
	if err != nil {
		return nil, err
	}
	// Freight of an origin the stage takes directly is available whatever
	// its status (the first request of an origin decides, as in
	// model.FreightAvailable); that skips building a reason per freight.
	direct := map[model.FreightOrigin]bool{}
	for _, req := range st.Spec.RequestedFreight {
		if _, seen := direct[req.Origin]; !seen {
			direct[req.Origin] = req.Sources.Direct
		}
	}
	var out []*model.Freight
	for _, f := range all {
		isDirect, requested := direct[f.Origin]
		if !requested {
			continue
		}
		if isDirect {
			out = append(out, f)
			continue
		}
		if ok, _ := model.FreightAvailable(f, st, now); ok {
			out = append(out, f)
		}
	}
	return out, nil
}

// availableIn lists the freight of the stage's project that may be
// promoted into st at now and that keep (nil: all) keeps, reading the
// index's lists newest first: every freight of an origin the stage takes
// directly, else those approved for it or verified in its upstream stages
// (no other freight can be available). perList > 0 stops each list after
// that many: enough for the first perList of the whole, newest first.
func availableIn(sets *freightindex.Sets, st *model.Stage, now time.Time, keep func(*model.Freight) bool, perList int) []*model.Freight {
	seen := map[string]bool{}
	var out []*model.Freight
	walk := func(o model.FreightOrigin, rel freightindex.Relation, stage string) {
		n := 0
		sets.Walk(st.Namespace, o, rel, stage, func(f *model.Freight) bool {
			if seen[f.Name] || (keep != nil && !keep(f)) {
				return true
			}
			if ok, _ := model.FreightAvailable(f, st, now); !ok {
				return true
			}
			seen[f.Name] = true
			out = append(out, f)
			n++
			return perList <= 0 || n < perList
		})
	}
	done := map[model.FreightOrigin]bool{}
	for _, req := range st.Spec.RequestedFreight {
		// The first request of an origin decides (model.FreightAvailable).
		if done[req.Origin] {
			continue
		}
		done[req.Origin] = true
		if req.Sources.Direct {
			walk(req.Origin, freightindex.All, "")
			continue
		}
		walk(req.Origin, freightindex.ApprovedFor, st.Name)
		for _, up := range req.Sources.Stages {
			walk(req.Origin, freightindex.VerifiedIn, up)
		}
	}
	return out
}

// availableFreight answers GET …/freight?stage=S: the freight available to
// promote into S, in the list's order (newest first by default).
func (s *server) availableFreight(w http.ResponseWriter, r *http.Request, order string, limit int, after string) {
	q := r.URL.Query()
	project, name := r.PathValue("project"), q.Get("stage")
	st, _, err := state.GetAs[*model.Stage](r.Context(), s.store, project, model.KindStage, name)
	if !s.loaded(w, r, err, model.KindStage, name) {
		return
	}
	var objs []model.Object
	if s.index != nil && order == sortNewest {
		// Newest first is the index's own order: read only as far as
		// the page goes.
		sets, err := s.index.Freight(r.Context())
		if err != nil {
			s.internal(w, r, err)
			return
		}
		var mark model.Object
		if after != "" {
			c, ok := parseCursor(after)
			if !ok {
				invalid(w, "continue", "not a token this server issued")
				return
			}
			mark = markAt(c)
		}
		keep := func(f *model.Freight) bool {
			return (mark == nil || compareNewest(f, mark) > 0) && matchFreight(q, f)
		}
		for _, f := range availableIn(sets, st, s.now(), keep, limit+1) {
			objs = append(objs, f)
		}
	} else {
		avail, err := s.available(r.Context(), st, s.now())
		if err != nil {
			s.internal(w, r, err)
			return
		}
		for _, f := range avail {
			if matchFreight(q, f) {
				objs = append(objs, f)
			}
		}
	}
	page, next, ok := pageOrdered(objs, order, limit, after)
	if !ok {
		invalid(w, "continue", "not a token this server issued")
		return
	}
	s.writeList(w, r, model.KindFreight, page, next)
}

func (s *server) abortPromotion(w http.ResponseWriter, r *http.Request) {
	project, name := r.PathValue("project"), r.PathValue("name")
	p, _, err := state.GetAs[*model.Promotion](r.Context(), s.store, project, model.KindPromotion, name)
	if !s.loaded(w, r, err, model.KindPromotion, name) {
		return
	}
	if p.Status.Phase.IsTerminal() {
		conflict(w, fmt.Sprintf("promotion %s already ended (%s)", name, p.Status.Phase))
		return
	}
	// The request is kept on the promotion (Kargo's abort annotation), so
	// the promoter aborts it even if the event is lost.
	s.auditTarget(r, project, model.KindPromotion, name)
	_, _, err = state.Update(r.Context(), s.store.KV(state.Promotions), state.Key(project, name), func(cur model.Promotion, exists bool) (model.Promotion, error) {
		if !exists || cur.Status.Phase.IsTerminal() || cur.Annotations[model.AnnotationAbort] != "" {
			return cur, state.ErrNoChange
		}
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[model.AnnotationAbort] = "aborted by " + principalName(r)
		return cur, nil
	})
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.publish(w, r, "PromotionAbortRequested."+project+"."+name, events.Ref{Kind: model.KindPromotion, Name: name},
		events.PromotionAbortRequested{Promotion: name, Stage: p.Spec.Stage})
}

func (s *server) verify(w http.ResponseWriter, r *http.Request) {
	st, ok := s.stage(w, r)
	if !ok {
		return
	}
	if st.Spec.Verification == nil {
		conflict(w, fmt.Sprintf("stage %q has no verification", st.Name))
		return
	}
	status, _, err := state.Get[model.StageStatus](r.Context(), s.store.KV(state.Stages), state.Key(st.Namespace, st.Name))
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		s.internal(w, r, err)
		return
	}
	freight := ""
	if len(status.FreightHistory) > 0 {
		for _, ref := range status.FreightHistory[0].Freight {
			freight = ref.Name
			break
		}
	}
	if freight == "" {
		conflict(w, fmt.Sprintf("stage %q has no freight to verify", st.Name))
		return
	}
	s.publish(w, r, idempotentEventID(r), events.Ref{Kind: model.KindStage, Name: st.Name}, events.VerificationRequested{Stage: st.Name, Freight: freight})
}

func (s *server) abortVerification(w http.ResponseWriter, r *http.Request) {
	st, ok := s.stage(w, r)
	if !ok {
		return
	}
	// As POST answers 409 for a stage without verification, DELETE answers
	// 409 when there is nothing to abort.
	if st.Spec.Verification == nil {
		conflict(w, fmt.Sprintf("stage %q has no verification", st.Name))
		return
	}
	status, _, err := state.Get[model.StageStatus](r.Context(), s.store.KV(state.Stages), state.Key(st.Namespace, st.Name))
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		s.internal(w, r, err)
		return
	}
	if !verifying(status) {
		conflict(w, fmt.Sprintf("stage %q has no verification running", st.Name))
		return
	}
	s.publish(w, r, "", events.Ref{Kind: model.KindStage, Name: st.Name}, events.VerificationAbortRequested{Stage: st.Name})
}

func (s *server) resumeAutoPromotion(w http.ResponseWriter, r *http.Request) {
	st, ok := s.stage(w, r)
	if !ok {
		return
	}
	s.publish(w, r, idempotentEventID(r), events.Ref{Kind: model.KindStage, Name: st.Name}, events.AutoPromotionResumeRequested{Stage: st.Name})
}

// verifying reports whether the stage's current freight has a
// verification that has not ended (or the stage waits for one).
func verifying(st model.StageStatus) bool {
	if st.Phase == model.StagePhaseVerifying {
		return true
	}
	if len(st.FreightHistory) == 0 {
		return false
	}
	vh := st.FreightHistory[0].VerificationHistory
	return len(vh) > 0 && !vh[0].Phase.IsTerminal()
}
