package ui

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"
)

// pageNames are the page templates; each is parsed with layout.html and
// partials.html.
var pageNames = []string{"login", "signedin", "error", "projects", "pipeline", "stage", "freight", "promotion", "warehouse", "verification", "compare", "deadletters"}

func (u *UI) funcs() template.FuncMap {
	return template.FuncMap{
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			d := u.now().Sub(t)
			if d < 0 {
				return "in " + durationText(-d)
			}
			if d < 5*time.Second {
				return "just now"
			}
			return durationText(d) + " ago"
		},
		"dur":   durationText,
		"short": shortSHA,
		"iso": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format(time.RFC3339)
		},
		"clock": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"mtime": func(t *time.Time) time.Time {
			if t == nil {
				return time.Time{}
			}
			return *t
		},
		"ktime": func(t any) time.Time {
			switch v := t.(type) {
			case time.Time:
				return v
			case *time.Time:
				if v != nil {
					return *v
				}
			}
			return time.Time{}
		},
		"status":  phaseClass,
		"path":    url.PathEscape,
		"query":   url.QueryEscape,
		"join":    strings.Join,
		"lower":   strings.ToLower,
		"first":   firstLine,
		"add":     func(a, b int) int { return a + b },
		"px":      func(f float64) string { return fmt.Sprintf("%.0fpx", f) },
		"num":     func(f float64) string { return fmt.Sprintf("%.1f", f) },
		"patch":   patchLines,
		"webURL":  webURL,
		"commit":  commitURL,
		"now":     u.now,
		"has":     func(m map[string]bool, k string) bool { return m[k] },
		"trimPfx": strings.TrimPrefix,
		"plural": func(n int, one, many string) string {
			if n == 1 {
				return fmt.Sprintf("%d %s", n, one)
			}
			return fmt.Sprintf("%d %s", n, many)
		},
	}
}

func (u *UI) parseTemplates() (map[string]*template.Template, error) {
	common, err := template.New("").Funcs(u.funcs()).ParseFS(templateFS, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, fmt.Errorf("ui templates: %w", err)
	}
	out := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := common.Clone()
		if err != nil {
			return nil, err
		}
		if _, err := t.ParseFS(templateFS, "templates/"+name+".html"); err != nil {
			return nil, fmt.Errorf("ui template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}
