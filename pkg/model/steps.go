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

// StepSchema describes the config of one promotion step: its top-level
// fields, which are required and whether fields it does not list are
// allowed.
type StepSchema struct {
	Fields   map[string]FieldType
	Required []string
	// Open allows fields the schema does not list (free-form configs and
	// steps whose every option is not listed here).
	Open bool
}

// StepCatalog lists the promotion steps Caravan knows, under Kargo's names,
// with the top-level fields of their config.
var StepCatalog = map[string]StepSchema{
	"git-clone": {Fields: map[string]FieldType{"repoURL": FieldString, "insecureSkipTLSVerify": FieldBool, "author": FieldObject, "checkout": FieldArray},
		Required: []string{"repoURL", "checkout"}},
	"git-clear":  {Fields: map[string]FieldType{"path": FieldString}, Required: []string{"path"}},
	"git-commit": {Fields: map[string]FieldType{"path": FieldString, "message": FieldString, "author": FieldObject}, Required: []string{"path", "message"}},
	"git-push": {Fields: map[string]FieldType{"path": FieldString, "targetBranch": FieldString, "generateTargetBranch": FieldBool, "force": FieldBool,
		"maxAttempts": FieldNumber, "provider": FieldString}, Required: []string{"path"}},
	"git-tag": {Fields: map[string]FieldType{"path": FieldString, "tag": FieldString}, Required: []string{"path", "tag"}},
	"git-open-pr": {Fields: map[string]FieldType{"repoURL": FieldString, "provider": FieldString, "insecureSkipTLSVerify": FieldBool, "sourceBranch": FieldString,
		"targetBranch": FieldString, "createTargetBranch": FieldBool, "title": FieldString, "description": FieldString, "labels": FieldArray}, Required: []string{"repoURL", "sourceBranch"}, Open: true},
	"git-wait-for-pr": {Fields: map[string]FieldType{"repoURL": FieldString, "provider": FieldString, "insecureSkipTLSVerify": FieldBool, "prNumber": FieldNumber},
		Required: []string{"repoURL", "prNumber"}, Open: true},
	"git-merge-pr": {Fields: map[string]FieldType{"repoURL": FieldString, "provider": FieldString, "insecureSkipTLSVerify": FieldBool, "prNumber": FieldNumber, "wait": FieldBool},
		Required: []string{"repoURL", "prNumber"}, Open: true},
	"kustomize-set-image": {Fields: map[string]FieldType{"path": FieldString, "images": FieldArray}, Required: []string{"images"}},
	"kustomize-build":     {Fields: map[string]FieldType{"path": FieldString, "outPath": FieldString, "plugin": FieldObject}, Required: []string{"path", "outPath"}, Open: true},
	"helm-template": {Fields: map[string]FieldType{"path": FieldString, "outPath": FieldString, "outLayout": FieldString, "releaseName": FieldString, "namespace": FieldString,
		"valuesFiles": FieldArray, "setValues": FieldArray, "buildDependencies": FieldBool, "includeCRDs": FieldBool, "disableHooks": FieldBool,
		"skipTests": FieldBool, "kubeVersion": FieldString, "apiVersions": FieldArray}, Required: []string{"path", "outPath"}, Open: true},
	"helm-update-chart": {Fields: map[string]FieldType{"path": FieldString, "charts": FieldArray}, Required: []string{"path", "charts"}, Open: true},
	"yaml-update":       {Fields: map[string]FieldType{"path": FieldString, "updates": FieldArray}, Required: []string{"path", "updates"}},
	"json-update":       {Fields: map[string]FieldType{"path": FieldString, "updates": FieldArray}, Required: []string{"path", "updates"}},
	"toml-update":       {Fields: map[string]FieldType{"path": FieldString, "updates": FieldArray}, Required: []string{"path", "updates"}},
	"yaml-parse":        {Fields: map[string]FieldType{"path": FieldString, "outputs": FieldArray}, Required: []string{"path", "outputs"}},
	"json-parse":        {Fields: map[string]FieldType{"path": FieldString, "outputs": FieldArray}, Required: []string{"path", "outputs"}},
	"toml-parse":        {Fields: map[string]FieldType{"path": FieldString, "outputs": FieldArray}, Required: []string{"path", "outputs"}},
	"yaml-merge":        {Fields: map[string]FieldType{"inFiles": FieldArray, "outFile": FieldString, "strict": FieldBool}, Required: []string{"inFiles", "outFile"}},
	"copy":              {Fields: map[string]FieldType{"inPath": FieldString, "outPath": FieldString, "ignore": FieldString}, Required: []string{"inPath", "outPath"}},
	"delete":            {Fields: map[string]FieldType{"path": FieldString, "strict": FieldBool}, Required: []string{"path"}},
	"file-write":        {Fields: map[string]FieldType{"path": FieldString, "contents": FieldString}, Required: []string{"path"}},
	"tar":               {Fields: map[string]FieldType{"inPath": FieldString, "outPath": FieldString}, Required: []string{"inPath", "outPath"}, Open: true},
	"untar":             {Fields: map[string]FieldType{"inPath": FieldString, "outPath": FieldString}, Required: []string{"inPath", "outPath"}, Open: true},
	"compose-output":    {Open: true},
	"set-metadata":      {Fields: map[string]FieldType{"updates": FieldArray}, Required: []string{"updates"}},
	"set-freight-alias": {Fields: map[string]FieldType{"freightName": FieldString, "newAlias": FieldString}, Required: []string{"newAlias"}},
	"fail":              {Fields: map[string]FieldType{"message": FieldString}},
	"http": {Fields: map[string]FieldType{"method": FieldString, "url": FieldString, "headers": FieldArray, "queryParams": FieldArray, "body": FieldString,
		"insecureSkipTLSVerify": FieldBool, "timeout": FieldString, "successExpression": FieldString, "failureExpression": FieldString, "outputs": FieldArray},
		Required: []string{"url"}},
	"http-download": {Fields: map[string]FieldType{"url": FieldString, "outPath": FieldString, "headers": FieldArray, "allowOverwrite": FieldBool,
		"insecureSkipTLSVerify": FieldBool, "timeout": FieldString}, Required: []string{"url", "outPath"}},
	"oci-download": {Fields: map[string]FieldType{"imageRef": FieldString, "outPath": FieldString, "mediaType": FieldString, "allowOverwrite": FieldBool,
		"insecureSkipTLSVerify": FieldBool}, Required: []string{"imageRef", "outPath"}, Open: true},
	"oci-push": {Fields: map[string]FieldType{"imageRef": FieldString, "destRef": FieldString, "insecureSkipTLSVerify": FieldBool},
		Required: []string{"imageRef", "destRef"}, Open: true},
	"argocd-update": {Fields: map[string]FieldType{"apps": FieldArray}, Required: []string{"apps"}},
	"argocd-wait":   {Fields: map[string]FieldType{"apps": FieldArray, "timeout": FieldString}, Required: []string{"apps"}, Open: true},
}

// StepConfigIssue is one way a step's config does not fit its schema;
// Field is relative to the step ("uses", "config.<field>").
type StepConfigIssue struct {
	Field   string
	Message string
}

// CheckStep checks a step's name and config against StepCatalog. Values
// that hold ${{ }} (or ${% %}) expressions are only known at promotion time
// and skip type checks.
func CheckStep(uses string, config map[string]any) []StepConfigIssue {
	schema, ok := StepCatalog[uses]
	if !ok {
		return []StepConfigIssue{{Field: "uses", Message: fmt.Sprintf("unknown step %q; known steps: %s", uses, strings.Join(StepNames(), ", "))}}
	}
	var issues []StepConfigIssue
	for _, name := range schema.Required {
		if v, ok := config[name]; !ok || v == nil || v == "" {
			issues = append(issues, StepConfigIssue{Field: "config." + name, Message: "is required"})
		}
	}
	names := make([]string, 0, len(config))
	for k := range config {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		v := config[name]
		want, known := schema.Fields[name]
		if !known {
			if !schema.Open {
				issues = append(issues, StepConfigIssue{Field: "config." + name, Message: fmt.Sprintf("unknown field for step %q", uses)})
			}
			continue
		}
		if v == nil || isExpression(v) || want == FieldAny {
			continue
		}
		if got := jsonType(v); got != want {
			issues = append(issues, StepConfigIssue{Field: "config." + name, Message: fmt.Sprintf("must be a %s, got a %s", want, got)})
		}
	}
	return append(issues, checkStepURLs(uses, config)...)
}

// stepRepoURLs are the step config fields that name a repository, with the
// kind of repository CheckRepoURL checks them as.
var stepRepoURLs = map[string]map[string]RepoKind{
	"git-clone":       {"repoURL": RepoGit},
	"git-open-pr":     {"repoURL": RepoGit},
	"git-wait-for-pr": {"repoURL": RepoGit},
	"git-merge-pr":    {"repoURL": RepoGit},
	"oci-download":    {"imageRef": RepoImage},
	"oci-push":        {"imageRef": RepoImage, "destRef": RepoImage},
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
			issues = append(issues, StepConfigIssue{Field: "config." + field, Message: err.Error()})
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
				issues = append(issues, StepConfigIssue{Field: "config.url", Message: err.Error()})
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
