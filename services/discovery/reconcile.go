package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/discovery/internal/charts"
	"github.com/caravan-cd/caravan/services/discovery/internal/freight"
	"github.com/caravan-cd/caravan/services/discovery/internal/gitrepo"
	"github.com/caravan-cd/caravan/services/discovery/internal/images"
)

// AnnouncedAnnotation marks Freight whose FreightDiscovered event was
// published. See announce.
const AnnouncedAnnotation = "discovery.caravan.dev/announced"

// Condition types and reasons of a Warehouse's status.
const (
	ConditionReady   = "Ready"
	ConditionHealthy = "Healthy"

	ReasonDiscovered      = "ArtifactsDiscovered"
	ReasonDiscoveryFailed = "DiscoveryFailed"
)

// errGone: the Warehouse no longer exists.
var errGone = errors.New("warehouse deleted")

// discoverer discovers one Warehouse at a time; it is safe for concurrent
// use on different Warehouses.
type discoverer struct {
	store  *state.Store
	bus    *events.Bus
	images *images.Client
	git    *gitrepo.Client
	charts *charts.Client
	// creds finds repository credentials (nil: Secrets of store, tokens
	// exchanged anew each time).
	creds *creds.Finder
	now   func() time.Time
	// aliasIdx, when set, answers which aliases are taken (otherwise, or
	// when it is not current, every Freight of the project is read).
	aliasIdx *aliasIndex
}

// credentials are project's credentials of credType for repoURL (nil:
// anonymous).
func (d *discoverer) credentials(ctx context.Context, project, credType, repoURL string) (*creds.Credentials, error) {
	if d.creds == nil {
		return creds.Find(ctx, creds.Store{Store: d.store}, project, credType, repoURL)
	}
	return d.creds.Find(ctx, project, credType, repoURL)
}

// request is what a worker is asked to do: a full discovery, or hints
// only.
type request struct {
	full  bool
	hints []events.ArtifactHint
	// traceParent is the trace context of the event that asked (W3C
	// traceparent), so that the discovery continues its trace; merged
	// requests keep the first.
	traceParent string
}

func (r *request) merge(o request) {
	r.full = r.full || o.full
	if r.traceParent == "" {
		r.traceParent = o.traceParent
	}
	if !r.full {
		r.hints = append(r.hints, o.hints...)
	} else {
		r.hints = nil
	}
}

// outcome is what one discovery did.
type outcome struct {
	freight   *model.Freight // the Freight of the newest artifacts (nil: none)
	announced bool           // FreightDiscovered was published by this run
	interval  time.Duration  // the Warehouse's spec.interval
}

// discover runs one discovery of project/name: finds artifacts (all, or
// only what the hints name), writes the Warehouse status, and creates and
// announces new Freight when the policy is Automatic.
//
// The status is written under grant, the replica's lease on the Warehouse:
// a replica whose lease passed on gets lease.ErrFenced instead of writing.
func (d *discoverer) discover(ctx context.Context, project, name string, req request, grant lease.Grant) (outcome, error) {
	var out outcome
	w, _, err := state.GetAs[*model.Warehouse](ctx, d.store, project, model.KindWarehouse, name)
	if errors.Is(err, state.ErrNotFound) {
		return out, errGone
	}
	if err != nil {
		return out, err
	}
	w.Default()
	out.interval = w.Spec.Interval.Duration
	statusKV := d.store.KV(state.Warehouses)
	key := state.Key(project, name)
	prev, _, err := state.Get[model.WarehouseStatus](ctx, statusKV, key)
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return out, err
	}
	full := req.full || !shapeMatches(w, prev.DiscoveredArtifacts)
	art, changed, derr := d.artifacts(ctx, w, prev.DiscoveredArtifacts, full, req.hints)
	if derr == nil && !changed && !full {
		return out, nil // a hint that changes nothing: no write at all
	}
	// The Warehouse, or its project, may have been deleted while the
	// artifacts were fetched: then nothing is written for it.
	if cur, _, err := d.store.GetObject(ctx, project, model.KindWarehouse, name); errors.Is(err, state.ErrNotFound) || (err == nil && cur.GetObjectMeta().UID != w.UID) {
		return out, errGone
	}

	// Freight is stored before the status names it and announced after,
	// so whoever handles FreightDiscovered finds both in place.
	var f *model.Freight
	var publish bool
	var ferr error
	if derr == nil {
		f, ferr = d.candidate(w, art)
		if f != nil && ferr == nil {
			f, publish, ferr = d.createFreight(ctx, f)
		}
		out.freight = f
	}
	failure := ""
	if derr != nil {
		failure = derr.Error()
	}
	_, _, err = state.Update(ctx, statusKV, key, func(cur model.WarehouseStatus, _ bool) (model.WarehouseStatus, error) {
		if err := lease.Admit(&cur.Fence, grant); err != nil {
			return cur, err
		}
		now := d.now()
		cur.ObservedGeneration = w.Generation
		cur.LastRunAt = model.NewTime(now)
		if failure != "" {
			setCondition(&cur, ConditionReady, model.ConditionFalse, ReasonDiscoveryFailed, failure, w.Generation, now)
			setCondition(&cur, ConditionHealthy, model.ConditionFalse, ReasonDiscoveryFailed, failure, w.Generation, now)
			return cur, nil
		}
		cur.DiscoveredArtifacts = art
		if f != nil && ferr == nil {
			cur.LastFreightID = f.Name
		}
		msg := summary(art)
		if ferr != nil {
			msg += "; " + ferr.Error()
		}
		setCondition(&cur, ConditionReady, model.ConditionTrue, ReasonDiscovered, msg, w.Generation, now)
		setCondition(&cur, ConditionHealthy, model.ConditionTrue, ReasonDiscovered, msg, w.Generation, now)
		return cur, nil
	})
	var perr error
	if publish && ferr == nil {
		perr = d.publish(ctx, f)
		out.announced = perr == nil
	}
	return out, errors.Join(derr, ferr, err, perr)
}

// shapeMatches reports whether art holds one result per subscription, in
// order, so a hint can update it in place.
func shapeMatches(w *model.Warehouse, art *model.DiscoveredArtifacts) bool {
	if art == nil {
		return false
	}
	var gi, ii, ci int
	for _, s := range w.Spec.Subscriptions {
		switch {
		case s.Git != nil:
			if gi >= len(art.Git) || art.Git[gi].RepoURL != s.Git.RepoURL {
				return false
			}
			gi++
		case s.Image != nil:
			if ii >= len(art.Images) || art.Images[ii].RepoURL != s.Image.RepoURL || art.Images[ii].Platform != s.Image.Platform {
				return false
			}
			ii++
		case s.Chart != nil:
			if ci >= len(art.Charts) || art.Charts[ci].RepoURL != s.Chart.RepoURL || art.Charts[ci].Name != s.Chart.Name {
				return false
			}
			ci++
		}
	}
	return gi == len(art.Git) && ii == len(art.Images) && ci == len(art.Charts)
}

// artifacts discovers every subscription (full) or folds the hints into
// prev. Errors name the subscription and explain the cause.
func (d *discoverer) artifacts(ctx context.Context, w *model.Warehouse, prev *model.DiscoveredArtifacts, full bool, hints []events.ArtifactHint) (*model.DiscoveredArtifacts, bool, error) {
	art := &model.DiscoveredArtifacts{DiscoveredAt: model.Time{Time: d.now()}}
	if !full {
		art.Git = slices.Clone(prev.Git)
		art.Images = slices.Clone(prev.Images)
		art.Charts = slices.Clone(prev.Charts)
	}
	// A URL stored before the repository URL policy refused its form (a
	// password written in it, say) is refused before any request.
	for i, sub := range w.Spec.Subscriptions {
		field, kind, u := fmt.Sprintf("spec.subscriptions[%d]", i), model.RepoKind(""), ""
		switch {
		case sub.Image != nil:
			field, kind, u = field+".image.repoURL", model.RepoImage, sub.Image.RepoURL
		case sub.Git != nil:
			field, kind, u = field+".git.repoURL", model.RepoGit, sub.Git.RepoURL
		case sub.Chart != nil:
			field, kind, u = field+".chart.repoURL", model.RepoChart, sub.Chart.RepoURL
		default:
			continue
		}
		if err := model.CheckRepoURL(kind, u); err != nil {
			return nil, false, fmt.Errorf("%s: %w", field, err)
		}
	}
	changed := false
	var errs []error
	var gi, ii, ci int
	for _, sub := range w.Spec.Subscriptions {
		switch {
		case sub.Image != nil:
			s := *sub.Image
			i := ii
			ii++
			var hs []events.ArtifactHint
			if !full {
				hs = matching(hints, func(h events.ArtifactHint) bool {
					return h.Tag != "" && model.NormalizeImageURL(h.RepoURL) == model.NormalizeImageURL(s.RepoURL)
				})
				if len(hs) == 0 {
					continue
				}
			}
			cr, err := d.credentials(ctx, w.Namespace, model.CredTypeImage, s.RepoURL)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if full {
				res, err := d.images.Discover(ctx, s, cr)
				if err != nil {
					errs = append(errs, fmt.Errorf("image %s: %s", s.RepoURL, images.Explain(err)))
					continue
				}
				res.SubscriptionName = sub.Name
				art.Images = append(art.Images, res)
				continue
			}
			refs := art.Images[i].References
			for _, h := range hs {
				next, ch, err := d.images.Evaluate(ctx, s, cr, refs, h.Tag, h.Digest)
				if err != nil {
					errs = append(errs, fmt.Errorf("image %s: %s", s.RepoURL, images.Explain(err)))
					break
				}
				refs, changed = next, changed || ch
			}
			art.Images[i].References = refs
		case sub.Git != nil:
			s := *sub.Git
			i := gi
			gi++
			var hs []events.ArtifactHint
			if !full {
				hs = matching(hints, func(h events.ArtifactHint) bool {
					return model.NormalizeGitURL(h.RepoURL) == model.NormalizeGitURL(s.RepoURL)
				})
				if len(hs) == 0 {
					continue
				}
			}
			cr, err := d.credentials(ctx, w.Namespace, model.CredTypeGit, s.RepoURL)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			var res model.GitDiscoveryResult
			if full {
				res, err = d.git.Discover(ctx, w.Namespace, s, cr)
			} else {
				res, err = d.git.Refresh(ctx, w.Namespace, s, cr, hintCommits(hs))
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("git %s: %s", s.RepoURL, gitrepo.Explain(err)))
				continue
			}
			res.SubscriptionName = sub.Name
			if full {
				art.Git = append(art.Git, res)
			} else {
				changed = changed || !slices.EqualFunc(res.Commits, art.Git[i].Commits, func(a, b model.DiscoveredCommit) bool { return a.ID == b.ID && a.Tag == b.Tag })
				art.Git[i] = res
			}
		case sub.Chart != nil:
			s := *sub.Chart
			i := ci
			ci++
			if !full {
				hs := matching(hints, func(h events.ArtifactHint) bool {
					return model.NormalizeChartURL(h.RepoURL) == model.NormalizeChartURL(s.RepoURL)
				})
				if len(hs) == 0 {
					continue
				}
			}
			cr, err := d.credentials(ctx, w.Namespace, model.CredTypeHelm, s.RepoURL)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			res, err := d.charts.Discover(ctx, s, cr)
			if err != nil {
				errs = append(errs, fmt.Errorf("chart %s %s: %s", s.RepoURL, s.Name, charts.Explain(err)))
				continue
			}
			res.SubscriptionName = sub.Name
			if full {
				art.Charts = append(art.Charts, res)
			} else {
				changed = changed || !slices.Equal(res.Versions, art.Charts[i].Versions)
				art.Charts[i] = res
			}
		}
	}
	return art, changed, errors.Join(errs...)
}

func matching(hints []events.ArtifactHint, ok func(events.ArtifactHint) bool) []events.ArtifactHint {
	var out []events.ArtifactHint
	for _, h := range hints {
		if ok(h) {
			out = append(out, h)
		}
	}
	return out
}

func hintCommits(hs []events.ArtifactHint) []string {
	var out []string
	for _, h := range hs {
		if h.Commit != "" {
			out = append(out, h.Commit)
		}
	}
	return out
}

// candidate assembles the Freight of the newest artifacts when the
// Warehouse creates Freight automatically and its criteria hold (nil
// otherwise).
func (d *discoverer) candidate(w *model.Warehouse, art *model.DiscoveredArtifacts) (*model.Freight, error) {
	if w.Spec.FreightCreationPolicy == model.FreightCreationPolicyManual || len(w.Spec.Subscriptions) == 0 {
		return nil, nil
	}
	f, err := freight.Build(w, art)
	if errors.Is(err, freight.ErrIncomplete) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if c := w.Spec.FreightCreationCriteria; c != nil && strings.TrimSpace(c.Expression) != "" {
		crit, err := freight.CompileCriteria(c.Expression)
		if err != nil {
			return nil, err
		}
		ok, err := crit.Allows(art)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, nil
		}
	}
	return f, nil
}

// announce stores f and publishes FreightDiscovered for it once; it
// reports whether it published.
func (d *discoverer) announce(ctx context.Context, f *model.Freight) (bool, error) {
	f, publish, err := d.createFreight(ctx, f)
	if err != nil || !publish {
		return false, err
	}
	return true, d.publish(ctx, f)
}

// EventID is the deterministic ID of the FreightDiscovered event of a
// Freight: JetStream drops a second publish of it within its duplicate
// window.
func EventID(project, freightID string) string {
	return "FreightDiscovered." + project + "." + freightID
}

// createFreight creates f unless it exists and returns the stored Freight and
// whether its FreightDiscovered still has to be published.
//
// Exactly-once announcement, across retries, replicas and restarts: the
// Freight is created first (state.Create fails with ErrExists when it is
// there), then FreightDiscovered is published with the deterministic ID
// EventID, then the Freight is marked with AnnouncedAnnotation (publish).
// A marker written before the create and cleared after the mark lets the
// reconcile pass finish an announcement whose run stopped in between (see
// sweepUnannounced).
// A run that finds the Freight already there publishes again (with the
// stored alias and the same ID) only when the mark is missing, i.e. when an
// earlier run stopped between create and mark. A crash after the publish
// but before the mark makes the next run publish again with the same ID,
// which JetStream drops within its duplicate window
// (CARAVAN_EVENTS_DUPLICATE_WINDOW); only a stop longer than that window
// could deliver the event twice, and its handlers are idempotent.
func (d *discoverer) createFreight(ctx context.Context, f *model.Freight) (*model.Freight, bool, error) {
	kv := d.store.KV(state.Freight)
	key := state.Key(f.Namespace, f.Name)
	stored, _, err := state.Get[model.Freight](ctx, kv, key)
	switch {
	case err == nil:
		return &stored, stored.Annotations[AnnouncedAnnotation] == "", nil
	case !errors.Is(err, state.ErrNotFound):
		return nil, false, err
	}
	taken, err := d.aliasTaken(ctx, f.Namespace)
	if err != nil {
		return nil, false, err
	}
	if f.Alias, err = d.store.ReserveUniqueAlias(ctx, f.Namespace, f.Name, taken); err != nil {
		return nil, false, err
	}
	f.Labels = map[string]string{model.LabelAlias: f.Alias}
	f.CreationTimestamp = model.NewTime(d.now())
	if err := d.markUnannounced(ctx, f); err != nil {
		return nil, false, err
	}
	if _, err := state.Create(ctx, kv, key, f); err == nil {
		return f, true, nil
	} else if !errors.Is(err, state.ErrExists) {
		return nil, false, err
	}
	// Another replica or run created it meanwhile, with an alias of its own.
	stored, _, err = state.Get[model.Freight](ctx, kv, key)
	if err != nil {
		return nil, false, err
	}
	if stored.Alias != f.Alias {
		if err := d.store.ReleaseAlias(ctx, f.Namespace, f.Alias, f.Name); err != nil {
			return nil, false, err
		}
	}
	return &stored, stored.Annotations[AnnouncedAnnotation] == "", nil
}

// publish publishes f's FreightDiscovered and marks f announced.
func (d *discoverer) publish(ctx context.Context, f *model.Freight) error {
	project := f.Namespace
	ev := events.FreightDiscovered{Freight: f.Name, Alias: f.Alias, Origin: events.FreightOrigin{Kind: string(f.Origin.Kind), Name: f.Origin.Name}}
	if _, err := d.bus.PublishWithID(ctx, EventID(project, f.Name), project, events.Ref{Kind: model.KindFreight, Name: f.Name}, ev); err != nil {
		return err
	}
	_, _, err := state.Update(ctx, d.store.KV(state.Freight), state.Key(project, f.Name), func(cur model.Freight, exists bool) (model.Freight, error) {
		if !exists || cur.Annotations[AnnouncedAnnotation] != "" {
			return cur, state.ErrNoChange
		}
		if cur.Annotations == nil {
			cur.Annotations = map[string]string{}
		}
		cur.Annotations[AnnouncedAnnotation] = "true"
		return cur, nil
	})
	if err != nil {
		return err
	}
	return d.clearUnannounced(ctx, project, f.Name)
}

// aliasTaken tells whether an alias is in use in project.
func (d *discoverer) aliasTaken(ctx context.Context, project string) (func(string) bool, error) {
	if d.aliasIdx != nil {
		if taken, err := d.aliasIdx.taken(ctx, project); err == nil {
			return taken, nil
		} else if ctx.Err() != nil {
			return nil, err
		}
	}
	taken, err := d.aliases(ctx, project)
	if err != nil {
		return nil, err
	}
	return func(a string) bool { return taken[a] }, nil
}

// aliases returns the aliases in use in project.
func (d *discoverer) aliases(ctx context.Context, project string) (map[string]bool, error) {
	items, _, err := state.List[model.Freight](ctx, d.store.KV(state.Freight), state.Prefix(project), 0, "")
	if err != nil {
		return nil, err
	}
	taken := make(map[string]bool, len(items))
	for _, it := range items {
		if it.Value.Alias != "" {
			taken[it.Value.Alias] = true
		}
	}
	return taken, nil
}

func setCondition(st *model.WarehouseStatus, typ, status, reason, msg string, gen int64, now time.Time) {
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Type != typ {
			continue
		}
		if c.Status != status {
			c.LastTransitionTime = model.Time{Time: now}
		}
		c.Status, c.Reason, c.Message, c.ObservedGeneration = status, reason, msg, gen
		return
	}
	st.Conditions = append(st.Conditions, model.Condition{Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: model.Time{Time: now}})
}

func summary(art *model.DiscoveredArtifacts) string {
	n := 0
	for _, g := range art.Git {
		n += len(g.Commits)
	}
	for _, i := range art.Images {
		n += len(i.References)
	}
	for _, c := range art.Charts {
		n += len(c.Versions)
	}
	return fmt.Sprintf("discovered %d artifacts from %d subscriptions", n, len(art.Git)+len(art.Images)+len(art.Charts))
}

// secretLister reads a project's Secrets from the store.
