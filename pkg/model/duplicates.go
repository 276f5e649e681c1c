package model

import "fmt"

// Duplicates reports each document that names an object (same kind,
// project and name) an earlier document of the same body names already:
// one body holds each object once, so no document silently wins over
// another. The issue is on the later document and names the earlier one.
func Duplicates(docs []Document) Issues {
	first := map[key]int{}
	var issues Issues
	for _, d := range docs {
		k := keyOf(d.Object)
		if at, ok := first[k]; ok {
			issues = append(issues, Issue{
				Document: d.Index,
				Kind:     k.kind,
				Name:     k.name,
				Field:    "metadata.name",
				Message:  fmt.Sprintf("documents %d and %d both hold %s %q%s; a body may hold each object once", at, d.Index, k.kind, k.name, inProject(k)),
			})
			continue
		}
		first[k] = d.Index
	}
	return issues
}

func inProject(k key) string {
	if k.project == "" || k.kind == KindProject {
		return ""
	}
	return fmt.Sprintf(" of project %q", k.project)
}
