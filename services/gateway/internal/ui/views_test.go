package ui

import (
	"strings"
	"testing"
	"time"
)

func TestStageColor(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"red": "#c62828", "Violet": "#6a1b9a", "#abc": "#abc", "#a1b2c3": "#a1b2c3", "url(x)": "", "": "", "red;background:x": ""} {
		if got := stageColor(map[string]string{annotationColor: in}); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestCommitURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ repo, want string }{
		{"https://github.com/acme/app.git", "https://github.com/acme/app/commit/abc"},
		{"git@github.com:acme/app.git", "https://github.com/acme/app/commit/abc"},
		{"https://gitlab.com/acme/app", "https://gitlab.com/acme/app/-/commit/abc"},
		{"https://bitbucket.org/acme/app.git", "https://bitbucket.org/acme/app/commits/abc"},
		{"http://127.0.0.1:4281/deploy.git", ""},
		{"file:///tmp/x", ""},
	}
	for _, tt := range tests {
		if got := commitURL(tt.repo, "abc"); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.repo, got, tt.want)
		}
	}
}

func TestDurationText(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{45 * time.Second: "45s", 12 * time.Minute: "12m", 3*time.Hour + 5*time.Minute: "3h 5m", 2 * time.Hour: "2h", 52 * time.Hour: "2d 4h", -90 * time.Second: "1m"} {
		if got := durationText(d); got != want {
			t.Errorf("%s: %q, want %q", d, got, want)
		}
	}
}

func TestSafeNext(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"/projects/demo": "/projects/demo", "//evil.example": "/projects", "https://evil.example": "/projects", "/\\evil": "/projects", "": "/projects", "/a\r\nSet-Cookie: x": "/projects"} {
		if got := safeNext(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestChartOf(t *testing.T) {
	t.Parallel()
	m := metricResult{Name: "latency", Phase: "Successful"}
	for _, v := range []string{"10", "30", "20"} {
		m.Measurements = append(m.Measurements, struct {
			Phase      string    `json:"phase"`
			Value      string    `json:"value"`
			Message    string    `json:"message"`
			StartedAt  time.Time `json:"startedAt"`
			FinishedAt time.Time `json:"finishedAt"`
		}{Phase: "Successful", Value: v})
	}
	c := chartOf(m)
	if !c.Numeric || c.Min != "10" || c.Max != "30" || len(c.Points) != 3 || !strings.HasPrefix(c.Path, "M8.0,72.0 L") {
		t.Errorf("numeric chart: %+v", c)
	}
	if c.Points[1].Y >= c.Points[2].Y || c.Points[2].Y >= c.Points[0].Y {
		t.Errorf("higher values are drawn higher: %+v", c.Points)
	}
	m.Measurements[1].Value = `{"status":"ok"}`
	if c := chartOf(m); c.Numeric || c.Path == "" || c.Min != "" {
		t.Errorf("non-numeric chart: %+v", c)
	}
}

func TestPatchLines(t *testing.T) {
	t.Parallel()
	got := patchLines("diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n ctx\n")
	var kinds []string
	for _, l := range got {
		kinds = append(kinds, l.Kind)
	}
	if strings.Join(kinds, " ") != "meta meta meta hunk del add ctx" {
		t.Errorf("kinds: %v", kinds)
	}
}

// TestTemplatesParse renders every page's layout with its zero data: each
// parses, and a page without a session shows no actions or CSRF token.
func TestTemplatesParse(t *testing.T) {
	t.Parallel()
	u := &UI{now: time.Now}
	pages, err := u.parseTemplates()
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) != len(pageNames) {
		t.Fatalf("%d pages", len(pages))
	}
	var b strings.Builder
	if err := pages["login"].ExecuteTemplate(&b, "layout", loginData{base: base{Title: "Sign in", Static: map[string]string{}}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `name="token"`) || strings.Contains(b.String(), "csrf-token") {
		t.Errorf("login page:\n%s", b.String())
	}
	b.Reset()
	c := cardView{Project: "p", Name: "prod", ControlFlow: true, Color: "#123456"}
	if err := pages["pipeline"].ExecuteTemplate(&b, "card", c); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`id="card-prod"`, "gate", "--accent: #123456", "No freight yet"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("card lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "data-action") {
		t.Error("a card without the promoter role shows actions")
	}
}

// TestGraphHTML writes a graph's nodes as the template did: positioned,
// each with its card, escaped; a lazy node with a placeholder that keeps
// the card's id, name and link; and the edges' paths.
func TestGraphHTML(t *testing.T) {
	t.Parallel()
	u := &UI{now: time.Now}
	var err error
	if u.pages, err = u.parseTemplates(); err != nil {
		t.Fatal(err)
	}
	g := graphView{
		Nodes: []nodeView{
			{ID: "wh/app", Kind: "warehouse", X: 0, Y: 8, W: 224, H: 136, Warehouse: &warehouseCard{Project: "p", Name: "app", CanRefresh: true}},
			{ID: "st/dev", Kind: "stage", X: 296, Y: 8, W: 264, H: 184, Card: `<article id="card-dev"></article>`, Hash: "h1", Stage: "dev", Project: "p"},
			{ID: "st/a<b", Kind: "gate", X: 3000.4, Y: 20, W: 184, H: 92, Card: "<article>full</article>", Hash: "h2", Lazy: true, Stage: "a<b", Project: "p"},
		},
		Edges: []edgeView{{From: "wh/app", To: "st/dev", Path: "M 224 76 C 260 76 260 100 296 100"}},
	}
	if err := u.graphHTML(&g); err != nil {
		t.Fatal(err)
	}
	html := string(g.HTML)
	for _, want := range []string{
		`<div class="node k-warehouse" data-node="wh/app" style="left:0px;top:8px;width:224px;height:136px">`,
		`data-action="refresh" data-warehouse="app"`,
		`<div class="node k-stage" data-node="st/dev" data-hash="h1" style="left:296px;top:8px;width:264px;height:184px">`,
		`<article id="card-dev"></article>`,
		`<div class="node k-gate" data-node="st/a&lt;b" data-lazy="" data-hash="h2" style="left:3000px;`,
		`<article class="card lazy gate" id="card-a&lt;b" data-stage="a&lt;b" data-live="stage:a&lt;b" aria-busy="true">`,
		`<a href="/projects/p/stages/a%3Cb">a&lt;b</a>`,
	} {
		if !strings.Contains(html, want) {
			t.Errorf("graph lacks %s:\n%s", want, html)
		}
	}
	if strings.Contains(html, "full") {
		t.Error("a lazy node carries its card")
	}
	if want := `<path d="M 224 76 C 260 76 260 100 296 100" data-from="wh/app" data-to="st/dev" marker-end="url(#arrow)"/>`; string(g.EdgesHTML) != want {
		t.Errorf("edges: %s", g.EdgesHTML)
	}
}
