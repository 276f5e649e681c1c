package ui

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Above these many changed objects of one kind a snapshot is read anew
// with lists rather than object by object.
const maxIncremental = 200

// cardTTL bounds how long a rendered card is reused: its relative times
// ("5m ago") are at most this stale. A change to anything the card shows
// drops it at once.
const cardTTL = time.Minute

// snapshots keep, per project, what its pipeline page shows, read through
// the API and brought up to date with the Feed: a request re-reads only
// the objects that changed since, and reuses the cards whose inputs did
// not change. Who may see the project is still asked of the API on every
// request (whoami and the project itself); what the snapshot holds is
// what the API shows anyone who may read the project.
// errFeed marks a feed that cannot say what changed (a watch ended, or it
// lags): the page reads the project anew.
var errFeed = errors.New("ui feed")

type snapshots struct {
	feed *Feed
	mu   sync.Mutex
	m    map[string]*snapshot
}

type snapshot struct {
	// mu serialises bringing the snapshot up to date.
	mu   sync.Mutex
	pos  uint64
	data *projectData // read-only once published (role unset)
	// freightPos is the feed position of the last freight change seen.
	freightPos uint64

	cacheMu  sync.Mutex
	cards    map[cardKey]cachedCard
	timeline map[string]cachedPage
	// gen counts changes to what the graph shows: data applied, cards
	// rendered anew.
	gen    uint64
	graphs map[bool]cachedGraph // by whether the user may promote
}

type cachedGraph struct {
	gen   uint64
	until time.Time
	g     graphView
}

type cardKey struct {
	stage      string
	canPromote bool
}

type cachedCard struct {
	html  template.HTML
	hash  string
	until time.Time
}

type cachedPage struct {
	freightPos uint64
	fs         []model.Freight // newest first; never modified
	next       string
}

func newSnapshots(f *Feed) *snapshots {
	return &snapshots{feed: f, m: map[string]*snapshot{}}
}

// has reports whether the project has a snapshot with data.
func (s *snapshots) has(project string) bool {
	s.mu.Lock()
	sn := s.m[project]
	s.mu.Unlock()
	if sn == nil {
		return false
	}
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return sn.data != nil
}

// drop forgets a project's snapshot (the project is gone).
func (s *snapshots) drop(project string) {
	s.mu.Lock()
	delete(s.m, project)
	s.mu.Unlock()
}

func (s *snapshots) get(project string) *snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := s.m[project]
	if sn == nil {
		sn = &snapshot{cards: map[cardKey]cachedCard{}, timeline: map[string]cachedPage{}, graphs: map[bool]cachedGraph{}}
		s.m[project] = sn
	}
	return sn
}

// current returns the project's data as of now for the user of c: the
// user's role and access are read from the API; the rest is the snapshot,
// brought up to date.
func (u *UI) current(ctx context.Context, c apiClient, project string) (*projectData, *snapshot, error) {
	var (
		who  whoami
		proj model.Project
		wg   sync.WaitGroup
		errs [2]error
	)
	wg.Go(func() { who, errs[0] = c.whoami(ctx, project) })
	// The project must exist and be visible (404/403 otherwise).
	wg.Go(func() { errs[1] = c.get(ctx, projectPath(project), nil, &proj) })
	sn := u.snaps.get(project)
	data, err := u.refresh(ctx, c, project, sn)
	wg.Wait()
	if notFound(errs[1]) {
		u.snaps.drop(project)
	}
	if err := errors.Join(errs[0], errs[1]); err != nil {
		var ae *apiError
		for _, e := range errs {
			if errors.As(e, &ae) {
				return nil, nil, ae
			}
		}
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, err
	}
	d := *data
	d.role = who.Role
	return &d, sn, nil
}

// refresh brings the snapshot up to date and returns its data.
func (u *UI) refresh(ctx context.Context, c apiClient, project string, sn *snapshot) (*projectData, error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	pos, err := u.snaps.feed.sync(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errFeed, err)
	}
	changes, ok := u.snaps.feed.since(project, sn.pos)
	switch {
	case sn.data == nil || !ok:
		return u.reload(ctx, c, project, sn, pos)
	case len(changes) == 0:
		sn.pos = pos
		return sn.data, nil
	}
	var (
		stages, warehouses, freight, promotions = map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
		specs, config                           bool
	)
	for _, ch := range changes {
		kind, name := keyParts(ch.bucket, ch.key)
		switch ch.bucket {
		case state.Resources:
			switch kind {
			case model.KindStage:
				stages[name], specs = true, true
			case model.KindWarehouse:
				warehouses[name], specs = true, true
			case model.KindProjectConfig:
				config = true
			}
		case state.Stages:
			stages[name] = true
		case state.Warehouses:
			warehouses[name] = true
		case state.Freight:
			freight[name] = true
		case state.Promotions:
			promotions[name] = true
		}
	}
	if len(stages) > maxIncremental || len(freight) > maxIncremental || len(promotions) > maxIncremental {
		return u.reload(ctx, c, project, sn, pos)
	}
	old := sn.data
	d := newProjectData(project, "")
	d.policies = old.policies
	d.stages = slices.Clone(old.stages)
	d.warehouses = slices.Clone(old.warehouses)
	maps.Copy(d.aliases, old.aliases)
	maps.Copy(d.inUse, old.inUse)
	maps.Copy(d.running, old.running)
	d.soaks = old.soaks
	dirty := map[string]bool{}
	all := specs || config
	if config {
		if d.policies, err = policies(ctx, c, project); err != nil {
			return nil, err
		}
	}
	for name := range stages {
		dirty[name] = true
		var st model.Stage
		err := c.get(ctx, projectPath(project, "stages", name), nil, &st)
		i, found := slices.BinarySearchFunc(d.stages, name, func(s model.Stage, n string) int { return strings.Compare(s.Name, n) })
		switch {
		case notFound(err):
			if found {
				d.stages = slices.Delete(d.stages, i, i+1)
			}
		case err != nil:
			return nil, err
		case found:
			d.stages[i] = st
		default:
			d.stages = slices.Insert(d.stages, i, st)
		}
	}
	for name := range warehouses {
		var w model.Warehouse
		err := c.get(ctx, projectPath(project, "warehouses", name), nil, &w)
		i, found := slices.BinarySearchFunc(d.warehouses, name, func(w model.Warehouse, n string) int { return strings.Compare(w.Name, n) })
		switch {
		case notFound(err):
			if found {
				d.warehouses = slices.Delete(d.warehouses, i, i+1)
			}
		case err != nil:
			return nil, err
		case found:
			d.warehouses[i] = w
		default:
			d.warehouses = slices.Insert(d.warehouses, i, w)
		}
	}
	if len(freight) > 0 {
		sn.freightPos = pos
	}
	for name := range freight {
		if f := d.inUse[name]; f != nil {
			for s := range f.Status.CurrentlyIn {
				dirty[s] = true
			}
			delete(d.inUse, name)
		}
		f := new(model.Freight)
		err := c.get(ctx, projectPath(project, "freight", name), nil, f)
		switch {
		case notFound(err):
			continue
		case err != nil:
			return nil, err
		}
		d.aliases[f.Name] = f.Alias
		if len(f.Status.CurrentlyIn) > 0 {
			d.inUse[f.Name] = f
		}
		for s := range f.Status.CurrentlyIn {
			dirty[s] = true
		}
		for s, p := range d.running {
			if p.Spec.Freight == f.Name {
				dirty[s] = true
			}
		}
	}
	for name := range promotions {
		for s, p := range d.running {
			if p.Name == name {
				delete(d.running, s)
				dirty[s] = true
			}
		}
		p := new(model.Promotion)
		err := c.get(ctx, projectPath(project, "promotions", name), nil, p)
		switch {
		case notFound(err):
			continue
		case err != nil:
			return nil, err
		}
		if p.Status.Phase == model.PromotionPhaseRunning {
			d.running[p.Spec.Stage] = p
			dirty[p.Spec.Stage] = true
		}
	}
	for i := range d.stages {
		d.byName[d.stages[i].Name] = &d.stages[i]
	}
	for _, name := range slices.Sorted(maps.Keys(d.inUse)) {
		f := d.inUse[name]
		for s := range f.Status.CurrentlyIn {
			d.holding[s] = append(d.holding[s], f)
		}
	}
	if specs {
		d.soaks = soaksOf(d.stages)
		u.soaks.Store(project, d.soaks)
	}
	d.runningAliases(ctx, c)
	sn.cacheMu.Lock()
	sn.gen++
	if all {
		clear(sn.cards)
	} else {
		for k := range sn.cards {
			if dirty[k.stage] {
				delete(sn.cards, k)
			}
		}
	}
	sn.cacheMu.Unlock()
	sn.data, sn.pos = d, pos
	return d, nil
}

// reload reads the project anew through the API.
func (u *UI) reload(ctx context.Context, c apiClient, project string, sn *snapshot, pos uint64) (*projectData, error) {
	d, err := u.load(ctx, c, project, needAll)
	if err != nil {
		return nil, err
	}
	d.role = ""
	sn.cacheMu.Lock()
	sn.gen++
	clear(sn.cards)
	clear(sn.timeline)
	sn.cacheMu.Unlock()
	sn.data, sn.pos, sn.freightPos = d, pos, pos
	return d, nil
}

func notFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// cached returns a stage's card from the cache (ok false when it is not
// there or too old).
func (sn *snapshot) cached(stage string, canPromote bool, now time.Time) (template.HTML, string, bool) {
	sn.cacheMu.Lock()
	cc, ok := sn.cards[cardKey{stage: stage, canPromote: canPromote}]
	sn.cacheMu.Unlock()
	if !ok || !now.Before(cc.until) {
		return "", "", false
	}
	return cc.html, cc.hash, true
}

// card returns a stage's rendered card from the cache, rendering it when
// it is not there or too old.
func (sn *snapshot) card(u *UI, c cardView, now time.Time) (template.HTML, string, error) {
	k := cardKey{stage: c.Name, canPromote: c.CanPromote}
	if html, hash, ok := sn.cached(c.Name, c.CanPromote, now); ok {
		return html, hash, nil
	}
	html, hash, err := u.renderCard(c)
	if err != nil {
		return "", "", err
	}
	until := now.Add(cardTTL)
	for _, s := range c.Soak {
		if t := now.Add(s.Left); t.Before(until) {
			until = t
		}
	}
	sn.cacheMu.Lock()
	sn.gen++
	sn.cards[k] = cachedCard{html: html, hash: hash, until: until}
	sn.cacheMu.Unlock()
	return html, hash, nil
}

// timelineFreight is timelineFreight reading through the snapshot's
// cache of API pages, kept while no freight of the project changes.
func (sn *snapshot) timelineFreight(req *request, project string) func() ([]model.Freight, string, error) {
	q := req.r.URL.Query()
	key := url.Values{"warehouse": {q.Get("warehouse")}, "from": {q.Get("from")}}.Encode()
	sn.mu.Lock()
	fpos := sn.freightPos
	sn.mu.Unlock()
	sn.cacheMu.Lock()
	p, ok := sn.timeline[key]
	sn.cacheMu.Unlock()
	if ok && p.freightPos == fpos {
		return func() ([]model.Freight, string, error) { return slices.Clone(p.fs), p.next, nil }
	}
	read := timelineFreight(req, project)
	return func() ([]model.Freight, string, error) {
		fs, next, err := read()
		if err != nil {
			return nil, "", err
		}
		sortFreightNewest(fs)
		sn.cacheMu.Lock()
		if len(sn.timeline) > 64 {
			clear(sn.timeline)
		}
		sn.timeline[key] = cachedPage{freightPos: fpos, fs: slices.Clone(fs), next: next}
		sn.cacheMu.Unlock()
		return fs, next, nil
	}
}

// graph returns the laid-out graph with its cards from the cache while
// nothing it shows changed and none of its cards is too old, else builds
// it with build.
func (sn *snapshot) graph(canPromote bool, now time.Time, build func() (graphView, error)) (graphView, error) {
	sn.cacheMu.Lock()
	gen := sn.gen
	cg, ok := sn.graphs[canPromote]
	sn.cacheMu.Unlock()
	if ok && cg.gen == gen && now.Before(cg.until) {
		return cg.g, nil
	}
	g, err := build()
	if err != nil {
		return g, err
	}
	until := now.Add(cardTTL)
	sn.cacheMu.Lock()
	for k, c := range sn.cards {
		if k.canPromote == canPromote && c.until.Before(until) {
			until = c.until
		}
	}
	// gen as read before building: a change meanwhile builds it again.
	sn.graphs[canPromote] = cachedGraph{gen: gen, until: until, g: g}
	sn.cacheMu.Unlock()
	return g, nil
}
