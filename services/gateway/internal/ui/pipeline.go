package ui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/gateway/internal/ui/layout"
)

// Box sizes of the pipeline graph, in pixels (the stylesheet uses the
// same).
const (
	stageW, stageH         = 264, 184
	gateW, gateH           = 184, 92
	warehouseW, warehouseH = 224, 136
	timelinePage           = 25
	// Above lazyAbove stages, only the cards in the first view (lazyX by
	// lazyY pixels of the graph, from its sources) come with the page; the
	// others are placeholders the script fills in as they scroll into
	// view (?fragment=cards).
	lazyAbove    = 300
	lazyX, lazyY = 2600, 1900
	// maxCards is how many cards one ?fragment=cards request may ask for.
	maxCards = 200
)

// projectData is what a project's pages share: who the user is there and
// the project's stages, warehouses and freight in use.
type projectData struct {
	project    string
	role       string
	stages     []model.Stage
	warehouses []model.Warehouse
	byName     map[string]*model.Stage
	aliases    map[string]string
	inUse      map[string]*model.Freight
	// holding is the freight in use by stage.
	holding map[string][]*model.Freight
	running map[string]*model.Promotion // by stage
	// soaks are, by upstream stage, the soak times downstream stages
	// require of freight verified there.
	soaks map[string][]soakReq
	// policies are the ProjectConfig's promotion policies.
	policies []model.PromotionPolicy
}

type soakReq struct {
	down   string
	origin model.FreightOrigin
	soak   time.Duration
}

func (p *projectData) canPromote() bool { return p.role == "promoter" || p.role == "admin" }

// what a page needs beyond the stages.
type need struct{ warehouses, freight, running bool }

var needAll = need{warehouses: true, freight: true, running: true}

func newProjectData(project, role string) *projectData {
	return &projectData{project: project, role: role, byName: map[string]*model.Stage{}, aliases: map[string]string{},
		inUse: map[string]*model.Freight{}, holding: map[string][]*model.Freight{}, running: map[string]*model.Promotion{}, soaks: map[string][]soakReq{}}
}

// load reads what the pipeline needs through the API, the independent
// reads at the same time.
func (u *UI) load(ctx context.Context, c apiClient, project string, n need) (*projectData, error) {
	var (
		who      whoami
		proj     model.Project
		pols     []model.PromotionPolicy
		stages   []model.Stage
		whs      []model.Warehouse
		used     []model.Freight
		running  []model.Promotion
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	run := func(f func() error) {
		wg.Go(func() {
			if err := f(); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	run(func() (err error) { who, err = c.whoami(ctx, project); return err })
	// The project must exist and be visible (404/403 otherwise).
	run(func() error { return c.get(ctx, projectPath(project), nil, &proj) })
	run(func() (err error) { pols, err = policies(ctx, c, project); return err })
	run(func() (err error) { stages, err = c.stages(ctx, project); return err })
	if n.warehouses {
		run(func() (err error) { whs, err = c.warehouses(ctx, project); return err })
	}
	if n.freight {
		run(func() (err error) {
			used, err = all[model.Freight](ctx, c, projectPath(project, "freight"), url.Values{"inUse": {"true"}})
			return err
		})
	}
	if n.running {
		run(func() (err error) {
			running, err = all[model.Promotion](ctx, c, projectPath(project, "promotions"), url.Values{"phase": {string(model.PromotionPhaseRunning)}})
			return err
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	d := newProjectData(project, who.Role)
	d.policies, d.stages, d.warehouses = pols, stages, whs
	// By name, whatever order the API lists in: the layout's input is
	// canonical, and a snapshot finds its stages by binary search.
	slices.SortFunc(d.stages, func(a, b model.Stage) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(d.warehouses, func(a, b model.Warehouse) int { return strings.Compare(a.Name, b.Name) })
	for i := range d.stages {
		d.byName[d.stages[i].Name] = &d.stages[i]
	}
	d.soaks = soaksOf(d.stages)
	u.soaks.Store(project, d.soaks)
	d.addFreight(used)
	for i := range running {
		d.running[running[i].Spec.Stage] = &running[i]
	}
	d.runningAliases(ctx, c)
	return d, nil
}

func (d *projectData) addFreight(fs []model.Freight) {
	for i := range fs {
		f := &fs[i]
		d.inUse[f.Name] = f
		d.aliases[f.Name] = f.Alias
		for s := range f.Status.CurrentlyIn {
			d.holding[s] = append(d.holding[s], f)
		}
	}
}

// loadStage reads one stage's card data: the stage, the freight it holds,
// its running promotion, and the soak times downstream stages require
// (from the project's last full read, kept by structure; a change of
// structure re-renders the whole graph).
func (u *UI) loadStage(ctx context.Context, c apiClient, project, stage string) (*projectData, error) {
	who, err := c.whoami(ctx, project)
	if err != nil {
		return nil, err
	}
	var st model.Stage
	if err := c.get(ctx, projectPath(project, "stages", stage), nil, &st); err != nil {
		return nil, err
	}
	d := newProjectData(project, who.Role)
	if d.policies, err = policies(ctx, c, project); err != nil {
		return nil, err
	}
	d.stages = []model.Stage{st}
	d.byName[st.Name] = &d.stages[0]
	used, err := all[model.Freight](ctx, c, projectPath(project, "freight"), url.Values{"currentlyIn": {stage}})
	if err != nil {
		return nil, err
	}
	d.addFreight(used)
	running, err := all[model.Promotion](ctx, c, projectPath(project, "promotions"), url.Values{"stage": {stage}, "phase": {string(model.PromotionPhaseRunning)}})
	if err != nil {
		return nil, err
	}
	for i := range running {
		d.running[stage] = &running[i]
	}
	d.runningAliases(ctx, c)
	if v, ok := u.soaks.Load(project); ok {
		d.soaks = v.(map[string][]soakReq)
	}
	return d, nil
}

// policies reads the ProjectConfig's promotion policies (none without
// a ProjectConfig).
func policies(ctx context.Context, c apiClient, project string) ([]model.PromotionPolicy, error) {
	var pc model.ProjectConfig
	err := c.get(ctx, projectPath(project, "projectconfig"), nil, &pc)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return nil, nil
	}
	return pc.Spec.PromotionPolicies, err
}

func soaksOf(stages []model.Stage) map[string][]soakReq {
	out := map[string][]soakReq{}
	for i := range stages {
		for _, req := range stages[i].Spec.RequestedFreight {
			if req.Sources.RequiredSoakTime == nil {
				continue
			}
			for _, up := range req.Sources.Stages {
				out[up] = append(out[up], soakReq{down: stages[i].Name, origin: req.Origin, soak: req.Sources.RequiredSoakTime.Duration})
			}
		}
	}
	return out
}

// cardView is a stage card.
type cardView struct {
	Project, Name string
	Color         string
	ControlFlow   bool
	Freight       []freightView
	Health        string
	HealthIssues  []string
	Phase         string
	Message       string
	// Verifies is whether the stage has verification configured.
	Verifies     bool
	Verification *model.VerificationInfo
	Promotion    *promotionSummary
	Last         *promotionSummary
	Auto         bool
	Holds        []model.AutoPromotionHold
	Soak         []soakView
	CanPromote   bool
	// At is set when the card shows the past (time slider): no actions.
	At *time.Time
}

type promotionSummary struct {
	Name, Phase, Step, Message string
	StepIndex, Steps           int
	Freight                    freightView
	Finished                   time.Time
}

type soakView struct {
	Stage string
	Left  time.Duration
}

// HealthClass is the health's status class.
func (c cardView) HealthClass() string { return phaseClass(c.Health) }

// Class is the phase's status class.
func (p promotionSummary) Class() string { return phaseClass(p.Phase) }

// ID is the card's element id.
func (c cardView) ID() string { return "card-" + c.Name }

// cardLinks are a card's escaped URLs, computed once per card rather than
// by template functions (a 1,000-stage page renders them 1,000 times).
type cardLinks struct {
	Stage, Promotion, Last, Verification string
	Freight                              []string
}

func (c cardView) Links() cardLinks {
	base := "/projects/" + url.PathEscape(c.Project)
	l := cardLinks{Stage: base + "/stages/" + url.PathEscape(c.Name)}
	for _, f := range c.Freight {
		l.Freight = append(l.Freight, base+"/freight/"+url.PathEscape(f.Name))
	}
	if c.Promotion != nil {
		l.Promotion = base + "/promotions/" + url.PathEscape(c.Promotion.Name)
	}
	if c.Last != nil {
		l.Last = base + "/promotions/" + url.PathEscape(c.Last.Name)
	}
	if c.Verification != nil {
		l.Verification = l.Stage + "/verifications/" + url.PathEscape(c.Verification.ID)
	}
	return l
}

func summarize(p *model.Promotion, aliases map[string]string) *promotionSummary {
	s := &promotionSummary{Name: p.Name, Phase: string(p.Status.Phase), Message: p.Status.Message, Steps: len(p.Spec.Steps)}
	if n := len(p.Status.StepExecutionMetadata); n > s.Steps {
		s.Steps = n
	}
	s.StepIndex = int(p.Status.CurrentStep) + 1
	if i := int(p.Status.CurrentStep); i >= 0 && i < len(p.Status.StepExecutionMetadata) {
		s.Step = p.Status.StepExecutionMetadata[i].Alias
	}
	if s.Step == "" && int(p.Status.CurrentStep) < len(p.Spec.Steps) {
		st := p.Spec.Steps[p.Status.CurrentStep]
		s.Step = st.As
		if s.Step == "" {
			s.Step = st.Uses
		}
	}
	if p.Status.Freight != nil {
		s.Freight = viewFreightRef(*p.Status.Freight, aliases)
	} else {
		s.Freight = freightView{Name: p.Spec.Freight, Alias: aliases[p.Spec.Freight]}
	}
	if p.Status.FinishedAt != nil {
		s.Finished = p.Status.FinishedAt.Time
	}
	return s
}

func (d *projectData) card(st *model.Stage, now time.Time) cardView {
	c := cardView{Project: d.project, Name: st.Name, Color: stageColor(st.Annotations), ControlFlow: st.IsControlFlow(),
		Phase: string(st.Status.Phase), Message: st.Status.Message, Verifies: st.Spec.Verification != nil,
		Auto: st.Status.AutoPromotionEnabled || model.AutoPromotionEnabled(d.policies, st), Holds: holdList(st.Status.AutoPromotionHolds), CanPromote: d.canPromote()}
	if h := st.Status.Health; h != nil {
		c.Health, c.HealthIssues = string(h.Status), h.Issues
	}
	if len(st.Status.FreightHistory) > 0 {
		cur := st.Status.FreightHistory[0]
		keys := make([]string, 0, len(cur.Freight))
		for k := range cur.Freight {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			c.Freight = append(c.Freight, viewFreightRef(cur.Freight[k], d.aliases))
		}
		if n := len(cur.VerificationHistory); n > 0 {
			v := cur.VerificationHistory[0]
			c.Verification = &v
		}
	}
	if p, ok := d.running[st.Name]; ok {
		c.Promotion = summarize(p, d.aliases)
	} else if cp := st.Status.CurrentPromotion; cp != nil {
		c.Promotion = &promotionSummary{Name: cp.Name, Phase: "Pending"}
		if cp.Freight != nil {
			c.Promotion.Freight = viewFreightRef(*cp.Freight, d.aliases)
		}
	}
	if lp := st.Status.LastPromotion; lp != nil {
		c.Last = &promotionSummary{Name: lp.Name}
		if lp.Status != nil {
			c.Last.Phase, c.Last.Message = string(lp.Status.Phase), lp.Status.Message
		}
		if lp.FinishedAt != nil {
			c.Last.Finished = lp.FinishedAt.Time
		}
		if lp.Freight != nil {
			c.Last.Freight = viewFreightRef(*lp.Freight, d.aliases)
		}
	}
	c.Soak = d.soak(st, now)
	return c
}

// soak is how long the stage's current freight must still soak before
// each downstream stage that requires a soak time may take it.
func (d *projectData) soak(st *model.Stage, now time.Time) []soakView {
	var out []soakView
	for _, req := range d.soaks[st.Name] {
		for _, f := range d.holding[st.Name] {
			if f.Origin != req.origin || !f.IsVerifiedIn(st.Name) {
				continue
			}
			if left := req.soak - f.LongestSoak(st.Name, now); left > 0 {
				out = append(out, soakView{Stage: req.down, Left: left})
			}
		}
	}
	return out
}

// graphView is the laid-out pipeline.
type graphView struct {
	Width, Height float64
	Nodes         []nodeView
	Edges         []edgeView
	Crossings     int
	// HTML and EdgesHTML are the nodes and the edges' paths, written by
	// graphHTML (a template ranging over 1,000 nodes is most of a page's
	// render time).
	HTML, EdgesHTML template.HTML
}

type nodeView struct {
	ID, Kind   string // warehouse, stage or gate
	X, Y, W, H float64
	Card       template.HTML
	Hash       string
	Warehouse  *warehouseCard
	// Lazy nodes are sent as a placeholder (Stage, Project) filled in by
	// the script.
	Lazy           bool
	Stage, Project string
}

type edgeView struct {
	From, To, Path string
}

type warehouseCard struct {
	Project, Name string
	Subs          []string
	Discovered    time.Time
	Error         string
	CanRefresh    bool
}

func warehouseCardOf(project string, w *model.Warehouse, canRefresh bool) *warehouseCard {
	c := &warehouseCard{Project: project, Name: w.Name, CanRefresh: canRefresh}
	for _, s := range w.Spec.Subscriptions {
		switch {
		case s.Image != nil:
			c.Subs = append(c.Subs, "image "+shortRepo(s.Image.RepoURL))
		case s.Git != nil:
			c.Subs = append(c.Subs, "git "+shortRepo(s.Git.RepoURL))
		case s.Chart != nil:
			c.Subs = append(c.Subs, "chart "+s.Chart.Name)
		}
	}
	if a := w.Status.DiscoveredArtifacts; a != nil {
		c.Discovered = a.DiscoveredAt.Time
	}
	for _, cond := range w.Status.Conditions {
		if cond.Status == model.ConditionFalse && cond.Message != "" {
			c.Error = cond.Message
		}
	}
	return c
}

// graph lays out warehouses and stages. Cards are rendered by renderCard,
// or taken from the snapshot's cache when there is one.
func (u *UI) graph(d *projectData, cards func(*model.Stage) cardView, sn *snapshot, now time.Time) (graphView, error) {
	nodes := make([]layout.Node, 0, len(d.warehouses)+len(d.stages))
	var edges []layout.Edge
	for _, w := range d.warehouses {
		nodes = append(nodes, layout.Node{ID: "wh/" + w.Name, Width: warehouseW, Height: warehouseH})
	}
	for i := range d.stages {
		st := &d.stages[i]
		if st.IsControlFlow() {
			nodes = append(nodes, layout.Node{ID: "st/" + st.Name, Width: gateW, Height: gateH})
		} else {
			nodes = append(nodes, layout.Node{ID: "st/" + st.Name, Width: stageW, Height: stageH})
		}
		for _, req := range st.Spec.RequestedFreight {
			if req.Sources.Direct {
				edges = append(edges, layout.Edge{From: "wh/" + req.Origin.Name, To: "st/" + st.Name})
			}
			for _, up := range req.Sources.Stages {
				edges = append(edges, layout.Edge{From: "st/" + up, To: "st/" + st.Name})
			}
		}
	}
	lay := u.layouts.get(nodes, edges, layout.Options{LayerGap: 72, NodeGap: 20})
	g := graphView{Width: lay.Width, Height: lay.Height, Crossings: lay.Crossings, Nodes: make([]nodeView, 0, len(lay.Nodes))}
	render := func(st *model.Stage) (template.HTML, string, error) { return u.renderCard(cards(st)) }
	if sn != nil {
		canPromote := d.canPromote()
		render = func(st *model.Stage) (template.HTML, string, error) {
			if html, hash, ok := sn.cached(st.Name, canPromote, now); ok {
				return html, hash, nil
			}
			return sn.card(u, cards(st), now)
		}
	}
	for i, n := range lay.Nodes {
		nv := nodeView{ID: n.ID, X: n.X, Y: n.Y, W: n.Width, H: n.Height}
		if i < len(d.warehouses) {
			nv.Kind = "warehouse"
			nv.Warehouse = warehouseCardOf(d.project, &d.warehouses[i], d.canPromote())
		} else {
			st := &d.stages[i-len(d.warehouses)]
			nv.Kind = "stage"
			if st.IsControlFlow() {
				nv.Kind = "gate"
			}
			html, hash, err := render(st)
			if err != nil {
				return g, err
			}
			nv.Card, nv.Hash = html, hash
			nv.Stage, nv.Project = st.Name, d.project
			nv.Lazy = len(d.stages) > lazyAbove && (n.X > lazyX || n.Y > lazyY)
		}
		g.Nodes = append(g.Nodes, nv)
	}
	// Document order follows the flow (left to right, then top down): the
	// tab order, and the order of the list on a phone.
	slices.SortStableFunc(g.Nodes, func(a, b nodeView) int {
		if c := cmpF(a.X, b.X); c != 0 {
			return c
		}
		return cmpF(a.Y, b.Y)
	})
	for _, r := range lay.Routes {
		g.Edges = append(g.Edges, edgeView{From: r.From, To: r.To, Path: r.Path()})
	}
	return g, u.graphHTML(&g)
}

// graphHTML writes the graph's nodes (each positioned, holding its card)
// and edges, as the "graph" template would.
func (u *UI) graphHTML(g *graphView) error {
	var b bytes.Buffer
	px := func(f float64) {
		b.WriteString(strconv.FormatFloat(f, 'f', 0, 64))
		b.WriteString("px")
	}
	for _, n := range g.Nodes {
		b.WriteString(`<div class="node k-`)
		b.WriteString(template.HTMLEscapeString(n.Kind))
		b.WriteString(`" data-node="`)
		b.WriteString(template.HTMLEscapeString(n.ID))
		if n.Lazy {
			b.WriteString(`" data-lazy="`)
		}
		if n.Hash != "" {
			b.WriteString(`" data-hash="`)
			b.WriteString(template.HTMLEscapeString(n.Hash))
		}
		b.WriteString(`" style="left:`)
		px(n.X)
		b.WriteString(";top:")
		px(n.Y)
		b.WriteString(";width:")
		px(n.W)
		b.WriteString(";height:")
		px(n.H)
		b.WriteString("\">\n      ")
		switch {
		case n.Warehouse != nil:
			if err := u.pages["pipeline"].ExecuteTemplate(&b, "warehouse-card", n.Warehouse); err != nil {
				return err
			}
		case n.Lazy:
			// The card's name and link, so that the page reads and tabs
			// the same before the script fills it in.
			name := template.HTMLEscapeString(n.Stage)
			b.WriteString(`<article class="card lazy`)
			if n.Kind == "gate" {
				b.WriteString(" gate")
			}
			b.WriteString(`" id="card-`)
			b.WriteString(name)
			b.WriteString(`" data-stage="`)
			b.WriteString(name)
			b.WriteString(`" data-live="stage:`)
			b.WriteString(name)
			b.WriteString(`" aria-busy="true"><header><h3><a href="/projects/`)
			b.WriteString(template.HTMLEscapeString(url.PathEscape(n.Project)))
			b.WriteString("/stages/")
			b.WriteString(template.HTMLEscapeString(url.PathEscape(n.Stage)))
			b.WriteString(`">`)
			b.WriteString(name)
			b.WriteString(`</a></h3></header><p class="muted small">Loading…</p></article>`)
		default:
			b.WriteString(string(n.Card))
		}
		b.WriteString("\n    </div>")
	}
	g.HTML = template.HTML(b.String()) //nolint:gosec // escaped above; cards by html/template
	b.Reset()
	for _, e := range g.Edges {
		b.WriteString(`<path d="`)
		b.WriteString(template.HTMLEscapeString(e.Path))
		b.WriteString(`" data-from="`)
		b.WriteString(template.HTMLEscapeString(e.From))
		b.WriteString(`" data-to="`)
		b.WriteString(template.HTMLEscapeString(e.To))
		b.WriteString(`" marker-end="url(#arrow)"/>`)
	}
	g.EdgesHTML = template.HTML(b.String()) //nolint:gosec // escaped above
	return nil
}

// renderCard renders a stage card and its digest.
func (u *UI) renderCard(c cardView) (template.HTML, string, error) {
	var b bytes.Buffer
	if err := u.pages["pipeline"].ExecuteTemplate(&b, "card", c); err != nil {
		return "", "", err
	}
	sum := sha256.Sum256(b.Bytes())
	return template.HTML(b.String()), base64.RawURLEncoding.EncodeToString(sum[:9]), nil //nolint:gosec // rendered by html/template
}

func (u *UI) writeCard(req *request, c cardView) error {
	html, _, err := u.renderCard(c)
	if err != nil {
		return err
	}
	return u.writeHTML(req, html)
}

func (u *UI) writeHTML(req *request, html template.HTML) error {
	securityHeaders(req.w.Header())
	req.w.Header().Set("Content-Type", "text/html; charset=utf-8")
	// A write error means the client went away: nothing to answer.
	_, _ = req.w.Write([]byte(html))
	return nil
}

type pipelineData struct {
	base
	Role     string
	CanAct   bool
	Graph    graphView
	Timeline timelineView
	Slider   sliderView
	Empty    bool
}

type sliderView struct {
	Min, Max, Value int64 // Unix minutes
	At              *time.Time
	AtLocal         string
}

func (u *UI) pipeline(req *request) error {
	project := req.r.PathValue("project")
	now := u.now()
	q := req.r.URL.Query()
	var at *time.Time
	if v := q.Get("at"); v != "" {
		t, err := parseAt(v)
		if err != nil {
			return badRequest("at: %q is not a time (use 2006-01-02T15:04 or RFC 3339)", v)
		}
		at = &t
	}
	wantTimeline := req.fragment == "" || req.fragment == "timeline"
	var (
		d   *projectData
		sn  *snapshot
		pre func() ([]model.Freight, string, error)
		err error
	)
	useSnapshot := u.snaps != nil && at == nil && (req.fragment != "card" || u.snaps.has(project))
	if useSnapshot {
		// The project's snapshot, brought up to date by the feed (a
		// single card reads its stage alone until a page has read the
		// whole project).
		d, sn, err = u.current(req.ctx, req.api, project)
		switch {
		case errors.Is(err, errFeed) && req.ctx.Err() == nil:
			u.log.Warn("ui: reading the project anew", "project", project, "err", err)
			useSnapshot = false
		case err != nil:
			return err
		}
	}
	switch {
	case useSnapshot:
		if wantTimeline {
			pre = sn.timelineFreight(req, project)
		}
	case req.fragment == "card" && at == nil:
		if d, err = u.loadStage(req.ctx, req.api, project, q.Get("stage")); err != nil {
			return err
		}
		return u.writeCard(req, d.card(&d.stages[0], now))
	default:
		n := needAll
		switch req.fragment {
		case "timeline", "eligible":
			n = need{warehouses: true}
		}
		if wantTimeline {
			pre = timelineFreight(req, project)
		}
		if d, err = u.load(req.ctx, req.api, project, n); err != nil {
			return err
		}
	}
	cards := func(st *model.Stage) cardView { return d.card(st, now) }
	if at != nil {
		hist, err := u.history(req.ctx, req.api, d, *at)
		if err != nil {
			return err
		}
		cards = func(st *model.Stage) cardView {
			c := cardView{Project: project, Name: st.Name, Color: stageColor(st.Annotations), ControlFlow: st.IsControlFlow(), At: at}
			if p := hist[st.Name]; p != nil {
				c.Last = summarize(p, d.aliases)
				c.Freight = []freightView{c.Last.Freight}
			}
			return c
		}
	}
	switch req.fragment {
	case "card":
		st, ok := d.byName[q.Get("stage")]
		if !ok {
			return &apiError{Status: http.StatusNotFound, Message: "stage not found"}
		}
		if sn != nil {
			html, _, err := sn.card(u, cards(st), now)
			if err != nil {
				return err
			}
			return u.writeHTML(req, html)
		}
		return u.writeCard(req, cards(st))
	case "cards":
		names := q["stage"]
		if len(names) > maxCards {
			return badRequest("stage: at most %d at a time", maxCards)
		}
		var out bytes.Buffer
		for _, name := range names {
			st, ok := d.byName[name]
			if !ok {
				continue // deleted meanwhile: the graph is re-laid out
			}
			var (
				html template.HTML
				err  error
			)
			if sn != nil {
				html, _, err = sn.card(u, cards(st), now)
			} else {
				html, _, err = u.renderCard(cards(st))
			}
			if err != nil {
				return err
			}
			out.WriteString(string(html))
		}
		return u.writeHTML(req, template.HTML(out.String())) //nolint:gosec // cards by html/template
	case "digest":
		g, err := u.graph(d, cards, sn, now)
		if err != nil {
			return err
		}
		out := map[string]string{"graph": graphHash(g)}
		for _, n := range g.Nodes {
			if n.Hash != "" {
				out["card-"+strings.TrimPrefix(n.ID, "st/")] = n.Hash
			}
		}
		req.w.Header().Set("Content-Type", "application/json")
		req.w.Header().Set("Cache-Control", "no-store")
		return json.NewEncoder(req.w).Encode(out)
	case "timeline":
		tl, err := u.timeline(req, d, now, pre)
		if err != nil {
			return err
		}
		return u.render(req.w, http.StatusOK, "pipeline", "timeline", tl)
	case "eligible":
		f, err := u.freightByName(req, project, q.Get("freight"))
		if err != nil {
			return err
		}
		req.w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(req.w).Encode(eligible(f, d.stages, now))
	}
	var tl timelineView
	if pre != nil {
		if tl, err = u.timeline(req, d, now, pre); err != nil {
			return err
		}
	}
	build := func() (graphView, error) { return u.graph(d, cards, sn, now) }
	var g graphView
	if sn != nil {
		g, err = sn.graph(d.canPromote(), now, build)
	} else {
		g, err = build()
	}
	if err != nil {
		return err
	}
	if req.fragment == "graph" {
		return u.render(req.w, http.StatusOK, "pipeline", "graph", pipelineData{Graph: g, base: base{Project: project}})
	}
	data := pipelineData{base: u.base(req, project, project, crumb{"Projects", "/projects"}, crumb{project, ""}),
		Role: d.role, CanAct: d.canPromote() && at == nil, Graph: g, Timeline: tl, Empty: len(d.stages) == 0}
	data.Slider = sliderView{Max: now.Unix() / 60, Value: now.Unix() / 60, At: at}
	data.Slider.Min = data.Slider.Max - 7*24*60
	if at != nil {
		data.Slider.Value = at.Unix() / 60
		data.Slider.AtLocal = at.UTC().Format("2006-01-02T15:04")
	}
	return u.render(req.w, http.StatusOK, "pipeline", "layout", data)
}

func graphHash(g graphView) string {
	h := sha256.New()
	for _, n := range g.Nodes {
		h.Write([]byte(n.ID + "\x00" + strconv.FormatFloat(n.X, 'f', 0, 64) + "," + strconv.FormatFloat(n.Y, 'f', 0, 64) + "\x00"))
	}
	for _, e := range g.Edges {
		h.Write([]byte(e.From + ">" + e.To + "\x00"))
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:9])
}

func parseAt(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(n, 0).UTC(), nil
}

// history is, per stage, the last promotion that succeeded at or before
// at: what ran there then.
func (u *UI) history(ctx context.Context, c apiClient, d *projectData, at time.Time) (map[string]*model.Promotion, error) {
	ps, err := all[model.Promotion](ctx, c, projectPath(d.project, "promotions"), url.Values{"phase": {string(model.PromotionPhaseSucceeded)}})
	if err != nil {
		return nil, err
	}
	out := map[string]*model.Promotion{}
	for i := range ps {
		p := &ps[i]
		if p.Status.FinishedAt == nil || p.Status.FinishedAt.After(at) {
			continue
		}
		if cur := out[p.Spec.Stage]; cur == nil || p.Status.FinishedAt.After(cur.Status.FinishedAt.Time) {
			out[p.Spec.Stage] = p
		}
	}
	fs, err := all[model.Freight](ctx, c, projectPath(d.project, "freight"), nil)
	if err != nil {
		return nil, err
	}
	for _, f := range fs {
		d.aliases[f.Name] = f.Alias
	}
	return out, nil
}

// eligible lists the stages f may be promoted to now, by the API's rule.
func eligible(f *model.Freight, stages []model.Stage, now time.Time) []string {
	out := []string{}
	for i := range stages {
		if !stages[i].RequestsOrigin(f.Origin) {
			continue
		}
		if ok, _ := model.FreightAvailable(f, &stages[i], now); ok {
			out = append(out, stages[i].Name)
		}
	}
	return out
}

func (u *UI) freightByName(req *request, project, name string) (*model.Freight, error) {
	if name == "" {
		return nil, badRequest("freight: required")
	}
	var f model.Freight
	if err := req.api.get(req.ctx, projectPath(project, "freight", name), nil, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// timelineView is a page of the freight timeline.
type timelineView struct {
	Project    string
	Items      []timelineItem
	Warehouses []string
	Warehouse  string
	Query      string
	// Older and Newer are the query strings ("?…") of the next and
	// previous pages ("" when there is none).
	Older, Newer string
	CanAct       bool
	Total        int
}

type timelineItem struct {
	freightView
	Stages   []string
	Verified []soakView // Left is the soak so far
	Approved []string
	Eligible []string
}

// EligibleList is the stages the item may go to, space-separated.
func (t timelineItem) EligibleList() string { return strings.Join(t.Eligible, " ") }

// timelineFreight starts reading the API page of freight the timeline
// shows (while the rest of the page is read) and returns its result.
func timelineFreight(req *request, project string) func() ([]model.Freight, string, error) {
	q := req.r.URL.Query()
	aq := url.Values{"limit": {"1000"}}
	if w := q.Get("warehouse"); w != "" {
		aq.Set("warehouse", w)
	}
	if from := q.Get("from"); from != "" {
		aq.Set("continue", from)
	}
	type result struct {
		fs   []model.Freight
		next string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		fs, next, err := page[model.Freight](req.ctx, req.api, projectPath(project, "freight"), aq)
		ch <- result{fs, next, err}
	}()
	return func() ([]model.Freight, string, error) {
		r := <-ch
		return r.fs, r.next, r.err
	}
}

// timeline reads freight newest first, filtered by warehouse and by text
// (alias, name or artifact), a page at a time. Each API page holds up to
// 1,000 freight; the timeline pages through them with the API's continue
// token and an offset.
func (u *UI) timeline(req *request, d *projectData, now time.Time, pre func() ([]model.Freight, string, error)) (timelineView, error) {
	q := req.r.URL.Query()
	tv := timelineView{Project: d.project, Warehouse: q.Get("warehouse"), Query: strings.TrimSpace(q.Get("q")), CanAct: d.canPromote()}
	for _, w := range d.warehouses {
		tv.Warehouses = append(tv.Warehouses, w.Name)
	}
	skip, _ := strconv.Atoi(q.Get("skip"))
	skip = max(skip, 0)
	from := q.Get("from")
	fs, next, err := pre()
	if err != nil {
		return tv, err
	}
	sortFreightNewest(fs)
	if tv.Query != "" {
		needle := strings.ToLower(tv.Query)
		kept := fs[:0]
		for _, f := range fs {
			if matchesText(&f, needle) {
				kept = append(kept, f)
			}
		}
		fs = kept
	}
	tv.Total = len(fs)
	end := min(skip+timelinePage, len(fs))
	if skip > len(fs) {
		skip = len(fs)
	}
	for i := skip; i < end; i++ {
		f := &fs[i]
		it := timelineItem{freightView: viewFreight(f)}
		for s := range f.Status.CurrentlyIn {
			it.Stages = append(it.Stages, s)
		}
		slices.Sort(it.Stages)
		for s := range f.Status.VerifiedIn {
			it.Verified = append(it.Verified, soakView{Stage: s, Left: f.LongestSoak(s, now)})
		}
		slices.SortFunc(it.Verified, func(a, b soakView) int { return strings.Compare(a.Stage, b.Stage) })
		for s := range f.Status.ApprovedFor {
			it.Approved = append(it.Approved, s)
		}
		slices.Sort(it.Approved)
		it.Eligible = eligible(f, d.stages, now)
		tv.Items = append(tv.Items, it)
	}
	keep := url.Values{}
	if tv.Warehouse != "" {
		keep.Set("warehouse", tv.Warehouse)
	}
	if tv.Query != "" {
		keep.Set("q", tv.Query)
	}
	switch {
	case end < len(fs):
		o := cloneValues(keep)
		if from != "" {
			o.Set("from", from)
		}
		o.Set("skip", strconv.Itoa(end))
		tv.Older = "?" + o.Encode()
	case next != "":
		o := cloneValues(keep)
		o.Set("from", next)
		tv.Older = "?" + o.Encode()
	}
	if skip > 0 {
		o := cloneValues(keep)
		if from != "" {
			o.Set("from", from)
		}
		if s := skip - timelinePage; s > 0 {
			o.Set("skip", strconv.Itoa(s))
		}
		tv.Newer = "?" + o.Encode()
	} else if from != "" {
		tv.Newer = "?" + keep.Encode()
	}
	return tv, nil
}

func cloneValues(v url.Values) url.Values {
	o := url.Values{}
	for k, vs := range v {
		o[k] = slices.Clone(vs)
	}
	return o
}

func matchesText(f *model.Freight, needle string) bool {
	if strings.Contains(strings.ToLower(f.Alias), needle) || strings.HasPrefix(f.Name, needle) {
		return true
	}
	for _, i := range f.Images {
		if strings.Contains(strings.ToLower(i.RepoURL+":"+i.Tag+" "+i.Digest), needle) {
			return true
		}
	}
	for _, c := range f.Commits {
		if strings.Contains(strings.ToLower(c.RepoURL+" "+c.ID+" "+c.Tag+" "+c.Message+" "+c.Author), needle) {
			return true
		}
	}
	for _, c := range f.Charts {
		if strings.Contains(strings.ToLower(c.RepoURL+" "+c.Name+" "+c.Version), needle) {
			return true
		}
	}
	return false
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// runningAliases reads the aliases of freight being promoted that no stage
// holds yet.
func (d *projectData) runningAliases(ctx context.Context, c apiClient) {
	for _, p := range d.running {
		if _, ok := d.aliases[p.Spec.Freight]; ok {
			continue
		}
		var f model.Freight
		if c.get(ctx, projectPath(d.project, "freight", p.Spec.Freight), nil, &f) == nil {
			d.aliases[f.Name] = f.Alias
		}
	}
}

// holdList is a stage's holds in a stable order (by origin).
func holdList(h model.AutoPromotionHolds) []model.AutoPromotionHold {
	out := make([]model.AutoPromotionHold, 0, len(h))
	for _, k := range slices.Sorted(maps.Keys(h)) {
		out = append(out, h[k])
	}
	return out
}
