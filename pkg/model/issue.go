package model

import (
	"fmt"
	"strings"
)

// Issue is one problem (or warning) found in the input, located by document,
// object and field path.
type Issue struct {
	// Document is the 1-based index of the object in the input.
	Document int    `json:"document,omitempty"`
	Kind     string `json:"kind,omitempty"`
	Name     string `json:"name,omitempty"`
	// Field is the path of the field, like spec.subscriptions[0].image.
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// String formats the issue as
// "document 3, Stage/prod: spec.requestedFreight[0].sources.stages: must not be empty",
// leaving out the parts that are empty.
func (i Issue) String() string {
	var where []string
	if i.Document > 0 {
		where = append(where, fmt.Sprintf("document %d", i.Document))
	}
	switch {
	case i.Kind != "" && i.Name != "":
		where = append(where, i.Kind+"/"+i.Name)
	case i.Kind != "":
		where = append(where, i.Kind)
	case i.Name != "":
		where = append(where, i.Name)
	}
	var b strings.Builder
	if len(where) > 0 {
		b.WriteString(strings.Join(where, ", "))
		b.WriteString(": ")
	}
	if i.Field != "" {
		b.WriteString(i.Field)
		b.WriteString(": ")
	}
	b.WriteString(i.Message)
	return b.String()
}

// Issues is a list of issues; as an error it reads one issue per line.
type Issues []Issue

// Error implements error.
func (is Issues) Error() string {
	lines := make([]string, len(is))
	for i, issue := range is {
		lines[i] = issue.String()
	}
	return strings.Join(lines, "\n")
}

// Err returns is as an error, or nil when it is empty.
func (is Issues) Err() error {
	if len(is) == 0 {
		return nil
	}
	return is
}
