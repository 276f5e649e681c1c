// Package conformance checks Caravan against Kargo's published schemas:
// the CustomResourceDefinitions of kargo.akuity.io/v1alpha1, the JSON
// Schemas of the built-in promotion steps' configs and of Warehouse
// subscriptions. The schemas stay outside the repository (KARGO_SPEC,
// default ../shared/kargo-spec from the repository root); this package
// reads them.
//
// Two tables in this package say what Caravan does with every field of
// every kind (kinds.yaml) and every property of every step config
// (steps.yaml). The suite (build tag conformance, make conformance) checks
// that the tables cover the schemas, that every field of every CRD
// decodes and survives a round trip, that every field the table calls
// warned warns on apply, and that every step property is acted on with a
// test to prove it or is a documented difference. docs/kargo-compatibility.md
// is rendered from the tables (make docs).
package conformance

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Schema is one JSON Schema or OpenAPI v3 schema node, as decoded.
type Schema = map[string]any

// CRD is one CustomResourceDefinition: its kind, scope and the OpenAPI
// schema of its storage version.
type CRD struct {
	Kind    string
	Cluster bool
	Schema  Schema
}

// Spec is Kargo's published schemas.
type Spec struct {
	Dir string
	// CRDs by kind.
	CRDs map[string]CRD
	// Steps are the step config schemas by step name.
	Steps map[string]Schema
	// Subscriptions are the Warehouse subscription schemas by type (git,
	// image, chart).
	Subscriptions map[string]Schema
	// files are every step schema file by file name, for $ref.
	files map[string]Schema
}

// EnvSpec names the environment variable holding the schemas' directory.
const EnvSpec = "KARGO_SPEC"

// ErrNoSpec means the directory holds no Kargo schemas.
var ErrNoSpec = errors.New("no Kargo schemas")

// Load reads the schemas below dir (crds/, step-schemas/,
// subscription-schemas/).
func Load(dir string) (*Spec, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: set %s to the directory of Kargo's published schemas", ErrNoSpec, EnvSpec)
	}
	if fi, err := os.Stat(filepath.Join(dir, "crds")); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w in %s (%s): it needs crds/, step-schemas/ and subscription-schemas/", ErrNoSpec, dir, EnvSpec)
	}
	s := &Spec{Dir: dir, CRDs: map[string]CRD{}, Steps: map[string]Schema{}, Subscriptions: map[string]Schema{}, files: map[string]Schema{}}
	crds, err := filepath.Glob(filepath.Join(dir, "crds", "*.yaml"))
	if err != nil {
		return nil, err
	}
	for _, f := range crds {
		crd, err := loadCRD(f)
		if err != nil {
			return nil, err
		}
		s.CRDs[crd.Kind] = crd
	}
	steps, err := filepath.Glob(filepath.Join(dir, "step-schemas", "*.json"))
	if err != nil {
		return nil, err
	}
	for _, f := range steps {
		sch, err := loadJSON(f)
		if err != nil {
			return nil, err
		}
		base := filepath.Base(f)
		s.files[base] = sch
		if name, ok := strings.CutSuffix(base, "-config.json"); ok {
			s.Steps[name] = sch
		}
	}
	subs, err := filepath.Glob(filepath.Join(dir, "subscription-schemas", "*.json"))
	if err != nil {
		return nil, err
	}
	for _, f := range subs {
		sch, err := loadJSON(f)
		if err != nil {
			return nil, err
		}
		s.Subscriptions[strings.TrimSuffix(filepath.Base(f), ".json")] = sch
	}
	if len(s.CRDs) == 0 || len(s.Steps) == 0 || len(s.Subscriptions) == 0 {
		return nil, fmt.Errorf("%w in %s: found %d CRDs, %d step schemas, %d subscription schemas", ErrNoSpec, dir, len(s.CRDs), len(s.Steps), len(s.Subscriptions))
	}
	return s, nil
}

func loadJSON(path string) (Schema, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Schema
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return s, nil
}

func loadCRD(path string) (CRD, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return CRD{}, err
	}
	var doc struct {
		Spec struct {
			Names struct {
				Kind string `yaml:"kind"`
			} `yaml:"names"`
			Scope    string `yaml:"scope"`
			Versions []struct {
				Storage bool `yaml:"storage"`
				Schema  struct {
					OpenAPIV3Schema Schema `yaml:"openAPIV3Schema"`
				} `yaml:"schema"`
			} `yaml:"versions"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return CRD{}, fmt.Errorf("parse %s: %w", path, err)
	}
	for _, v := range doc.Spec.Versions {
		if v.Storage {
			return CRD{Kind: doc.Spec.Names.Kind, Cluster: doc.Spec.Scope == "Cluster", Schema: v.Schema.OpenAPIV3Schema}, nil
		}
	}
	return CRD{}, fmt.Errorf("%s: no storage version", path)
}

// Kinds returns the CRDs' kinds, sorted.
func (s *Spec) Kinds() []string {
	out := make([]string, 0, len(s.CRDs))
	for k := range s.CRDs {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// StepNames returns the steps that have a schema, sorted.
func (s *Spec) StepNames() []string {
	out := make([]string, 0, len(s.Steps))
	for k := range s.Steps {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ObjectSchema returns the schema of kind's objects with the Warehouse's
// free-form subscription items replaced by what the subscription schemas
// define: an optional name and one of git, image or chart.
func (s *Spec) ObjectSchema(kind string) Schema {
	crd := s.CRDs[kind]
	if kind != "Warehouse" {
		return crd.Schema
	}
	root := deepCopy(crd.Schema).(Schema)
	subs := dig(root, "properties", "spec", "properties", "subscriptions")
	if subs == nil {
		return root
	}
	subs["items"] = Schema{
		"type": "object",
		"properties": Schema{
			"name":  Schema{"type": "string"},
			"git":   s.Subscriptions["git"],
			"image": s.Subscriptions["image"],
			"chart": s.Subscriptions["chart"],
		},
	}
	return root
}

func dig(s Schema, keys ...string) Schema {
	cur := s
	for _, k := range keys {
		next, ok := cur[k].(Schema)
		if !ok {
			return nil
		}
		cur = next
	}
	return cur
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = deepCopy(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = deepCopy(x)
		}
		return out
	}
	return v
}
