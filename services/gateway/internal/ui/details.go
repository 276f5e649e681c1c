package ui

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

func (u *UI) projectCrumbs(project string, more ...crumb) []crumb {
	return append([]crumb{{"Projects", "/projects"}, {project, "/projects/" + url.PathEscape(project)}}, more...)
}

// verification is GET …/stages/{stage}/verifications[/{id}].
type verification struct {
	ID         string     `json:"id"`
	Stage      string     `json:"stage"`
	Promotion  string     `json:"promotion"`
	Freight    []string   `json:"freight"`
	Actor      string     `json:"actor"`
	Phase      string     `json:"phase"`
	Message    string     `json:"message"`
	Summary    string     `json:"summary"`
	CreatedAt  time.Time  `json:"createdAt"`
	StartedAt  *time.Time `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt"`
	Result     *struct {
		Phase   string         `json:"phase"`
		Message string         `json:"message"`
		Metrics []metricResult `json:"metrics"`
	} `json:"result"`
}

type metricResult struct {
	Name         string `json:"name"`
	Template     string `json:"template"`
	Phase        string `json:"phase"`
	Message      string `json:"message"`
	DryRun       bool   `json:"dryRun"`
	Count        int    `json:"count"`
	Successful   int    `json:"successful"`
	Failed       int    `json:"failed"`
	Inconclusive int    `json:"inconclusive"`
	Error        int    `json:"error"`
	Measurements []struct {
		Phase      string    `json:"phase"`
		Value      string    `json:"value"`
		Message    string    `json:"message"`
		StartedAt  time.Time `json:"startedAt"`
		FinishedAt time.Time `json:"finishedAt"`
	} `json:"measurements"`
}

type stageData struct {
	base
	Card          cardView
	CardHTML      any
	Stage         *model.Stage
	History       []historyEntry
	Promotions    []promotionSummary
	Verifications []verification
	Upstream      []string
	Downstream    []string
	Available     []freightView
}

type historyEntry struct {
	ID            string
	Freight       []freightView
	Verifications []model.VerificationInfo
}

func (u *UI) stage(req *request) error {
	project, name := req.r.PathValue("project"), req.r.PathValue("stage")
	d, err := u.load(req.ctx, req.api, project, needAll)
	if err != nil {
		return err
	}
	st, ok := d.byName[name]
	if !ok {
		return &apiError{Status: http.StatusNotFound, Message: fmt.Sprintf("stage %q not found in project %q", name, project)}
	}
	now := u.now()
	if req.fragment == "promote" {
		return u.promoteMenu(req, d, st, now)
	}
	data := stageData{base: u.base(req, name+" · "+project, project, u.projectCrumbs(project, crumb{"stage " + name, ""})...),
		Card: d.card(st, now), Stage: st, Upstream: st.UpstreamStages()}
	html, _, err := u.renderCard(data.Card)
	if err != nil {
		return err
	}
	data.CardHTML = html
	for _, other := range d.stages {
		if slices.Contains(other.UpstreamStages(), name) {
			data.Downstream = append(data.Downstream, other.Name)
		}
	}
	// Freight of the history may no longer be in use: read the aliases.
	for _, fc := range st.Status.FreightHistory {
		for _, ref := range fc.Freight {
			if _, ok := d.aliases[ref.Name]; !ok {
				var f model.Freight
				if req.api.get(req.ctx, projectPath(project, "freight", ref.Name), nil, &f) == nil {
					d.aliases[f.Name] = f.Alias
				}
			}
		}
	}
	for _, fc := range st.Status.FreightHistory {
		e := historyEntry{ID: fc.ID, Verifications: fc.VerificationHistory}
		keys := make([]string, 0, len(fc.Freight))
		for k := range fc.Freight {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			e.Freight = append(e.Freight, viewFreightRef(fc.Freight[k], d.aliases))
		}
		data.History = append(data.History, e)
	}
	ps, err := all[model.Promotion](req.ctx, req.api, projectPath(project, "promotions"), url.Values{"stage": {name}})
	if err != nil {
		return err
	}
	slices.SortFunc(ps, func(a, b model.Promotion) int { return promotionTime(&b).Compare(promotionTime(&a)) })
	for i := range ps {
		data.Promotions = append(data.Promotions, *summarize(&ps[i], d.aliases))
	}
	var vl listOf[verification]
	if err := req.api.get(req.ctx, projectPath(project, "stages", name, "verifications"), nil, &vl); err != nil {
		return err
	}
	data.Verifications = vl.Items
	return u.render(req.w, http.StatusOK, "stage", "layout", data)
}

func promotionTime(p *model.Promotion) time.Time {
	if p.CreationTimestamp != nil {
		return p.CreationTimestamp.Time
	}
	return time.Time{}
}

type promoteMenuData struct {
	Project, Stage string
	Freight        []freightView
	Current        map[string]bool
}

// promoteMenu lists the freight the stage may take (the API's ?stage=
// list: newest first).
func (u *UI) promoteMenu(req *request, d *projectData, st *model.Stage, now time.Time) error {
	fs, _, err := page[model.Freight](req.ctx, req.api, projectPath(d.project, "freight"), url.Values{"stage": {st.Name}, "limit": {"20"}})
	if err != nil {
		return err
	}
	m := promoteMenuData{Project: d.project, Stage: st.Name, Current: map[string]bool{}}
	for i := range fs {
		m.Freight = append(m.Freight, viewFreight(&fs[i]))
		if fs[i].IsCurrentlyIn(st.Name) {
			m.Current[fs[i].Name] = true
		}
	}
	_ = now
	return u.render(req.w, http.StatusOK, "stage", "promote-menu", m)
}

type freightData struct {
	base
	Freight    freightView
	Raw        *model.Freight
	Current    []stageSince
	Verified   []soakView
	Approved   []stageSince
	Eligible   []string
	Approvable []string
	Promotions []promotionSummary
	CanAct     bool
	Others     []freightView
}

type stageSince struct {
	Stage string
	Since time.Time
}

func (u *UI) freight(req *request) error {
	project := req.r.PathValue("project")
	d, err := u.load(req.ctx, req.api, project, needAll)
	if err != nil {
		return err
	}
	f, err := u.freightByName(req, project, req.r.PathValue("freight"))
	if err != nil {
		return err
	}
	now := u.now()
	fv := viewFreight(f)
	data := freightData{base: u.base(req, fv.Label()+" · "+project, project, u.projectCrumbs(project, crumb{"freight " + fv.Label(), ""})...),
		Freight: fv, Raw: f, CanAct: d.canPromote(), Eligible: eligible(f, d.stages, now)}
	for s, c := range f.Status.CurrentlyIn {
		ss := stageSince{Stage: s}
		if c.Since != nil {
			ss.Since = c.Since.Time
		}
		data.Current = append(data.Current, ss)
	}
	slices.SortFunc(data.Current, func(a, b stageSince) int { return strings.Compare(a.Stage, b.Stage) })
	for s := range f.Status.VerifiedIn {
		data.Verified = append(data.Verified, soakView{Stage: s, Left: f.LongestSoak(s, now)})
	}
	slices.SortFunc(data.Verified, func(a, b soakView) int { return strings.Compare(a.Stage, b.Stage) })
	for s, a := range f.Status.ApprovedFor {
		ss := stageSince{Stage: s}
		if a.ApprovedAt != nil {
			ss.Since = a.ApprovedAt.Time
		}
		data.Approved = append(data.Approved, ss)
	}
	slices.SortFunc(data.Approved, func(a, b stageSince) int { return strings.Compare(a.Stage, b.Stage) })
	for _, st := range d.stages {
		if st.RequestsOrigin(f.Origin) && !f.IsApprovedFor(st.Name) {
			data.Approvable = append(data.Approvable, st.Name)
		}
	}
	ps, err := all[model.Promotion](req.ctx, req.api, projectPath(project, "promotions"), url.Values{"freight": {f.Name}})
	if err != nil {
		return err
	}
	slices.SortFunc(ps, func(a, b model.Promotion) int { return promotionTime(&b).Compare(promotionTime(&a)) })
	for i := range ps {
		data.Promotions = append(data.Promotions, *summarize(&ps[i], d.aliases))
	}
	for _, o := range d.inUse {
		if o.Name != f.Name && o.Origin == f.Origin {
			data.Others = append(data.Others, viewFreight(o))
		}
	}
	slices.SortFunc(data.Others, func(a, b freightView) int { return strings.Compare(a.Label(), b.Label()) })
	return u.render(req.w, http.StatusOK, "freight", "layout", data)
}

type stepView struct {
	Index                  int
	Alias, Uses, Status    string
	Message                string
	Started, Finished      time.Time
	Errors                 uint32
	Output                 string
	Running                bool
	ContinueOnError, Retry bool
}

// Duration is how long the step ran (so far).
func (s stepView) Duration(now time.Time) string {
	if s.Started.IsZero() {
		return ""
	}
	end := s.Finished
	if end.IsZero() {
		end = now
	}
	return durationText(end.Sub(s.Started))
}

type promotionData struct {
	base
	P        *model.Promotion
	Summary  *promotionSummary
	Steps    []stepView
	Now      time.Time
	CanAbort bool
	Created  time.Time
	Diff     *diffAnswer
	Terminal bool
}

type diffAnswer struct {
	Pushes []struct {
		Step    string `json:"step"`
		RepoURL string `json:"repoURL"`
		Branch  string `json:"branch"`
		Commit  string `json:"commit"`
		Error   string `json:"error"`
		Diff    *struct {
			Parent    string `json:"parent"`
			Message   string `json:"message"`
			Author    string `json:"author"`
			Patch     string `json:"patch"`
			Truncated bool   `json:"truncated"`
			Files     []struct {
				Path      string `json:"path"`
				Additions int    `json:"additions"`
				Deletions int    `json:"deletions"`
			} `json:"files"`
		} `json:"diff"`
	} `json:"pushes"`
}

// patchLine is one line of a unified diff with its kind (add, del, hunk,
// meta or ctx), for colouring.
type patchLine struct{ Kind, Text string }

func patchLines(p string) []patchLine {
	lines := strings.Split(strings.TrimRight(p, "\n"), "\n")
	out := make([]patchLine, 0, len(lines))
	for _, l := range lines {
		k := "ctx"
		switch {
		case strings.HasPrefix(l, "+++"), strings.HasPrefix(l, "---"), strings.HasPrefix(l, "diff "), strings.HasPrefix(l, "index "):
			k = "meta"
		case strings.HasPrefix(l, "@@"):
			k = "hunk"
		case strings.HasPrefix(l, "+"):
			k = "add"
		case strings.HasPrefix(l, "-"):
			k = "del"
		}
		out = append(out, patchLine{k, l})
	}
	return out
}

func (u *UI) promotion(req *request) error {
	project, name := req.r.PathValue("project"), req.r.PathValue("promotion")
	who, err := req.api.whoami(req.ctx, project)
	if err != nil {
		return err
	}
	var p model.Promotion
	if err := req.api.get(req.ctx, projectPath(project, "promotions", name), nil, &p); err != nil {
		return err
	}
	aliases := map[string]string{}
	var f model.Freight
	if req.api.get(req.ctx, projectPath(project, "freight", p.Spec.Freight), nil, &f) == nil {
		aliases[f.Name] = f.Alias
	}
	now := u.now()
	data := promotionData{base: u.base(req, "promotion "+name, project, u.projectCrumbs(project, crumb{"stage " + p.Spec.Stage, "/projects/" + url.PathEscape(project) + "/stages/" + url.PathEscape(p.Spec.Stage)}, crumb{"promotion", ""})...),
		P: &p, Summary: summarize(&p, aliases), Now: now, Created: promotionTime(&p), Terminal: p.Status.Phase.IsTerminal()}
	data.CanAbort = (who.Role == "promoter" || who.Role == "admin") && !data.Terminal
	n := max(len(p.Spec.Steps), len(p.Status.StepExecutionMetadata))
	for i := range n {
		sv := stepView{Index: i + 1}
		// Spec steps match the executed ones unless tasks were expanded.
		if i < len(p.Spec.Steps) && (len(p.Status.StepExecutionMetadata) == 0 || len(p.Spec.Steps) == len(p.Status.StepExecutionMetadata)) {
			st := p.Spec.Steps[i]
			sv.Alias, sv.Uses, sv.ContinueOnError, sv.Retry = st.As, st.Uses, st.ContinueOnError, st.Retry != nil
			if st.Task != nil {
				sv.Uses = "task " + st.Task.Name
			}
		}
		if i < len(p.Status.StepExecutionMetadata) {
			m := p.Status.StepExecutionMetadata[i]
			if m.Alias != "" {
				sv.Alias = m.Alias
			}
			sv.Status, sv.Message, sv.Errors = string(m.Status), m.Message, m.ErrorCount
			if m.StartedAt != nil {
				sv.Started = m.StartedAt.Time
			}
			if m.FinishedAt != nil {
				sv.Finished = m.FinishedAt.Time
			}
			sv.Running = m.Status == model.PromotionStepStatusRunning || (sv.Finished.IsZero() && !sv.Started.IsZero() && !data.Terminal)
		}
		if out, ok := p.Status.State[sv.Alias]; ok {
			b, _ := json.MarshalIndent(out, "", "  ")
			sv.Output = string(b)
		}
		data.Steps = append(data.Steps, sv)
	}
	if req.fragment == "steps" {
		return u.render(req.w, http.StatusOK, "promotion", "steps", data)
	}
	if data.Terminal && p.Status.Phase == model.PromotionPhaseSucceeded {
		var da diffAnswer
		if err := req.api.get(req.ctx, projectPath(project, "promotions", name, "diff"), nil, &da); err == nil && len(da.Pushes) > 0 {
			data.Diff = &da
		}
	}
	return u.render(req.w, http.StatusOK, "promotion", "layout", data)
}

type warehouseData struct {
	base
	W       *model.Warehouse
	Card    *warehouseCard
	Freight []freightView
	CanAct  bool
}

func (u *UI) warehouse(req *request) error {
	project, name := req.r.PathValue("project"), req.r.PathValue("warehouse")
	who, err := req.api.whoami(req.ctx, project)
	if err != nil {
		return err
	}
	var w model.Warehouse
	if err := req.api.get(req.ctx, projectPath(project, "warehouses", name), nil, &w); err != nil {
		return err
	}
	can := who.Role == "promoter" || who.Role == "admin"
	data := warehouseData{base: u.base(req, "warehouse "+name, project, u.projectCrumbs(project, crumb{"warehouse " + name, ""})...),
		W: &w, Card: warehouseCardOf(project, &w, can), CanAct: can}
	fs, _, err := page[model.Freight](req.ctx, req.api, projectPath(project, "freight"), url.Values{"warehouse": {name}, "limit": {"1000"}})
	if err != nil {
		return err
	}
	sortFreightNewest(fs)
	for i := range fs[:min(len(fs), 20)] {
		data.Freight = append(data.Freight, viewFreight(&fs[i]))
	}
	return u.render(req.w, http.StatusOK, "warehouse", "layout", data)
}

// chart is a metric's measurements as a small SVG line chart (numeric
// values) or a strip of outcomes (anything else).
type chart struct {
	Name, Template, Phase, Message string
	Counts                         string
	Numeric                        bool
	W, H                           float64
	Path                           string
	Points                         []chartPoint
	Min, Max                       string
}

type chartPoint struct {
	X, Y               float64
	Phase, Value, When string
}

func chartOf(m metricResult) chart {
	c := chart{Name: m.Name, Template: m.Template, Phase: m.Phase, Message: m.Message, W: 320, H: 80,
		Counts: fmt.Sprintf("%d successful, %d failed, %d inconclusive, %d error", m.Successful, m.Failed, m.Inconclusive, m.Error)}
	vals := make([]float64, len(m.Measurements))
	c.Numeric = len(m.Measurements) > 0
	for i, ms := range m.Measurements {
		v, err := strconv.ParseFloat(strings.Trim(strings.TrimSpace(ms.Value), `"[]`), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			c.Numeric = false
		}
		vals[i] = v
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		lo, hi = min(lo, v), max(hi, v)
	}
	if hi == lo {
		hi, lo = hi+1, lo-1
	}
	n := len(m.Measurements)
	var path strings.Builder
	for i, ms := range m.Measurements {
		x := 8.0
		if n > 1 {
			x = 8 + float64(i)*(c.W-16)/float64(n-1)
		}
		y := c.H / 2
		if c.Numeric {
			y = c.H - 8 - (vals[i]-lo)/(hi-lo)*(c.H-16)
		}
		p := chartPoint{X: x, Y: y, Phase: ms.Phase, Value: ms.Value, When: ms.FinishedAt.UTC().Format("15:04:05")}
		c.Points = append(c.Points, p)
		if i == 0 {
			fmt.Fprintf(&path, "M%.1f,%.1f", x, y)
		} else {
			fmt.Fprintf(&path, " L%.1f,%.1f", x, y)
		}
	}
	c.Path = path.String()
	if c.Numeric {
		c.Min, c.Max = strconv.FormatFloat(lo, 'g', 4, 64), strconv.FormatFloat(hi, 'g', 4, 64)
	}
	return c
}

type verificationData struct {
	base
	V      verification
	Charts []chart
	CanAct bool
}

func (u *UI) verification(req *request) error {
	project, stage, id := req.r.PathValue("project"), req.r.PathValue("stage"), req.r.PathValue("id")
	who, err := req.api.whoami(req.ctx, project)
	if err != nil {
		return err
	}
	var v verification
	if err := req.api.get(req.ctx, projectPath(project, "stages", stage, "verifications", id), nil, &v); err != nil {
		return err
	}
	data := verificationData{base: u.base(req, "verification "+id, project, u.projectCrumbs(project, crumb{"stage " + stage, "/projects/" + url.PathEscape(project) + "/stages/" + url.PathEscape(stage)}, crumb{"verification", ""})...),
		V: v, CanAct: who.Role == "promoter" || who.Role == "admin"}
	if v.Result != nil {
		for _, m := range v.Result.Metrics {
			data.Charts = append(data.Charts, chartOf(m))
		}
	}
	if req.fragment == "charts" {
		return u.render(req.w, http.StatusOK, "verification", "charts", data)
	}
	return u.render(req.w, http.StatusOK, "verification", "layout", data)
}

type compareAnswer struct {
	From      string `json:"from"`
	To        string `json:"to"`
	Artifacts []struct {
		Kind    string `json:"kind"`
		RepoURL string `json:"repoURL"`
		Name    string `json:"name"`
		From    string `json:"from"`
		To      string `json:"to"`
	} `json:"artifacts"`
	Commits []struct {
		RepoURL string `json:"repoURL"`
		From    string `json:"from"`
		To      string `json:"to"`
		Error   string `json:"error"`
		Commits []struct {
			ID      string    `json:"id"`
			Message string    `json:"message"`
			Author  string    `json:"author"`
			When    time.Time `json:"when"`
		} `json:"commits"`
	} `json:"commits"`
}

type comparison struct {
	Origin   string
	From, To freightView
	Answer   *compareAnswer
	Same     bool
}

type compareData struct {
	base
	Kind        string
	A, B        string
	Stages      []string
	Freight     []freightView
	Comparisons []comparison
	Error       string
}

// compare shows what differs between two stages (their current freight,
// per origin) or two freight.
func (u *UI) compare(req *request) error {
	project := req.r.PathValue("project")
	q := req.r.URL.Query()
	d, err := u.load(req.ctx, req.api, project, needAll)
	if err != nil {
		return err
	}
	data := compareData{base: u.base(req, "compare · "+project, project, u.projectCrumbs(project, crumb{"compare", ""})...),
		Kind: q.Get("kind"), A: q.Get("a"), B: q.Get("b")}
	if data.Kind != "freight" {
		data.Kind = "stage"
	}
	for _, st := range d.stages {
		data.Stages = append(data.Stages, st.Name)
	}
	for _, f := range d.inUse {
		data.Freight = append(data.Freight, viewFreight(f))
	}
	slices.SortFunc(data.Freight, func(a, b freightView) int { return b.Created.Compare(a.Created) })
	if data.A == "" || data.B == "" {
		return u.render(req.w, http.StatusOK, "compare", "layout", data)
	}
	type pair struct {
		origin string
		a, b   string
	}
	var pairs []pair
	if data.Kind == "freight" {
		pairs = append(pairs, pair{"", data.A, data.B})
	} else {
		sa, okA := d.byName[data.A]
		sb, okB := d.byName[data.B]
		if !okA || !okB {
			return badRequest("compare: both stages must exist in project %q", project)
		}
		cur := func(st *model.Stage) map[string]string {
			m := map[string]string{}
			if len(st.Status.FreightHistory) > 0 {
				for k, ref := range st.Status.FreightHistory[0].Freight {
					m[k] = ref.Name
				}
			}
			return m
		}
		ca, cb := cur(sa), cur(sb)
		var origins []string
		for k := range ca {
			origins = append(origins, k)
		}
		for k := range cb {
			if _, ok := ca[k]; !ok {
				origins = append(origins, k)
			}
		}
		slices.Sort(origins)
		for _, o := range origins {
			pairs = append(pairs, pair{o, ca[o], cb[o]})
		}
		if len(pairs) == 0 {
			data.Error = "Neither stage holds freight yet."
		}
	}
	for _, p := range pairs {
		c := comparison{Origin: p.origin}
		if p.a == "" || p.b == "" {
			c.Origin += " (only one stage holds freight of this origin)"
			data.Comparisons = append(data.Comparisons, c)
			continue
		}
		fa, err := u.freightByName(req, project, p.a)
		if err != nil {
			return err
		}
		fb, err := u.freightByName(req, project, p.b)
		if err != nil {
			return err
		}
		c.From, c.To, c.Same = viewFreight(fa), viewFreight(fb), fa.Name == fb.Name
		if !c.Same {
			var ans compareAnswer
			if err := req.api.get(req.ctx, projectPath(project, "freight", fa.Name, "compare", fb.Name), nil, &ans); err != nil {
				return err
			}
			c.Answer = &ans
		}
		data.Comparisons = append(data.Comparisons, c)
	}
	return u.render(req.w, http.StatusOK, "compare", "layout", data)
}

type deadLetter struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Project    string    `json:"project"`
	Consumer   string    `json:"consumer"`
	Error      string    `json:"error"`
	Deliveries int       `json:"deliveries"`
	Time       time.Time `json:"time"`
	Subject    any       `json:"subject"`
}

type deadLettersData struct {
	base
	Items []deadLetter
}

func (u *UI) deadLetters(req *request) error {
	items, err := all[deadLetter](req.ctx, req.api, "/v1/deadletters", nil)
	if err != nil {
		return err
	}
	data := deadLettersData{base: u.base(req, "Dead letters", "", crumb{"Projects", "/projects"}, crumb{"dead letters", ""}), Items: items}
	return u.render(req.w, http.StatusOK, "deadletters", "layout", data)
}
