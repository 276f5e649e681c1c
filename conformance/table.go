package conformance

import (
	"bytes"
	_ "embed"
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Field statuses of kinds.yaml.
const (
	// Acted: Caravan acts on the field as Kargo does.
	Acted = "acted"
	// StatusField: status Caravan writes (note: which service).
	StatusField = "status"
	// Unused: status Kargo writes and Caravan neither writes nor reads
	// (note: why); it decodes and is kept.
	Unused = "unused"
	// Warned: decoded and stored, not acted on; applying it answers a
	// warning naming the field (note: why).
	Warned = "warned"
	// Refused: decodes, and validation refuses it with a clear error
	// (note: why).
	Refused = "refused"
)

// Property statuses of steps.yaml. Only Acted (with a test) and
// Difference (with a reason) pass the suite.
const (
	// Difference: a deliberate difference from Kargo (note: the reason).
	Difference = "difference"
	// Differs: accepted and acted on, but not as Kargo does (note: how).
	Differs = "differs"
	// Unverified: accepted, but no test proves Caravan acts on it.
	Unverified = "unverified"
	// Ignored: accepted and not acted on.
	Ignored = "ignored"
	// Rejected: Caravan's config check refuses it today.
	Rejected = "rejected"
	// Missing: not in the table (computed by the suite, never written).
	Missing = "missing"
)

// Entry is what Caravan does with one field (and every field below it
// that has no entry of its own).
type Entry struct {
	Path   string `yaml:"path"`
	Status string `yaml:"status"`
	// Note explains; required for every status but acted and status.
	Note string `yaml:"note,omitempty"`
	// Test names a test proving the behaviour: "<dir>.<TestName>", dir
	// relative to the repository root.
	Test string `yaml:"test,omitempty"`
}

// Group is the entries of one kind or step.
type Group struct {
	Name    string  `yaml:"name"`
	Summary string  `yaml:"summary,omitempty"`
	Entries []Entry `yaml:"entries"`
}

//go:embed kinds.yaml
var kindsYAML []byte

//go:embed steps.yaml
var stepsYAML []byte

// Kinds returns the kinds table.
func Kinds() ([]Group, error) { return parseTable("kinds.yaml", kindsYAML) }

// Steps returns the steps table with the differences the promoter's step
// registry declares (model.StepCatalog) added as Difference entries, the
// registry's reason as their note: a difference is declared once, beside
// the step. A step the registry has and steps.yaml does not gets a group.
func Steps() ([]Group, error) {
	groups, err := stepsTable()
	if err != nil {
		return nil, err
	}
	return withRegistry(groups, model.StepCatalog), nil
}

// stepsTable returns steps.yaml as written.
func stepsTable() ([]Group, error) { return parseTable("steps.yaml", stepsYAML) }

// withRegistry adds the differences of the registry's steps to groups.
func withRegistry(groups []Group, catalog map[string]model.StepSchema) []Group {
	out := make([]Group, 0, len(groups))
	seen := map[string]bool{}
	for _, g := range groups {
		seen[g.Name] = true
		out = append(out, g)
	}
	for _, name := range model.StepNames() {
		if !seen[name] {
			out = append(out, Group{Name: name})
		}
	}
	for i := range out {
		schema, ok := catalog[out[i].Name]
		if !ok || len(schema.Differences) == 0 {
			continue
		}
		entries := append([]Entry(nil), out[i].Entries...)
		for path, d := range schema.Differences {
			entries = append(entries, Entry{Path: path, Status: Difference, Note: differenceNote(d)})
		}
		sort.SliceStable(entries, func(a, b int) bool { return entries[a].Path < entries[b].Path })
		out[i].Entries = entries
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// differenceNote is a registry difference as a table note.
func differenceNote(d model.StepDifference) string {
	kind := "refused when set"
	if d.Accepted {
		kind = "accepted"
	}
	return kind + ": " + d.Reason
}

var validStatus = map[string]bool{
	Acted: true, StatusField: true, Unused: true, Warned: true, Refused: true,
	Difference: true, Differs: true, Unverified: true, Ignored: true, Rejected: true,
}

func parseTable(name string, data []byte) ([]Group, error) {
	var groups []Group
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&groups); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	seen := map[string]bool{}
	for _, g := range groups {
		if seen[g.Name] {
			return nil, fmt.Errorf("%s: %s listed twice", name, g.Name)
		}
		seen[g.Name] = true
		paths := map[string]bool{}
		for _, e := range g.Entries {
			switch {
			case !validStatus[e.Status]:
				return nil, fmt.Errorf("%s: %s %s: unknown status %q", name, g.Name, e.Path, e.Status)
			case paths[e.Path]:
				return nil, fmt.Errorf("%s: %s %s listed twice", name, g.Name, e.Path)
			case e.Status != Acted && e.Status != StatusField && e.Note == "":
				return nil, fmt.Errorf("%s: %s %s: status %s needs a note saying why", name, g.Name, e.Path, e.Status)
			}
			paths[e.Path] = true
		}
	}
	return groups, nil
}

// Find returns the group named name.
func Find(groups []Group, name string) (Group, bool) {
	for _, g := range groups {
		if g.Name == name {
			return g, true
		}
	}
	return Group{}, false
}

// Covers reports whether an entry for prefix applies to path: the same
// path or one below it.
func Covers(prefix, path string) bool {
	if prefix == "" || prefix == path {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	switch path[len(prefix)] {
	case '.', '[', '{':
		return true
	}
	return false
}

// Lookup returns the most specific entry covering path.
func (g Group) Lookup(path string) (Entry, bool) {
	var best Entry
	found := false
	for _, e := range g.Entries {
		if Covers(e.Path, path) && (!found || len(e.Path) > len(best.Path)) {
			best, found = e, true
		}
	}
	return best, found
}

// Passing reports whether a step property's status passes the suite.
func Passing(e Entry) bool {
	return (e.Status == Acted && e.Test != "") || e.Status == Difference
}
