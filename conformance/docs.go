package conformance

import (
	"bytes"
	"fmt"
	"strings"
)

// KargoCommit is the commit of Kargo whose schemas the tables were checked
// against (kargo-spec's README names it).
const KargoCommit = "1c764767ae03bad063531fb443ee2485a972c669"

var statusText = map[string]string{
	Acted:       "acted on",
	StatusField: "status (written)",
	Unused:      "kept, unused",
	Warned:      "stored, **warns**",
	Refused:     "**refused**",
	Difference:  "difference",
	Differs:     "**differs**",
	Unverified:  "**unverified**",
	Ignored:     "**ignored**",
	Rejected:    "**rejected**",
}

// Render returns docs/kargo-compatibility.md for the tables.
func Render(kinds, steps []Group) []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Kargo compatibility\n\n")
	p("<!-- Generated from conformance/kinds.yaml and conformance/steps.yaml by `make docs`; do not edit. -->\n\n")
	p("What Caravan does with every field of Kargo's kinds and every property of its built-in steps' configs, ")
	p("checked against the CRDs and step schemas Kargo publishes (commit `%s`) by the conformance suite: ", KargoCommit[:12])
	p("`make conformance` reads them from `KARGO_SPEC` (default `../shared/kargo-spec` from the repository root) and fails, not skips, without them.\n\n")
	p("The suite checks that every field of every CRD decodes in Caravan's strict decoder and survives a round trip, ")
	p("that these tables cover every field and property of the schemas, that every field marked *stored, warns* answers a warning naming it when applied, ")
	p("and that every test named below exists.\n\n")
	p("An entry covers its path and everything below it that has no entry of its own. ")
	p("Paths join fields with `.`; `[]` stands for the items of a list and `{}` for the values of a map.\n\n")
	p("| Status | Meaning |\n|---|---|\n")
	p("| acted on | Caravan acts on it as Kargo does |\n")
	p("| status (written) | status a Caravan service writes |\n")
	p("| kept, unused | decodes and is kept; nothing in Caravan needs it (the note says why) |\n")
	p("| stored, **warns** | stored, not acted on; applying it answers a warning naming the field |\n")
	p("| **refused** | decodes; validation refuses it with an error naming the field |\n")
	p("| difference | a deliberate difference from Kargo (the note gives the reason) |\n")
	p("| **differs** | acted on, but not as Kargo does — to be fixed |\n")
	p("| **unverified** | accepted, but no test proves Caravan acts on it — to be fixed |\n")
	p("| **ignored** | accepted and not acted on — to be fixed |\n")
	p("| **rejected** | Caravan's step config check refuses it — to be fixed |\n\n")

	p("## Kinds\n\n")
	for _, g := range kinds {
		p("### %s\n\n", g.Name)
		if g.Summary != "" {
			p("%s\n\n", g.Summary)
		}
		p("| Field | Caravan | Notes |\n|---|---|---|\n")
		for _, e := range g.Entries {
			p("| `%s` | %s | %s |\n", e.Path, statusText[e.Status], notes(e))
		}
		p("\n")
	}

	p("## Steps\n\n")
	p("Every property of every step schema is checked against the promoter's step registry ")
	p("(`services/promoter/internal/steps/builtins.go`, see [steps.md](steps.md)): the step's config takes it, ")
	p("and a test that runs the step with it set is named, or the registry declares it a difference with its reason ")
	p("(*refused when set*, or *accepted* when the outcome is the same). ")
	p("The fullest config Kargo's schema allows passes the registry's config check but for the refused differences, ")
	p("and the properties Caravan adds are named in [steps.md](steps.md).\n\n")
	p("| Step | Passing | To fix |\n|---|---|---|\n")
	for _, g := range steps {
		pass, fix := 0, 0
		for _, e := range g.Entries {
			if Passing(e) {
				pass++
			} else {
				fix++
			}
		}
		p("| [`%s`](#%s) | %d | %d |\n", g.Name, g.Name, pass, fix)
	}
	p("\n")
	for _, g := range steps {
		p("### %s\n\n", g.Name)
		if len(g.Entries) == 0 {
			p("The config has no properties.\n\n")
			continue
		}
		p("| Property | Caravan | Test or reason |\n|---|---|---|\n")
		for _, e := range g.Entries {
			status := statusText[e.Status]
			if e.Status == Acted && e.Test == "" {
				status = statusText[Unverified]
			}
			p("| `%s` | %s | %s |\n", e.Path, status, notes(e))
		}
		p("\n")
	}
	return b.Bytes()
}

func notes(e Entry) string {
	var parts []string
	if e.Note != "" {
		parts = append(parts, strings.ReplaceAll(e.Note, "|", `\|`))
	}
	if e.Test != "" {
		parts = append(parts, "test: `"+e.Test+"`")
	}
	return strings.Join(parts, "; ")
}
