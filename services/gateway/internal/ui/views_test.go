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
