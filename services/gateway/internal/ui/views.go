package ui

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Kargo's stage colour annotation.
const annotationColor = "kargo.akuity.io/color"

var hexColor = regexp.MustCompile(`^#[0-9a-fA-F]{3,8}$`)

// kargoColors are the colour names Kargo's UI offers, as CSS colours that
// keep text readable on the card's light tint.
var kargoColors = map[string]string{
	"red": "#c62828", "salmon": "#e57373", "orange": "#ef6c00", "amber": "#ff8f00", "yellow": "#f9a825",
	"lime": "#9e9d24", "green": "#2e7d32", "teal": "#00796b", "cyan": "#00838f", "sky": "#0277bd",
	"blue": "#1565c0", "indigo": "#3949ab", "violet": "#6a1b9a", "purple": "#7b1fa2", "pink": "#ad1457",
	"fuchsia": "#c2185b", "rose": "#d81b60", "gray": "#546e7a", "grey": "#546e7a", "black": "#212121",
}

// stageColor is the card accent from the kargo.akuity.io/color annotation:
// a Kargo colour name or a hex colour; anything else is ignored.
func stageColor(annotations map[string]string) string {
	c := strings.ToLower(strings.TrimSpace(annotations[annotationColor]))
	if v, ok := kargoColors[c]; ok {
		return v
	}
	if hexColor.MatchString(c) {
		return c
	}
	return ""
}

// artifactsView is a freight's artifacts as short labels.
type artifactsView struct {
	Images  []artifact
	Commits []artifact
	Charts  []artifact
}

type artifact struct {
	// Label is short (app:1.0.3, a1b2c3d, chart 1.2.0); Title is full.
	Label, Title, URL string
}

func shortRepo(repo string) string {
	repo = strings.TrimSuffix(repo, ".git")
	if i := strings.LastIndex(repo, "/"); i >= 0 {
		return repo[i+1:]
	}
	return repo
}

func shortSHA(id string) string {
	if len(id) > 7 {
		return id[:7]
	}
	return id
}

func artifactsOf(images []model.Image, commits []model.GitCommit, charts []model.Chart) artifactsView {
	var a artifactsView
	for _, i := range images {
		ref := i.Tag
		if ref == "" {
			ref = shortDigest(i.Digest)
		}
		a.Images = append(a.Images, artifact{Label: shortRepo(i.RepoURL) + ":" + ref, Title: i.RepoURL + ":" + i.Tag + " " + i.Digest})
	}
	for _, c := range commits {
		label := shortSHA(c.ID)
		if c.Tag != "" {
			label = c.Tag + " " + label
		}
		title := c.RepoURL + " " + c.ID
		if c.Message != "" {
			title += " — " + firstLine(c.Message)
		}
		a.Commits = append(a.Commits, artifact{Label: shortRepo(c.RepoURL) + "@" + label, Title: title, URL: commitURL(c.RepoURL, c.ID)})
	}
	for _, c := range charts {
		name := c.Name
		if name == "" {
			name = shortRepo(c.RepoURL)
		}
		a.Charts = append(a.Charts, artifact{Label: name + " " + c.Version, Title: c.RepoURL + " " + c.Name + " " + c.Version})
	}
	return a
}

func shortDigest(d string) string {
	_, hex, _ := strings.Cut(d, ":")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return "@" + hex
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// webURL is the browsable URL of a git repository on a known forge, or "".
func webURL(repo string) string {
	u := strings.TrimSuffix(strings.TrimSpace(repo), ".git")
	if strings.HasPrefix(u, "git@") {
		host, p, ok := strings.Cut(strings.TrimPrefix(u, "git@"), ":")
		if !ok {
			return ""
		}
		u = "https://" + host + "/" + p
	}
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") {
		return ""
	}
	host := strings.ToLower(pu.Hostname())
	switch {
	case host == "github.com", host == "gitlab.com", host == "bitbucket.org", host == "codeberg.org",
		strings.HasPrefix(host, "github."), strings.HasPrefix(host, "gitlab."), strings.HasPrefix(host, "gitea."):
		return "https://" + pu.Host + strings.TrimSuffix(pu.Path, "/")
	}
	return ""
}

// commitURL links a commit on a known forge, or "".
func commitURL(repo, id string) string {
	w := webURL(repo)
	if w == "" || id == "" {
		return ""
	}
	switch {
	case strings.Contains(w, "bitbucket.org"):
		return w + "/commits/" + id
	case strings.Contains(w, "gitlab"):
		return w + "/-/commit/" + id
	}
	return w + "/commit/" + id
}

// freightView is a piece of freight as the UI shows it.
type freightView struct {
	Name, Alias, Origin string
	Created             time.Time
	artifactsView
}

func (f freightView) Short() string { return shortSHA(f.Name) }

// Label is the alias, or the short name.
func (f freightView) Label() string {
	if f.Alias != "" {
		return f.Alias
	}
	return f.Short()
}

func viewFreight(f *model.Freight) freightView {
	v := freightView{Name: f.Name, Alias: f.Alias, Origin: f.Origin.Name, artifactsView: artifactsOf(f.Images, f.Commits, f.Charts)}
	if f.CreationTimestamp != nil {
		v.Created = f.CreationTimestamp.Time
	}
	return v
}

func viewFreightRef(r model.FreightReference, aliases map[string]string) freightView {
	return freightView{Name: r.Name, Alias: aliases[r.Name], Origin: r.Origin.Name, artifactsView: artifactsOf(r.Images, r.Commits, r.Charts)}
}

// durationText is a duration as a person reads it: 45s, 12m, 3h 5m, 2d 4h.
func durationText(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		h := int(d.Hours())
		if m := int(d.Minutes()) % 60; m != 0 {
			return fmt.Sprintf("%dh %dm", h, m)
		}
		return fmt.Sprintf("%dh", h)
	}
	days := int(d.Hours()) / 24
	if h := int(d.Hours()) % 24; h != 0 {
		return fmt.Sprintf("%dd %dh", days, h)
	}
	return fmt.Sprintf("%dd", days)
}

// sortFreightNewest sorts freight newest first, in the order of
// model.Newer (by creation time, then by name descending), as the API
// lists them and auto-promotion picks them.
func sortFreightNewest(fs []model.Freight) {
	slices.SortStableFunc(fs, func(a, b model.Freight) int {
		switch {
		case model.Newer(&a, &b):
			return -1
		case model.Newer(&b, &a):
			return 1
		}
		return 0
	})
}

// phaseClass maps a phase or health to a status class of the stylesheet:
// ok, bad, busy, warn or idle.
func phaseClass(s string) string {
	switch s {
	case "Healthy", "Succeeded", "Successful", "Steady", "True":
		return "ok"
	case "Unhealthy", "Failed", "Errored", "Error", "False":
		return "bad"
	case "Running", "Pending", "Promoting", "Verifying", "Progressing":
		return "busy"
	case "Aborted", "Inconclusive", "Unknown":
		return "warn"
	}
	return "idle"
}
