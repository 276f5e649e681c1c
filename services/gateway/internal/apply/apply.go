// Package apply writes decoded resources to the store the way kubectl apply
// does to Kargo: validate everything first, then create, update or leave
// each object, keeping server-set metadata, and announce every change.
package apply

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Actions reported per document.
const (
	Created   = "created"
	Updated   = "updated"
	Unchanged = "unchanged"
	Deleted   = "deleted"
	NotFound  = "notfound"
)

// ErrEmpty means the body held no document.
var ErrEmpty = errors.New("the body holds no documents")

// maxAttempts bounds the read-modify-write retries of one document.
const maxAttempts = 5

// Publisher publishes events and purges a deleted project's (events.Bus).
type Publisher interface {
	Publish(ctx context.Context, project string, subject events.Ref, ev events.Event) (events.Envelope, error)
	PurgeProject(ctx context.Context, project string) error
	PublishWithID(ctx context.Context, id, project string, subject events.Ref, ev events.Event) (events.Envelope, error)
}

// Result is what happened to one document.
type Result struct {
	Kind    string `json:"kind"`
	Project string `json:"project,omitempty"`
	Name    string `json:"name"`
	Action  string `json:"action"`
}

// Outcome is the answer to an apply or delete.
type Outcome struct {
	Results  []Result     `json:"results"`
	Warnings model.Issues `json:"warnings,omitempty"`
}

// Applier applies and deletes resources. It is safe for concurrent use.
type Applier struct {
	store *state.Store
	bus   Publisher
	now   func() time.Time
}

// New returns an Applier writing to store and publishing on bus.
func New(store *state.Store, bus Publisher) *Applier {
	return &Applier{store: store, bus: bus, now: time.Now}
}

// Decode decodes a body. Invalid documents come back as model.Issues (with
// secret values scrubbed from the messages).
func Decode(body []byte) (*model.Decoded, error) {
	dec, err := model.Decode(body)
	var issues model.Issues
	if errors.As(err, &issues) {
		return nil, scrub(issues)
	}
	if err != nil {
		return nil, err
	}
	if len(dec.Documents) == 0 {
		return nil, ErrEmpty
	}
	dec.Warnings = scrub(dec.Warnings)
	return dec, nil
}

// credentialIssues are the problems of credentials Secrets that would
// make every use of them fail (pkg/creds.Check).
func credentialIssues(docs []model.Document) model.Issues {
	var out model.Issues
	for _, d := range docs {
		sec, ok := d.Object.(*model.Secret)
		if !ok {
			continue
		}
		for _, p := range creds.Check(sec) {
			out = append(out, model.Issue{Document: d.Index, Kind: model.KindSecret, Name: sec.Name, Field: "data." + p.Field, Message: p.Message})
		}
	}
	return out
}

// scrub hides messages about the values of Secret data, which may quote them.
func scrub(issues model.Issues) model.Issues {
	for i, is := range issues {
		if is.Kind == model.KindSecret && (strings.HasPrefix(is.Field, "data") || strings.HasPrefix(is.Field, "stringData")) {
			issues[i].Message = "invalid value (not shown: secret data)"
		}
	}
	return issues
}

// Apply decodes and validates body as a whole — nothing is written when any
// document is invalid (the error is model.Issues) — then applies each
// document in order.
func (a *Applier) Apply(ctx context.Context, body []byte) (*Outcome, error) {
	dec, err := Decode(body)
	if err != nil {
		return nil, err
	}
	existing, err := a.existing(ctx, dec.Documents)
	if err != nil {
		return nil, err
	}
	issues := model.Validate(dec.Documents, existing)
	more, err := a.checkPromotions(ctx, dec.Documents, existing)
	if err != nil {
		return nil, err
	}
	issues = append(issues, more...)
	if more, err = a.checkAliases(ctx, dec.Documents); err != nil {
		return nil, err
	}
	issues = scrub(append(issues, more...))
	// After the scrub: these name the field and never quote its value.
	if issues = append(issues, credentialIssues(dec.Documents)...); len(issues) > 0 {
		return nil, issues
	}
	out := &Outcome{Results: make([]Result, 0, len(dec.Documents)), Warnings: dec.Warnings}
	for _, d := range dec.Documents {
		res, prev, next, err := a.applyOne(ctx, d.Object)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", d.Index, err)
		}
		out.Results = append(out.Results, res)
		if res.Action == Unchanged {
			continue
		}
		warns, err := a.requests(ctx, d.Index, res.Project, prev, next)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", d.Index, err)
		}
		out.Warnings = append(out.Warnings, warns...)
	}
	return out, nil
}

// existing loads what validation checks references against: the Projects
// the documents touch, and their Warehouses and Stages.
func (a *Applier) existing(ctx context.Context, docs []model.Document) ([]model.Object, error) {
	projects := map[string]bool{}
	for _, d := range docs {
		if p := model.ProjectName(d.Object); p != "" {
			projects[p] = true
		}
	}
	var out []model.Object
	for p := range projects {
		obj, _, err := a.store.GetObject(ctx, "", model.KindProject, p)
		switch {
		case errors.Is(err, state.ErrNotFound):
			continue
		case err != nil:
			return nil, fmt.Errorf("load project %q: %w", p, err)
		}
		out = append(out, obj)
		for _, kind := range []string{model.KindWarehouse, model.KindStage} {
			objs, _, err := a.store.ListObjects(ctx, p, kind, 0, "")
			if err != nil {
				return nil, fmt.Errorf("load %ss of project %q: %w", kind, p, err)
			}
			out = append(out, objs...)
		}
	}
	return out, nil
}

// storeProject is the project an object is stored under ("" for
// cluster-scoped kinds).
func storeProject(obj model.Object) string {
	if model.ClusterScoped(obj.GetTypeMeta().Kind) {
		return ""
	}
	return obj.GetObjectMeta().Namespace
}

// applyOne writes one object and announces it; it returns the object as
// it was (nil when created) and as written.
func (a *Applier) applyOne(ctx context.Context, want model.Object) (Result, model.Object, model.Object, error) {
	kind, meta := want.GetTypeMeta().Kind, want.GetObjectMeta()
	res := Result{Kind: kind, Project: model.ProjectName(want), Name: meta.Name}
	for attempt := 1; ; attempt++ {
		cur, rev, err := a.store.GetObject(ctx, storeProject(want), kind, meta.Name)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return res, nil, nil, fmt.Errorf("read %s %q: %w", kind, meta.Name, err)
		}
		if err != nil {
			cur = nil
		}
		next, action, err := a.merge(ctx, want, cur)
		if err != nil {
			return res, nil, nil, err
		}
		res.Action = action
		if action == Unchanged {
			return res, cur, cur, nil
		}
		if err := a.reserveAlias(ctx, next, cur); err != nil {
			return res, nil, nil, err
		}
		_, err = a.store.PutObject(ctx, next, rev)
		if (errors.Is(err, state.ErrConflict) || errors.Is(err, state.ErrExists)) && attempt < maxAttempts {
			continue
		}
		if err != nil {
			return res, nil, nil, fmt.Errorf("write %s %q: %w", kind, meta.Name, err)
		}
		a.releaseAlias(ctx, next, cur)
		ev := events.ResourceApplied{Kind: kind, Name: meta.Name, Action: action, Generation: next.GetObjectMeta().Generation}
		if _, err := a.bus.Publish(ctx, res.Project, events.Ref{Kind: kind, Name: meta.Name}, ev); err != nil {
			return res, nil, nil, fmt.Errorf("announce %s %q: %w", kind, meta.Name, err)
		}
		return res, cur, next, nil
	}
}

// merge returns the object to write for want given the stored cur (nil when
// absent) and the action it amounts to. want is not modified. A new object
// gets the caller as its kargo.akuity.io/create-actor; an existing one
// keeps its own.
func (a *Applier) merge(ctx context.Context, want, cur model.Object) (model.Object, string, error) {
	next, err := clone(want)
	if err != nil {
		return nil, "", err
	}
	setStatus(next, cur)
	setCreateActor(ctx, next, cur)
	if f, ok := next.(*model.Freight); ok && f.DiscoveredAt == nil {
		if c, ok := cur.(*model.Freight); ok {
			f.DiscoveredAt = c.DiscoveredAt // defaulted at creation
		}
	}
	meta := next.GetObjectMeta()
	if cur == nil {
		uid, err := newUID()
		if err != nil {
			return nil, "", err
		}
		meta.UID = uid
		meta.CreationTimestamp = model.NewTime(a.now())
		meta.Generation = 1
		meta.ResourceVersion = ""
		if f, ok := next.(*model.Freight); ok {
			f.Default() // discoveredAt: the creation time
		}
		return next, Created, nil
	}
	same, err := specEqual(next, cur)
	if err != nil {
		return nil, "", err
	}
	if same {
		return cur, Unchanged, nil
	}
	old := cur.GetObjectMeta()
	meta.UID = old.UID
	meta.CreationTimestamp = old.CreationTimestamp
	meta.Generation = old.Generation + 1
	meta.ResourceVersion = ""
	return next, Updated, nil
}

// setStatus drops any status the client sent: Stage, Warehouse, Project and
// ProjectConfig status is kept by other services in buckets of their own,
// and Freight and Promotions keep the status stored with them.
func setStatus(obj, cur model.Object) {
	switch o := obj.(type) {
	case *model.Stage:
		o.Status = model.StageStatus{}
	case *model.Warehouse:
		o.Status = model.WarehouseStatus{}
	case *model.Project:
		o.Status = model.ProjectStatus{}
	case *model.ProjectConfig:
		o.Status = model.ProjectConfigStatus{}
	case *model.Freight:
		o.Status = model.FreightStatus{}
		if c, ok := cur.(*model.Freight); ok {
			o.Status = c.Status
		}
	case *model.Promotion:
		o.Status = model.PromotionStatus{}
		if c, ok := cur.(*model.Promotion); ok {
			o.Status = c.Status
		}
	}
}

// serverFields are the metadata fields the server sets; they take no part
// in deciding whether an object changed.
var serverFields = []string{"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"}

// canonical returns the JSON of obj without status and server-set metadata.
func canonical(obj model.Object) ([]byte, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", obj.GetTypeMeta().Kind, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("encode %s: %w", obj.GetTypeMeta().Kind, err)
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		for _, f := range serverFields {
			delete(meta, f)
		}
	}
	return json.Marshal(m) // map keys come out sorted
}

func specEqual(x, y model.Object) (bool, error) {
	a, err := canonical(x)
	if err != nil {
		return false, err
	}
	b, err := canonical(y)
	if err != nil {
		return false, err
	}
	return bytes.Equal(a, b), nil
}

func clone(obj model.Object) (model.Object, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", obj.GetTypeMeta().Kind, err)
	}
	return model.DecodeJSONObject(b)
}

// newUID returns a random (version 4) UUID.
func newUID() (string, error) {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", fmt.Errorf("generate uid: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16]), nil
}

// Delete decodes body — nothing is deleted when any document is invalid
// or repeated — and deletes each named object; an absent one is reported
// as NotFound. Deleting a Project deletes everything of the project (see
// deleteProject).
func (a *Applier) Delete(ctx context.Context, body []byte) (*Outcome, error) {
	dec, err := Decode(body)
	if err != nil {
		return nil, err
	}
	if issues := model.Duplicates(dec.Documents); len(issues) > 0 {
		return nil, issues
	}
	out := &Outcome{Results: make([]Result, 0, len(dec.Documents)), Warnings: dec.Warnings}
	for _, d := range dec.Documents {
		kind, name := d.Object.GetTypeMeta().Kind, d.Object.GetObjectMeta().Name
		res := Result{Kind: kind, Project: model.ProjectName(d.Object), Name: name, Action: Deleted}
		if kind == model.KindProject {
			action, err := a.deleteProject(ctx, name)
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", d.Index, err)
			}
			res.Action = action
			out.Results = append(out.Results, res)
			continue
		}
		err := a.store.DeleteObject(ctx, storeProject(d.Object), kind, name)
		switch {
		case errors.Is(err, state.ErrNotFound):
			res.Action = NotFound
		case err != nil:
			return nil, fmt.Errorf("document %d: delete %s %q: %w", d.Index, kind, name, err)
		default:
			ev := events.ResourceDeleted{Kind: kind, Name: name}
			if _, err := a.bus.Publish(ctx, res.Project, events.Ref{Kind: kind, Name: name}, ev); err != nil {
				return nil, fmt.Errorf("document %d: announce deletion of %s %q: %w", d.Index, kind, name, err)
			}
		}
		out.Results = append(out.Results, res)
	}
	return out, nil
}

// deleteProject deletes a Project and everything of it, in this order:
// the Project (from then on nothing is applied to it and its API tokens
// are refused), its events and dead letters, every key of the project in
// every bucket (resources, Secrets, tokens, status, freight, promotions,
// queues, leases, verification records), then ResourceDeleted for the
// Project, on which the services drop what they keep of it. Deleting a
// project that is already gone runs the cascade again, so a deletion that
// was cut short is finished by deleting once more.
func (a *Applier) deleteProject(ctx context.Context, name string) (string, error) {
	action := Deleted
	err := a.store.DeleteObject(ctx, "", model.KindProject, name)
	switch {
	case errors.Is(err, state.ErrNotFound):
		action = NotFound
	case err != nil:
		return "", fmt.Errorf("delete Project %q: %w", name, err)
	}
	if err := a.bus.PurgeProject(ctx, name); err != nil {
		return "", err
	}
	n, err := a.store.DeleteProject(ctx, name)
	if err != nil {
		return "", err
	}
	if action == NotFound && n == 0 {
		return NotFound, nil
	}
	ev := events.ResourceDeleted{Kind: model.KindProject, Name: name}
	if _, err := a.bus.Publish(ctx, name, events.Ref{Kind: model.KindProject, Name: name}, ev); err != nil {
		return "", fmt.Errorf("announce deletion of Project %q: %w", name, err)
	}
	return action, nil
}
