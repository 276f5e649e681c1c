package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/client"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// resource is one kind `get` reads.
type resource struct {
	name    string   // plural, as typed and in the path
	aliases []string // singular and short forms
	// cluster is true for kinds not under a project.
	cluster bool
	// path is the list path (escaped).
	path func(project string) string
	// print prints decoded items as a table.
	print func(ctx context.Context, g *getter, items []json.RawMessage) error
}

var resources = []resource{
	{name: "projects", aliases: []string{"project", "proj"}, cluster: true,
		path: func(string) string { return "/v1/projects" }, print: printProjects},
	{name: "warehouses", aliases: []string{"warehouse", "wh"},
		path: func(p string) string { return client.ProjectPath(p, "warehouses") }, print: printWarehouses},
	{name: "stages", aliases: []string{"stage", "st"},
		path: func(p string) string { return client.ProjectPath(p, "stages") }, print: printStages},
	{name: "freight", aliases: []string{"freights", "f"},
		path: func(p string) string { return client.ProjectPath(p, "freight") }, print: printFreight},
	{name: "promotions", aliases: []string{"promotion", "promo"},
		path: func(p string) string { return client.ProjectPath(p, "promotions") }, print: printPromotions},
	{name: "promotiontasks", aliases: []string{"promotiontask", "pt"},
		path: func(p string) string { return client.ProjectPath(p, "promotiontasks") }, print: printPromotionTasks},
	{name: "analysistemplates", aliases: []string{"analysistemplate", "at"},
		path: func(p string) string { return client.ProjectPath(p, "analysistemplates") }, print: printAnalysisTemplates},
	{name: "deadletters", aliases: []string{"deadletter", "dl"}, cluster: true,
		path: func(string) string { return "/v1/deadletters" }, print: printDeadLetters},
}

func findResource(name string) (resource, bool) {
	name = strings.ToLower(name)
	for _, r := range resources {
		if r.name == name || slices.Contains(r.aliases, name) {
			return r, true
		}
	}
	return resource{}, false
}

// getter carries what printers need.
type getter struct {
	c       *client.Client
	project string
	w       io.Writer
	wide    bool
	now     time.Time
}

// List orders of --sort: the API's, and the pipeline order of stages.
const (
	sortNewest   = "newest"
	sortOldest   = "oldest"
	sortName     = "name"
	sortPipeline = "pipeline"
)

func (a *app) newGet() *cobra.Command {
	var output, stage, warehouse, phase, order string
	names := make([]string, 0, len(resources))
	for _, r := range resources {
		names = append(names, r.name)
	}
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show resources: " + strings.Join(names, ", "),
		Long: `Show resources as a table (-o table, the default, or -o wide for more
columns) or as the API returns them (-o yaml, -o json).

Kinds: ` + strings.Join(names, ", ") + `.
Freight may be named by its ID, a unique prefix of it (7 characters or
more, as the table shows) or its alias.

Lists come in the API's order, newest first, in every format (so the first
item of -o json is the first row of the table); --sort oldest or --sort
name choose another. Stages are listed in pipeline order (upstream first)
unless --sort says otherwise.`,
		Example: `  caravan get stages -p demo
  caravan get freight -p demo -o wide
  caravan get promotions -p demo --stage prod
  caravan get stage prod -p demo -o yaml`,
		ValidArgsFunction: a.completeKindName(""),
		Args:              args(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, argv []string) error {
			r, ok := findResource(argv[0])
			if !ok {
				return usagef("unknown kind %q: want one of %s", argv[0], strings.Join(names, ", "))
			}
			if err := checkFormat(output); err != nil {
				return err
			}
			switch order {
			case "":
				order = sortNewest
				if r.name == "stages" {
					order = sortPipeline
				}
			case sortNewest, sortOldest, sortName:
			case sortPipeline:
				if r.name != "stages" {
					return usagef("--sort pipeline: only stages have a pipeline order")
				}
			default:
				return usagef("--sort %q: want newest, oldest or name (or pipeline for stages)", order)
			}
			var (
				c       *client.Client
				project string
				err     error
			)
			if r.cluster {
				c, _, err = a.client()
			} else {
				c, project, err = a.projectClient()
			}
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"stage": stage, "warehouse": warehouse, "phase": phase} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if order != sortNewest && order != sortPipeline && r.name != "deadletters" {
				q.Set("sort", order)
			}
			ctx := cmd.Context()
			var items []json.RawMessage
			single := len(argv) == 2
			switch {
			case single && r.name == "deadletters":
				all, err := c.List(ctx, r.path(project), nil)
				if err != nil {
					return err
				}
				for _, it := range all {
					var dl events.DeadLetter
					if json.Unmarshal(it, &dl) == nil && dl.ID == argv[1] {
						items = append(items, it)
					}
				}
				if len(items) == 0 {
					return &client.Error{Status: 404, Code: "not_found", Message: fmt.Sprintf("dead letter %q not found", argv[1])}
				}
			case single:
				raw, err := c.Get(ctx, r.path(project)+"/"+url.PathEscape(argv[1]), nil)
				if err != nil {
					return err
				}
				items = []json.RawMessage{raw}
			default:
				items, err = c.List(ctx, r.path(project), q)
				if err != nil {
					return err
				}
				if order == sortPipeline {
					if items, err = pipelineOrderRaw(items); err != nil {
						return err
					}
				}
			}
			out := cmd.OutOrStdout()
			switch output {
			case formatJSON, formatYAML:
				return printRaw(out, output, items, single)
			}
			if len(items) == 0 {
				if r.cluster {
					fmt.Fprintf(a.errOut, "No %s found.\n", r.name)
				} else {
					fmt.Fprintf(a.errOut, "No %s found in project %s.\n", r.name, project)
				}
				return nil
			}
			g := &getter{c: c, project: project, w: out, wide: output == formatWide, now: time.Now()}
			return r.print(ctx, g, items)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", formatTable, "output format: table, wide, yaml or json")
	f.StringVar(&stage, "stage", "", "freight: only what is available to this stage; promotions: only this stage's")
	f.StringVar(&warehouse, "warehouse", "", "freight: only from this warehouse")
	f.StringVar(&phase, "phase", "", "promotions: only in this phase")
	f.StringVar(&order, "sort", "", "order of lists: newest (default), oldest, name; stages: pipeline (default)")
	a.completeFlag(cmd, "stage", "stages")
	a.completeFlag(cmd, "warehouse", "warehouses")
	_ = cmd.RegisterFlagCompletionFunc("sort", cobra.FixedCompletions([]string{sortNewest, sortOldest, sortName, sortPipeline}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// pipelineOrderRaw reorders listed stages in pipeline order.
func pipelineOrderRaw(items []json.RawMessage) ([]json.RawMessage, error) {
	ss, err := decodeAll[model.Stage](items)
	if err != nil {
		return nil, err
	}
	at := make(map[*model.Stage]json.RawMessage, len(ss))
	for i, s := range ss {
		at[s] = items[i]
	}
	pipelineOrder(ss)
	out := make([]json.RawMessage, len(ss))
	for i, s := range ss {
		out[i] = at[s]
	}
	return out, nil
}

// decodeAll decodes every item into T.
func decodeAll[T any](items []json.RawMessage) ([]*T, error) {
	out := make([]*T, 0, len(items))
	for _, it := range items {
		v := new(T)
		if err := json.Unmarshal(it, v); err != nil {
			return nil, fmt.Errorf("decode answer: %w", err)
		}
		out = append(out, v)
	}
	return out, nil
}

func created(m *model.ObjectMeta) time.Time {
	if m.CreationTimestamp == nil {
		return time.Time{}
	}
	return m.CreationTimestamp.Time
}

func printProjects(_ context.Context, g *getter, items []json.RawMessage) error {
	ps, err := decodeAll[model.Project](items)
	if err != nil {
		return err
	}
	t := newTable(g.w, "NAME", "AGE")
	for _, p := range ps {
		t.row(p.Name, age(created(&p.ObjectMeta), g.now))
	}
	return t.flush()
}

func printWarehouses(_ context.Context, g *getter, items []json.RawMessage) error {
	ws, err := decodeAll[model.Warehouse](items)
	if err != nil {
		return err
	}
	headers := []string{"NAME", "SUBSCRIPTIONS", "LAST FREIGHT", "READY", "STATUS", "AGE"}
	if g.wide {
		headers = append(headers, "INTERVAL", "POLICY", "DISCOVERED")
	}
	t := newTable(g.w, headers...)
	for _, w := range ws {
		var subs []string
		for _, s := range w.Spec.Subscriptions {
			switch {
			case s.Image != nil:
				subs = append(subs, "image:"+shortRepo(s.Image.RepoURL, g.wide))
			case s.Git != nil:
				subs = append(subs, "git:"+shortRepo(s.Git.RepoURL, g.wide))
			case s.Chart != nil:
				subs = append(subs, "chart:"+firstOf(s.Chart.Name, shortRepo(s.Chart.RepoURL, g.wide)))
			}
		}
		last := w.Status.LastFreightID
		if !g.wide && len(last) > 12 {
			last = last[:12]
		}
		ready, status := conditionStatus(w.Status.Conditions, "Ready")
		if ready == "" {
			ready, status = model.ConditionUnknown, "not discovered yet"
		}
		row := []string{w.Name, strings.Join(subs, ","), last, ready, g.clip(status), age(created(&w.ObjectMeta), g.now)}
		if g.wide {
			discovered := ""
			if d := w.Status.DiscoveredArtifacts; d != nil && !d.DiscoveredAt.IsZero() {
				discovered = age(d.DiscoveredAt.Time, g.now) + " ago"
			}
			row = append(row, w.Spec.Interval.String(), string(w.Spec.FreightCreationPolicy), discovered)
		}
		t.row(row...)
	}
	return t.flush()
}

// conditionStatus is the status and message of the condition typ.
func conditionStatus(cs []model.Condition, typ string) (status, message string) {
	for _, c := range cs {
		if c.Type == typ {
			return c.Status, firstOf(c.Message, c.Reason)
		}
	}
	return "", ""
}

// statusWidth bounds a STATUS or MESSAGE cell of a table (-o wide shows it
// whole).
const statusWidth = 80

// clip shortens a one-line status for a table cell unless wide.
func (g *getter) clip(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if g.wide || len(s) <= statusWidth {
		return s
	}
	return s[:statusWidth-1] + "…"
}

// aliases maps freight names to aliases, read once per command.
func (g *getter) aliases(ctx context.Context) map[string]string {
	out := map[string]string{}
	items, err := g.c.List(ctx, client.ProjectPath(g.project, "freight"), nil)
	if err != nil {
		return out
	}
	fs, err := decodeAll[model.Freight](items)
	if err != nil {
		return out
	}
	for _, f := range fs {
		out[f.Name] = f.Alias
	}
	return out
}

func printStages(ctx context.Context, g *getter, items []json.RawMessage) error {
	ss, err := decodeAll[model.Stage](items)
	if err != nil {
		return err
	}
	aliases := g.aliases(ctx)
	headers := []string{"NAME", "FREIGHT", "HEALTH", "READY", "STATUS", "HOLD", "AGE"}
	if g.wide {
		headers = append(headers, "VERIFICATION", "LAST PROMOTION", "SOURCES", "ANALYSIS")
	}
	t := newTable(g.w, headers...)
	for _, s := range ss {
		var freight []string
		verification := ""
		if h := s.Status.FreightHistory; len(h) > 0 {
			for _, ref := range sortedRefs(h[0].Freight) {
				freight = append(freight, firstOf(aliases[ref.Name], short(ref.Name)))
			}
			if vh := h[0].VerificationHistory; len(vh) > 0 {
				verification = string(vh[0].Phase)
			}
		}
		health := ""
		if s.Status.Health != nil {
			health = string(s.Status.Health.Status)
		}
		st := stageState(s, aliases)
		hold := ""
		if len(s.Status.AutoPromotionHolds) > 0 {
			hold = "held"
		}
		row := []string{s.Name, strings.Join(freight, ","), health, st.ready, g.clip(st.status), hold, age(created(&s.ObjectMeta), g.now)}
		if g.wide {
			promo := ""
			if lp := s.Status.LastPromotion; lp != nil {
				promo = lp.Name
			}
			if cp := s.Status.CurrentPromotion; cp != nil {
				promo = cp.Name
			}
			var sources []string
			for _, r := range s.Spec.RequestedFreight {
				if r.Sources.Direct {
					sources = append(sources, r.Origin.Name)
				}
				sources = append(sources, r.Sources.Stages...)
			}
			var templates []string
			if v := s.Spec.Verification; v != nil {
				for _, at := range v.AnalysisTemplates {
					templates = append(templates, at.Name)
				}
			}
			row = append(row, verification, promo, strings.Join(sources, ","), strings.Join(templates, ","))
		}
		t.row(row...)
	}
	return t.flush()
}

// readiness is a stage's READY and STATUS, as Kargo's columns show them.
type readiness struct {
	ready  string
	status string
}

// stageState says whether a stage is ready and, when it is not, why: the
// promotion running, the last failure (promotion, verification or health)
// with its message; a hold on auto-promotion is added to the status.
func stageState(s *model.Stage, aliases map[string]string) readiness {
	st := s.Status
	var out readiness
	var vh []model.VerificationInfo
	if len(st.FreightHistory) > 0 {
		vh = st.FreightHistory[0].VerificationHistory
	}
	lp := st.LastPromotion
	switch {
	case st.CurrentPromotion != nil:
		out = readiness{model.ConditionFalse, "Promoting: promotion " + st.CurrentPromotion.Name + " is running"}
	case lp != nil && lp.Status != nil && lp.Status.Phase != model.PromotionPhaseSucceeded && lp.Status.Phase.IsTerminal():
		out = readiness{model.ConditionFalse, fmt.Sprintf("Promotion %s %s: %s", lp.Name, strings.ToLower(string(lp.Status.Phase)), firstOf(lp.Status.Message, "no message"))}
	case len(st.FreightHistory) == 0:
		out = readiness{model.ConditionUnknown, "No freight yet"}
	case len(vh) > 0 && !vh[0].Phase.IsTerminal():
		out = readiness{model.ConditionUnknown, "Verifying"}
	case len(vh) > 0 && vh[0].Phase != model.VerificationPhaseSuccessful:
		out = readiness{model.ConditionFalse, fmt.Sprintf("Verification %s: %s", strings.ToLower(string(vh[0].Phase)), firstOf(vh[0].Message, "no message"))}
	case st.Health != nil && st.Health.Status == model.HealthStateUnhealthy:
		out = readiness{model.ConditionFalse, "Unhealthy: " + firstOf(strings.Join(st.Health.Issues, "; "), "no issue reported")}
	case st.Phase == model.StagePhaseVerifying:
		out = readiness{model.ConditionUnknown, "Verifying"}
	case len(vh) > 0:
		out = readiness{model.ConditionTrue, "Verified"}
	default:
		out = readiness{model.ConditionTrue, "Promoted"}
	}
	for _, key := range slices.Sorted(maps.Keys(st.AutoPromotionHolds)) {
		h := st.AutoPromotionHolds[key]
		f := firstOf(aliases[h.FreightName], short(h.FreightName))
		out.status += fmt.Sprintf("; auto-promotion from %s held since %s was promoted by hand (caravan resume stage %s)", h.Origin, f, s.Name)
	}
	return out
}

// pipelineOrder sorts stages in pipeline order: those taking freight from
// warehouses first, then each after its upstream stages; by name within a
// level.
func pipelineOrder(ss []*model.Stage) {
	byName := map[string]*model.Stage{}
	for _, s := range ss {
		byName[s.Name] = s
	}
	depth := map[string]int{}
	var level func(s *model.Stage, seen map[string]bool) int
	level = func(s *model.Stage, seen map[string]bool) int {
		if d, ok := depth[s.Name]; ok {
			return d
		}
		if seen[s.Name] {
			return 0 // a cycle the API would not have accepted
		}
		seen[s.Name] = true
		d := 0
		for _, up := range s.UpstreamStages() {
			if u, ok := byName[up]; ok {
				d = max(d, level(u, seen)+1)
			}
		}
		depth[s.Name] = d
		return d
	}
	for _, s := range ss {
		level(s, map[string]bool{})
	}
	sort.SliceStable(ss, func(i, j int) bool {
		if depth[ss[i].Name] != depth[ss[j].Name] {
			return depth[ss[i].Name] < depth[ss[j].Name]
		}
		return ss[i].Name < ss[j].Name
	})
}

func sortedRefs(m map[string]model.FreightReference) []model.FreightReference {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]model.FreightReference, 0, len(m))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// short shortens a freight ID (a SHA-1) as git shortens commits.
func short(id string) string {
	if len(id) > 7 {
		return id[:7]
	}
	return id
}

// shortRepo keeps the last path element of a repository URL unless wide.
func shortRepo(repo string, wide bool) string {
	if wide {
		return repo
	}
	repo = strings.TrimSuffix(strings.TrimRight(repo, "/"), ".git")
	if i := strings.LastIndex(repo, "/"); i >= 0 {
		return repo[i+1:]
	}
	return repo
}

// artifacts lists a freight's artifacts.
func artifacts(f *model.Freight, wide bool) string {
	var out []string
	for _, im := range f.Images {
		s := shortRepo(im.RepoURL, wide) + ":" + im.Tag
		if im.Tag == "" {
			s = shortRepo(im.RepoURL, wide) + "@" + im.Digest
		}
		out = append(out, s)
	}
	for _, c := range f.Commits {
		ref := firstOf(c.Tag, short(c.ID))
		out = append(out, shortRepo(c.RepoURL, wide)+"@"+ref)
	}
	for _, c := range f.Charts {
		out = append(out, firstOf(c.Name, shortRepo(c.RepoURL, wide))+":"+c.Version)
	}
	return strings.Join(out, ",")
}

func mapKeys[V any](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func printFreight(_ context.Context, g *getter, items []json.RawMessage) error {
	fs, err := decodeAll[model.Freight](items)
	if err != nil {
		return err
	}
	headers := []string{"NAME", "ALIAS", "ORIGIN", "ARTIFACTS", "CURRENTLY IN", "VERIFIED IN", "AGE"}
	if g.wide {
		headers = append(headers, "APPROVED FOR")
	}
	t := newTable(g.w, headers...)
	for _, f := range fs {
		name := f.Name
		if !g.wide {
			name = short(name)
		}
		row := []string{name, f.Alias, f.Origin.String(), artifacts(f, g.wide),
			mapKeys(f.Status.CurrentlyIn), mapKeys(f.Status.VerifiedIn), age(created(&f.ObjectMeta), g.now)}
		if g.wide {
			row = append(row, mapKeys(f.Status.ApprovedFor))
		}
		t.row(row...)
	}
	return t.flush()
}

func printPromotions(ctx context.Context, g *getter, items []json.RawMessage) error {
	ps, err := decodeAll[model.Promotion](items)
	if err != nil {
		return err
	}
	aliases := g.aliases(ctx)
	headers := []string{"NAME", "STAGE", "FREIGHT", "PHASE", "STEP", "MESSAGE", "AGE"}
	if g.wide {
		headers = append(headers, "FREIGHT ID", "HOLD")
	}
	t := newTable(g.w, headers...)
	for _, p := range ps {
		msg := p.Status.Message
		if h := p.Status.AutoPromotionHold; h != nil && msg == "" {
			msg = "held auto-promotion of " + p.Spec.Stage + " (caravan resume stage " + p.Spec.Stage + ")"
		}
		row := []string{p.Name, p.Spec.Stage, firstOf(aliases[p.Spec.Freight], short(p.Spec.Freight)), string(p.Status.Phase), stepCounter(p), g.clip(msg), age(created(&p.ObjectMeta), g.now)}
		if g.wide {
			hold := ""
			if h := p.Status.AutoPromotionHold; h != nil {
				hold = h.Reason
			}
			row = append(row, p.Spec.Freight, hold)
		}
		t.row(row...)
	}
	return t.flush()
}

// stepCounter is "k/n": the step that failed (or runs) of the n steps with
// tasks inflated, as the step lines of promote --wait and watch count them.
func stepCounter(p *model.Promotion) string {
	md := p.Status.StepExecutionMetadata
	n := len(md)
	if n == 0 {
		if n = len(p.Spec.Steps); n == 0 {
			return ""
		}
	}
	for i, m := range md {
		if isFailure(string(m.Status)) {
			return fmt.Sprintf("%d/%d", i+1, n)
		}
	}
	if p.Status.Phase == model.PromotionPhaseSucceeded {
		return fmt.Sprintf("%d/%d", n, n)
	}
	return fmt.Sprintf("%d/%d", min(int(p.Status.CurrentStep)+1, n), n)
}

func printPromotionTasks(_ context.Context, g *getter, items []json.RawMessage) error {
	ts, err := decodeAll[model.PromotionTask](items)
	if err != nil {
		return err
	}
	headers := []string{"NAME", "STEPS", "AGE"}
	if g.wide {
		headers = append(headers, "USES", "VARS")
	}
	t := newTable(g.w, headers...)
	for _, pt := range ts {
		row := []string{pt.Name, fmt.Sprint(len(pt.Spec.Steps)), age(created(&pt.ObjectMeta), g.now)}
		if g.wide {
			var uses, vars []string
			for _, s := range pt.Spec.Steps {
				uses = append(uses, firstOf(s.Uses, "task:"+taskName(s.Task)))
			}
			for _, v := range pt.Spec.Vars {
				vars = append(vars, v.Name)
			}
			row = append(row, strings.Join(uses, ","), strings.Join(vars, ","))
		}
		t.row(row...)
	}
	return t.flush()
}

func taskName(r *model.PromotionTaskRef) string {
	if r == nil {
		return ""
	}
	return r.Name
}

func printAnalysisTemplates(_ context.Context, g *getter, items []json.RawMessage) error {
	ts, err := decodeAll[model.AnalysisTemplate](items)
	if err != nil {
		return err
	}
	headers := []string{"NAME", "METRICS", "PROVIDERS", "AGE"}
	if g.wide {
		headers = append(headers, "ARGS")
	}
	t := newTable(g.w, headers...)
	for _, at := range ts {
		var metrics, providers, argNames []string
		for _, m := range at.Spec.Metrics {
			metrics = append(metrics, m.Name)
			for _, p := range m.Provider.Names() {
				if !slices.Contains(providers, p) {
					providers = append(providers, p)
				}
			}
		}
		for _, a := range at.Spec.Args {
			argNames = append(argNames, a.Name)
		}
		row := []string{at.Name, strings.Join(metrics, ","), strings.Join(providers, ","), age(created(&at.ObjectMeta), g.now)}
		if g.wide {
			row = append(row, strings.Join(argNames, ","))
		}
		t.row(row...)
	}
	return t.flush()
}

func printDeadLetters(_ context.Context, g *getter, items []json.RawMessage) error {
	ds, err := decodeAll[events.DeadLetter](items)
	if err != nil {
		return err
	}
	headers := []string{"ID", "TYPE", "PROJECT", "DELIVERIES", "ERROR", "AGE"}
	if g.wide {
		headers = append(headers, "CONSUMER", "SUBJECT", "REPLAYS")
	}
	t := newTable(g.w, headers...)
	for _, d := range ds {
		msg := d.Error
		if !g.wide && len(msg) > 60 {
			msg = msg[:59] + "…"
		}
		row := []string{d.ID, string(d.Type), d.Project, fmt.Sprint(d.Deliveries), msg, age(d.Time, g.now)}
		if g.wide {
			row = append(row, d.Consumer, d.Subject, fmt.Sprint(d.Replays))
		}
		t.row(row...)
	}
	return t.flush()
}
