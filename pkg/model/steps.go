package model

import (
	"fmt"
	"sort"
	"strings"
)

// FieldType is the JSON type of a step config field.
type FieldType string

// Field types of step configs.
const (
	FieldString FieldType = "string"
	FieldBool   FieldType = "boolean"
	FieldNumber FieldType = "number"
	FieldObject FieldType = "object"
	FieldArray  FieldType = "array"
	FieldAny    FieldType = "any"
)

// StepSchema describes the config of one promotion step. Paths name
// fields as Kargo's step schemas do: "." joins fields, "[]" stands for
// the items of a list and "{}" for the values of a map
// ("checkout[].sparse", "updates[].values{}").
//
// The promoter's step registry is the source of this data: StepCatalog is
// generated from it (see services/promoter/internal/steps).
type StepSchema struct {
	Name string
	// Fields maps every path the step takes to its JSON type.
	Fields map[string]FieldType
	// Required lists the paths that must be set; a path below a list or
	// an object is required only where its parent is present.
	Required []string
	// Open allows any config (a free-form step such as compose-output).
	Open bool
	// Differences maps the properties of Kargo's schema for the step that
	// Caravan does not act on as Kargo does to how and why.
	Differences map[string]StepDifference
	// Outputs names the step's outputs, under Kargo's names.
	Outputs []string
}

// StepDifference is a property of Kargo's schema for a step that Caravan
// does not act on as Kargo does.
type StepDifference struct {
	Reason string
	// Accepted: a config may set it, and the step goes on without it (the
	// outcome is the same, or differs only as Reason says). Otherwise
	// setting it to anything but its zero value is refused.
	Accepted bool
}

// IssueKind says how a step config does not fit its schema.
type IssueKind int

// Kinds of step config issues.
const (
	// IssueUnknown is a field the step does not take.
	IssueUnknown IssueKind = iota
	// IssueRequired is a required field left out or empty.
	IssueRequired
	// IssueType is a value of the wrong JSON type.
	IssueType
	// IssueDifference is a Kargo property Caravan does not act on, set.
	IssueDifference
	// IssueURL is a repository or http URL the URL policy refuses.
	IssueURL
)

// StepConfigIssue is one way a step's config does not fit its schema;
// Field is relative to the step ("uses", "config.checkout[0].path").
type StepConfigIssue struct {
	Field   string
	Message string
	Kind    IssueKind
}

// CheckStep checks a step's name and config against StepCatalog. Values
// that hold ${{ }} (or ${% %}) expressions are only known at promotion time
// and skip the checks below them.
func CheckStep(uses string, config map[string]any) []StepConfigIssue {
	schema, ok := StepCatalog[uses]
	if !ok {
		return []StepConfigIssue{{Field: "uses", Kind: IssueUnknown, Message: fmt.Sprintf("unknown step %q; known steps: %s", uses, strings.Join(StepNames(), ", "))}}
	}
	return append(schema.Check(config), checkStepURLs(uses, config)...)
}

// Check checks config against s: unknown fields at any depth, required
// fields, JSON types, and Kargo properties Caravan does not act on.
func (s StepSchema) Check(config map[string]any) []StepConfigIssue {
	if s.Open {
		return nil
	}
	c := checker{schema: s, required: map[string][]string{}}
	for _, r := range s.Required {
		parent, key := splitPath(r)
		c.required[parent] = append(c.required[parent], key)
	}
	c.object("", "config", config)
	return c.issues
}

type checker struct {
	schema StepSchema
	// required lists, by parent path, the keys required in it.
	required map[string][]string
	issues   []StepConfigIssue
}

func (c *checker) add(field string, kind IssueKind, format string, args ...any) {
	c.issues = append(c.issues, StepConfigIssue{Field: field, Kind: kind, Message: fmt.Sprintf(format, args...)})
}

// object checks the object m found at path (a schema path) and field (the
// same with indexes, as shown to the user).
func (c *checker) object(path, field string, m map[string]any) {
	for _, key := range c.required[path] {
		if v, ok := m[key]; !ok || v == nil || v == "" {
			c.add(field+"."+key, IssueRequired, "is required")
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m[k]
		p := joinField(path, k)
		want, known := c.schema.Fields[p]
		if !known {
			if w, ok := c.schema.Fields[path+"{}"]; ok {
				p, want, known = path+"{}", w, true
			}
		}
		if !known {
			if d, ok := c.schema.Differences[p]; ok {
				if !d.Accepted && !isZero(v) && !isExpression(v) {
					c.add(field+"."+k, IssueDifference, "not supported by Caravan: %s", d.Reason)
				}
				continue
			}
			c.add(field+"."+k, IssueUnknown, "unknown field for step %q", c.schema.Name)
			continue
		}
		c.value(p, field+"."+k, v, want)
	}
}

func (c *checker) value(path, field string, v any, want FieldType) {
	if v == nil || isExpression(v) || want == FieldAny {
		return
	}
	if got := jsonType(v); got != want {
		c.add(field, IssueType, "must be a %s, got a %s", want, got)
		return
	}
	switch t := v.(type) {
	case map[string]any:
		c.object(path, field, t)
	case []any:
		item, ok := c.schema.Fields[path+"[]"]
		if !ok {
			return
		}
		for i, e := range t {
			c.value(path+"[]", fmt.Sprintf("%s[%d]", field, i), e, item)
		}
	}
}

// splitPath splits a schema path into its parent and its last key:
// "checkout[].path" → "checkout[]", "path".
func splitPath(p string) (parent, key string) {
	i := strings.LastIndex(p, ".")
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

func joinField(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func isZero(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case string:
		return t == ""
	case bool:
		return !t
	case float64:
		return t == 0
	case int:
		return t == 0
	case int64:
		return t == 0
	case []any:
		return len(t) == 0
	case map[string]any:
		return len(t) == 0
	}
	return false
}

// stepRepoURLs are the step config fields that name a repository, with the
// kind of repository CheckRepoURL checks them as.
var stepRepoURLs = map[string]map[string]RepoKind{
	"git-clone":       {"repoURL": RepoGit},
	"git-open-pr":     {"repoURL": RepoGit},
	"git-wait-for-pr": {"repoURL": RepoGit},
	"git-merge-pr":    {"repoURL": RepoGit},
	"oci-download":    {"imageRef": RepoImage},
	"oci-push":        {"srcRef": RepoImage, "destRef": RepoImage},
}

// checkStepURLs applies the repository URL policy to a step's literal
// repository URLs (helm-update-chart's charts[].repository included) and
// requires http(s) of the http steps' url. Expressions are checked when
// the step runs.
func checkStepURLs(uses string, config map[string]any) []StepConfigIssue {
	var issues []StepConfigIssue
	check := func(field string, kind RepoKind, v any) {
		s, ok := v.(string)
		if !ok || s == "" || isExpression(v) {
			return
		}
		if err := CheckRepoURL(kind, s); err != nil {
			issues = append(issues, StepConfigIssue{Field: "config." + field, Kind: IssueURL, Message: err.Error()})
		}
	}
	fields := stepRepoURLs[uses]
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		check(name, fields[name], config[name])
	}
	switch uses {
	case "helm-update-chart":
		charts, _ := config["charts"].([]any)
		for i, c := range charts {
			if m, ok := c.(map[string]any); ok {
				if r, _ := m["repository"].(string); IsLocalChartDependency(r) {
					continue // a subchart in the work dir; the step keeps it there
				}
				check(fmt.Sprintf("charts[%d].repository", i), RepoChart, m["repository"])
			}
		}
	case "http", "http-download":
		if s, ok := config["url"].(string); ok && s != "" && !isExpression(s) {
			if err := CheckHTTPURL(s); err != nil {
				issues = append(issues, StepConfigIssue{Field: "config.url", Kind: IssueURL, Message: err.Error()})
			}
		}
	}
	return issues
}

// CheckHTTPURL requires an http:// or https:// URL with a host (the http
// steps' url). Where it may connect is the egress policy's business.
func CheckHTTPURL(s string) error {
	if scheme, ok := schemeOf(s); !ok || scheme != "http" && scheme != "https" {
		return fmt.Errorf("%q is not an http:// or https:// URL", s)
	}
	return checkHostURL(s)
}

// StepNames lists the catalog's step names, sorted.
func StepNames() []string {
	names := make([]string, 0, len(StepCatalog))
	for n := range StepCatalog {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func isExpression(v any) bool {
	s, ok := v.(string)
	return ok && (strings.Contains(s, "${{") || strings.Contains(s, "${%"))
}

func jsonType(v any) FieldType {
	switch v.(type) {
	case string:
		return FieldString
	case bool:
		return FieldBool
	case float64, float32, int, int64, int32, uint32, uint64:
		return FieldNumber
	case map[string]any:
		return FieldObject
	case []any:
		return FieldArray
	}
	return FieldAny
}

// IsLocalChartDependency reports whether repository names a Helm subchart
// by a relative file:// path, as Chart.yaml dependencies may: it is not a
// repository to fetch but a directory of the work dir (helm-update-chart
// keeps it inside the work dir). An absolute file:// path is not one.
func IsLocalChartDependency(repository string) bool {
	rest, ok := strings.CutPrefix(repository, "file://")
	return ok && rest != "" && !strings.HasPrefix(rest, "/")
}
