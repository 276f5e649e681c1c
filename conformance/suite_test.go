//go:build conformance

package conformance

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

// The suite reads Kargo's schemas from KARGO_SPEC; make conformance sets
// it (default ../shared/kargo-spec from the repository root). Without
// them it fails: it never skips.
func loadSpec(t *testing.T) *Spec {
	t.Helper()
	s, err := Load(os.Getenv(EnvSpec))
	if err != nil {
		t.Fatalf("%v\nrun make conformance (KARGO_SPEC=<dir of Kargo's crds/ and step-schemas/> make conformance)", err)
	}
	return s
}

// sampleHint gives the strings Caravan types as durations a duration.
func sampleHint(path string, s Schema) (any, bool) {
	if typeOf(s) != "string" {
		return nil, false
	}
	last := path[strings.LastIndexAny(path, ".]}")+1:]
	switch last {
	case "timeout", "interval", "longestSoak", "requiredSoakTime":
		return "5m0s", true
	}
	return nil, false
}

// sampleObject returns the fullest object of kind, as JSON.
func sampleObject(s *Spec, kind string) map[string]any {
	w := walker{files: s.files}
	obj := w.Sample(s.ObjectSchema(kind), "", "", sampleHint).(map[string]any)
	obj["apiVersion"] = model.KargoAPIVersion
	obj["kind"] = kind
	meta := map[string]any{"name": "sample", "namespace": "sample", "labels": map[string]any{"a": "b"}, "annotations": map[string]any{"c": "d"}}
	if s.CRDs[kind].Cluster {
		delete(meta, "namespace")
	}
	if kind == model.KindClusterConfig {
		meta["name"] = model.ClusterConfigName
	}
	obj["metadata"] = meta
	return obj
}

// schemaLeaves returns the leaf paths of kind's schema but apiVersion
// and kind.
func schemaLeaves(s *Spec, kind string) []string {
	w := walker{files: s.files}
	var out []string
	for _, p := range w.Paths(s.ObjectSchema(kind), "", true) {
		if p != "apiVersion" && p != "kind" {
			out = append(out, p)
		}
	}
	return out
}

// TestKindsDecode: the fullest document of every CRD decodes in the strict
// decoder and comes back unchanged (nothing dropped, nothing altered).
func TestKindsDecode(t *testing.T) {
	s := loadSpec(t)
	for _, kind := range s.Kinds() {
		t.Run(kind, func(t *testing.T) {
			sample := sampleObject(s, kind)
			data, err := json.Marshal(sample)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := model.Decode(data)
			if err != nil {
				t.Fatalf("the fullest %s does not decode:\n%v", kind, err)
			}
			if len(dec.Documents) != 1 {
				t.Fatalf("%d documents", len(dec.Documents))
			}
			out, err := json.Marshal(dec.Documents[0].Object)
			if err != nil {
				t.Fatal(err)
			}
			var want, got any
			_ = json.Unmarshal(data, &want)
			_ = json.Unmarshal(out, &got)
			if diff := Compare(want, got, ""); len(diff) > 0 {
				t.Errorf("%s loses or changes fields in a round trip:\n  %s", kind, strings.Join(diff, "\n  "))
			}
		})
	}
}

// TestKindsTable: kinds.yaml covers every field of every CRD, has no entry
// that covers nothing, names only tests that exist; every kind decodes in
// Caravan.
func TestKindsTable(t *testing.T) {
	s := loadSpec(t)
	groups, err := Kinds()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if _, ok := s.CRDs[g.Name]; !ok {
			t.Errorf("kinds.yaml lists %s, which Kargo's CRDs do not define", g.Name)
		}
	}
	for _, kind := range s.Kinds() {
		t.Run(kind, func(t *testing.T) {
			if _, ok := model.NewObject(model.KargoAPIVersion, kind); !ok {
				t.Errorf("Caravan does not know kind %s", kind)
			}
			g, ok := Find(groups, kind)
			if !ok {
				t.Fatalf("kinds.yaml has no entry for %s", kind)
			}
			leaves := schemaLeaves(s, kind)
			var uncovered []string
			for _, p := range leaves {
				if _, ok := g.Lookup(p); !ok {
					uncovered = append(uncovered, p)
				}
			}
			if len(uncovered) > 0 {
				t.Errorf("kinds.yaml says nothing of %d fields of %s:\n  %s", len(uncovered), kind, strings.Join(uncovered, "\n  "))
			}
			checkEntries(t, "kinds.yaml "+kind, g, leaves)
		})
	}
}

// TestKindsWarnings: every field kinds.yaml calls warned answers a warning
// naming it, and no other field of the fullest document warns.
func TestKindsWarnings(t *testing.T) {
	s := loadSpec(t)
	groups, err := Kinds()
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range s.Kinds() {
		t.Run(kind, func(t *testing.T) {
			g, _ := Find(groups, kind)
			data, _ := json.Marshal(sampleObject(s, kind))
			dec, err := model.Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			warned := map[string]bool{}
			for _, w := range dec.Warnings {
				p := Generic(w.Field)
				warned[p] = true
				if e, ok := g.Lookup(p); !ok || e.Status != Warned || e.Path != p {
					t.Errorf("%s warns about %s (%s), which kinds.yaml does not list as warned", kind, p, w.Message)
				}
			}
			for _, e := range g.Entries {
				if e.Status == Warned && !warned[e.Path] {
					t.Errorf("kinds.yaml calls %s.%s warned, but applying it answers no warning", kind, e.Path)
				}
			}
		})
	}
}

// TestStepsTable checks every property of every Kargo step schema against
// the promoter's step registry (model.StepCatalog, generated from it) and
// steps.yaml: the registry takes the property (its config declares it) or
// declares it a difference, with a reason; a property it takes is acted
// on with a test that exists. The fullest config Kargo's schema allows
// passes the registry's config check, but for the differences it refuses.
// Properties the registry takes beyond Kargo's schema are Caravan's own:
// docs/steps.md names them.
func TestStepsTable(t *testing.T) {
	s := loadSpec(t)
	table, err := stepsTable()
	if err != nil {
		t.Fatal(err)
	}
	groups, err := Steps()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range table {
		if _, ok := s.Steps[g.Name]; !ok {
			t.Errorf("steps.yaml lists %s, which has no schema in Kargo", g.Name)
		}
		for _, e := range g.Entries {
			if e.Status == Difference {
				t.Errorf("steps.yaml %s.%s: a difference is declared in the step registry (services/promoter/internal/steps/builtins.go), not here", g.Name, e.Path)
			}
		}
	}
	for _, name := range model.StepNames() {
		if _, ok := s.Steps[name]; !ok {
			t.Errorf("the step registry has %s, which has no schema in Kargo", name)
		}
	}
	stepsDoc, err := os.ReadFile(filepath.Join("..", "docs", "steps.md"))
	if err != nil {
		t.Fatal(err)
	}
	w := walker{files: s.files}
	var report []string
	for _, step := range s.StepNames() {
		file := step + "-config.json"
		schema, known := model.StepCatalog[step]
		if !known {
			report = append(report, step+": not in the step registry")
			continue
		}
		g, _ := Find(groups, step)
		paths := w.Paths(s.Steps[step], file, false)
		inKargo := map[string]bool{}
		var failing []string
		for _, p := range paths {
			inKargo[p] = true
			_, field := schema.Fields[p]
			diff := differenceAt(schema, p)
			e, ok := g.Lookup(p)
			switch {
			case schema.Open:
				// A free-form config: the registry takes anything.
			case !field && diff == "":
				failing = append(failing, p+": the registry neither takes it nor declares it a difference")
			case field && diff != "":
				failing = append(failing, fmt.Sprintf("%s: the registry takes it and declares it a difference (%s)", p, diff))
			case diff != "":
				if ok && e.Status != Difference && e.Path == p {
					failing = append(failing, fmt.Sprintf("%s: steps.yaml says %s, the registry declares a difference", p, e.Status))
				}
			case !ok:
				failing = append(failing, fmt.Sprintf("%s: %s", p, Missing))
			case e.Status == Difference:
				failing = append(failing, p+": the registry takes it, but it is under the difference "+e.Path)
			case e.Status == Acted && e.Test == "":
				failing = append(failing, p+": acted, but no test is named")
			case !Passing(e) && e.Path == p:
				failing = append(failing, fmt.Sprintf("%s: %s (%s)", p, e.Status, e.Note))
			}
		}
		for d := range schema.Differences {
			if !inKargo[d] {
				failing = append(failing, d+": the registry declares a difference for a property Kargo's schema does not have")
			}
		}
		for _, f := range additions(schema, inKargo) {
			key := f[strings.LastIndexAny(f, ".]}")+1:]
			if !strings.Contains(string(stepsDoc), "`"+key+"`") {
				failing = append(failing, fmt.Sprintf("%s: Caravan's own property (not in Kargo's schema), which docs/steps.md does not name", f))
			}
		}
		checkEntries(t, "steps.yaml "+step, g, paths)
		// The fullest config Kargo allows passes the registry's check, but
		// for the differences it refuses (repository URLs are checked with
		// the samples' placeholder values, which are no URLs).
		sample, _ := w.Sample(s.Steps[step], file, "", nil).(map[string]any)
		for _, is := range model.CheckStep(step, sample) {
			switch is.Kind {
			case model.IssueURL:
			case model.IssueDifference:
				if d := differenceAt(schema, Generic(strings.TrimPrefix(is.Field, "config."))); d == "" || schema.Differences[d].Accepted {
					failing = append(failing, fmt.Sprintf("%s: refused as a difference the registry does not declare refused: %s", is.Field, is.Message))
				}
			default:
				failing = append(failing, fmt.Sprintf("%s: the config check refuses Kargo's fullest config: %s", is.Field, is.Message))
			}
		}
		if len(failing) > 0 {
			report = append(report, fmt.Sprintf("%s (%d of %d properties):\n    %s", step, len(failing), len(paths), strings.Join(failing, "\n    ")))
		}
	}
	if len(report) > 0 {
		t.Errorf("step properties neither acted on with a test nor a difference declared in the registry:\n  %s", strings.Join(report, "\n  "))
	}
}

// differenceAt returns the registry difference covering path, "" when
// none does.
func differenceAt(schema model.StepSchema, path string) string {
	best := ""
	for d := range schema.Differences {
		if Covers(d, path) && len(d) > len(best) {
			best = d
		}
	}
	return best
}

// additions returns the topmost properties the registry takes that
// Kargo's schema does not have (items of lists and maps aside).
func additions(schema model.StepSchema, inKargo map[string]bool) []string {
	var out []string
	for f := range schema.Fields {
		if inKargo[f] || strings.HasSuffix(f, "[]") || strings.HasSuffix(f, "{}") {
			continue
		}
		parent := f[:max(strings.LastIndexAny(f, "."), 0)]
		parent = strings.TrimSuffix(strings.TrimSuffix(parent, "[]"), "{}")
		if parent != "" && !inKargo[parent] {
			continue // below an addition
		}
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// checkEntries fails on entries that cover no path of the schema and on
// tests that do not exist.
func checkEntries(t *testing.T, where string, g Group, paths []string) {
	t.Helper()
	for _, e := range g.Entries {
		used := false
		for _, p := range paths {
			if Covers(e.Path, p) {
				used = true
				break
			}
		}
		if !used {
			t.Errorf("%s: entry %s covers no field of the schema", where, e.Path)
		}
		if e.Test != "" {
			if err := testExists(e.Test); err != nil {
				t.Errorf("%s: %s: %v", where, e.Path, err)
			}
		}
	}
}

var testFunc = regexp.MustCompile(`^(.+)\.(Test\w+)$`)

// testExists checks that "<dir>.<TestName>" names a test function in a
// _test.go file of dir (from the repository root).
func testExists(ref string) error {
	m := testFunc.FindStringSubmatch(ref)
	if m == nil {
		return fmt.Errorf("test %q: want <dir>.<TestName>", ref)
	}
	files, err := filepath.Glob(filepath.Join("..", m[1], "*_test.go"))
	if err != nil {
		return err
	}
	decl := regexp.MustCompile(`(?m)^func ` + m[2] + `\(t \*testing\.T\)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if decl.Match(b) {
			return nil
		}
	}
	return errors.New("test " + ref + " does not exist")
}

// TestLoadFailsWithoutSpec: a KARGO_SPEC that points nowhere is an error.
func TestLoadFailsWithoutSpec(t *testing.T) {
	for _, dir := range []string{"", t.TempDir(), filepath.Join(t.TempDir(), "absent")} {
		if _, err := Load(dir); !errors.Is(err, ErrNoSpec) {
			t.Errorf("Load(%q) = %v, want ErrNoSpec", dir, err)
		}
	}
}
