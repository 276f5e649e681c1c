package server

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/demo"
)

// envVars lists the CARAVAN_* variables envconfig reads into a struct of
// type t, embedded structs and named struct fields (whose key prefixes
// their fields') included.
func envVars(t reflect.Type) []string { return envVarsPrefixed(t, "CARAVAN_") }

func envVarsPrefixed(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("ignored") == "true" || !f.IsExported() {
			continue
		}
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			out = append(out, envVarsPrefixed(f.Type, prefix)...)
			continue
		}
		key := f.Tag.Get("envconfig")
		if key == "" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() != "time" {
			out = append(out, envVarsPrefixed(f.Type, prefix+key+"_")...)
			continue
		}
		out = append(out, prefix+key)
	}
	return out
}

// TestREADMEListsEveryVariable keeps the README's configuration table true:
// every variable any service reads is documented there.
func TestREADMEListsEveryVariable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var c Config
	types := []reflect.Type{
		reflect.TypeOf(c), reflect.TypeOf(c.Discovery), reflect.TypeOf(c.Promoter),
		reflect.TypeOf(c.Verifier), reflect.TypeOf(demo.Config{}),
	}
	seen := map[string]bool{}
	for _, typ := range types {
		for _, v := range envVars(typ) {
			if seen[v] {
				continue
			}
			seen[v] = true
			if !strings.Contains(string(readme), "`"+v+"`") {
				t.Errorf("README.md does not document %s (read by %s)", v, typ)
			}
		}
	}
	if len(seen) < 20 {
		t.Fatalf("found only %d variables: the reflection is broken", len(seen))
	}
}
