package events

import "strings"

// Subject layout: caravan.events.<project>.<type>.<kind>.<name>
//
// Project and resource names are RFC 1123 names, which may contain dots; a
// dot separates NATS subject tokens, so Token replaces it with an
// underscore, a character RFC 1123 names never hold. Cluster-scoped
// resources use ClusterProject as their project token.
const (
	// SubjectRoot prefixes every event subject.
	SubjectRoot = "caravan.events"
	// ClusterProject is the project token of cluster-scoped resources.
	ClusterProject = "_"
	// Any matches one token in a filter.
	Any = "*"
)

// Subject returns the subject an event about (project, ref) of type t is
// published on.
func Subject(project string, t Type, ref Ref) string {
	if project == "" {
		project = ClusterProject
	}
	return strings.Join([]string{SubjectRoot, Token(project), string(t), Token(ref.Kind), Token(ref.Name)}, ".")
}

// Filter returns a subject filter for events of type t in project (Any for
// every project) about resources of kind (Any for every kind).
func Filter(project string, t Type, kind string) string {
	if t == "" {
		t = Any
	}
	return strings.Join([]string{SubjectRoot, filterToken(project), string(t), filterToken(kind), ">"}, ".")
}

// ProjectFilter matches every event of one project.
func ProjectFilter(project string) string {
	return SubjectRoot + "." + filterToken(project) + ".>"
}

func filterToken(s string) string {
	if s == "" || s == Any {
		return Any
	}
	return Token(s)
}

// Token makes s safe as one subject token.
func Token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, s)
}
