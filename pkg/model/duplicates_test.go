package model

import (
	"strings"
	"testing"
)

func TestDuplicates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want []string // "document: message part"
	}{
		{"none", `
kind: Project
metadata: {name: a}
---
kind: Project
metadata: {name: b}
---
kind: Warehouse
metadata: {name: a, namespace: a}
`, nil},
		{"same name in other projects and kinds", `
kind: Stage
metadata: {name: x, namespace: a}
---
kind: Stage
metadata: {name: x, namespace: b}
---
kind: Warehouse
metadata: {name: x, namespace: a}
`, nil},
		{"repeated", `
kind: Project
metadata: {name: a}
---
kind: Stage
metadata: {name: x, namespace: a}
---
kind: Warehouse
metadata: {name: w, namespace: a}
---
kind: Stage
metadata: {name: x, namespace: a}
---
kind: Project
metadata: {name: a}
---
kind: Stage
metadata: {name: x, namespace: a}
`, []string{`4: documents 2 and 4 both hold Stage "x" of project "a"`, `5: documents 1 and 5 both hold Project "a";`, `6: documents 2 and 6 both hold Stage "x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dec, err := Decode([]byte(strings.ReplaceAll(tt.body, "kind:", "apiVersion: kargo.akuity.io/v1alpha1\nkind:")))
			if err != nil {
				t.Fatal(err)
			}
			got := Duplicates(dec.Documents)
			if len(got) != len(tt.want) {
				t.Fatalf("issues %v, want %d", got, len(tt.want))
			}
			for i, w := range tt.want {
				doc, msg, _ := strings.Cut(w, ": ")
				if got[i].Field != "metadata.name" || !strings.HasPrefix(got[i].String(), "document "+doc+",") || !strings.Contains(got[i].Message, msg) {
					t.Errorf("issue %d = %s, want document %s and %q", i, got[i], doc, msg)
				}
			}
			if len(tt.want) > 0 && len(Validate(dec.Documents, nil)) < len(tt.want) {
				t.Error("Validate does not report the duplicates")
			}
		})
	}
}
