//go:build conformance

package conformance

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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

// TestStepsTable: steps.yaml covers every property of every step schema,
// each acted on with a test that exists or a documented difference; the
// table agrees with Caravan's step config check.
func TestStepsTable(t *testing.T) {
	s := loadSpec(t)
	groups, err := Steps()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if _, ok := s.Steps[g.Name]; !ok {
			t.Errorf("steps.yaml lists %s, which has no schema in Kargo", g.Name)
		}
	}
	w := walker{files: s.files}
	var report []string
	for _, step := range s.StepNames() {
		file := step + "-config.json"
		g, _ := Find(groups, step)
		paths := w.Paths(s.Steps[step], file, false)
		var failing []string
		for _, p := range paths {
			e, ok := g.Lookup(p)
			switch {
			case !ok:
				failing = append(failing, fmt.Sprintf("%s: %s", p, Missing))
			case e.Status == Acted && e.Test == "":
				failing = append(failing, fmt.Sprintf("%s: acted, but no test is named", p))
			case !Passing(e) && e.Path == p:
				failing = append(failing, fmt.Sprintf("%s: %s (%s)", p, e.Status, e.Note))
			}
		}
		checkEntries(t, "steps.yaml "+step, g, paths)
		// The table must agree with what the config check accepts today.
		sample, _ := w.Sample(s.Steps[step], file, "", nil).(map[string]any)
		refused := map[string]string{}
		unknownStep := ""
		for _, is := range model.CheckStep(step, sample) {
			switch {
			case is.Field == "uses":
				unknownStep = is.Message
			case strings.HasPrefix(is.Message, "unknown field"):
				refused[strings.TrimPrefix(is.Field, "config.")] = is.Message
			}
		}
		for _, p := range paths {
			if strings.ContainsAny(p, ".[{") {
				continue
			}
			e, _ := g.Lookup(p)
			_, isRefused := refused[p]
			isRefused = isRefused || unknownStep != ""
			switch {
			case isRefused && e.Status != Rejected:
				t.Errorf("steps.yaml %s.%s says %s, but the config check refuses it: mark it rejected or make the check accept it", step, p, e.Status)
			case !isRefused && e.Status == Rejected && e.Path == p:
				t.Errorf("steps.yaml %s.%s says rejected, but the config check accepts it now: update the table", step, p)
			}
		}
		if len(failing) > 0 {
			report = append(report, fmt.Sprintf("%s (%d of %d properties):\n    %s", step, len(failing), len(paths), strings.Join(failing, "\n    ")))
		}
	}
	if len(report) > 0 {
		t.Errorf("step properties neither acted on with a test nor a documented difference:\n  %s", strings.Join(report, "\n  "))
	}
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
