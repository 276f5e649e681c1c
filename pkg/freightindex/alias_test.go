package freightindex_test

import (
	"slices"
	"testing"

	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
)

// Freight by alias follows puts (a new alias, a changed one, one already
// taken) and deletes, as Find and Aliased answer it.
func TestAliases(t *testing.T) {
	t.Parallel()
	aliased := func(name, alias string, age int) *model.Freight {
		f := freight(name, age)
		f.Alias = alias
		return f
	}
	s := freightindex.NewSets()
	steps := []struct {
		name  string
		write func()
		want  map[string][]string // alias → names
	}{
		{"stored", func() {
			s.Put("demo", aliased("a", "red-fox", 3))
			s.Put("demo", aliased("b", "blue-owl", 2))
			s.Put("demo", freight("c", 1))
			s.Put("other", aliased("z", "red-fox", 1))
		}, map[string][]string{"red-fox": {"a"}, "blue-owl": {"b"}, "": nil, "green-elk": nil}},
		{"an alias changed", func() { s.Put("demo", aliased("a", "green-elk", 3)) },
			map[string][]string{"red-fox": nil, "blue-owl": {"b"}, "green-elk": {"a"}}},
		{"an alias set to one taken", func() { s.Put("demo", aliased("c", "blue-owl", 1)) },
			map[string][]string{"blue-owl": {"b", "c"}, "green-elk": {"a"}}},
		{"one of two deleted", func() { s.Delete("demo", "b") },
			map[string][]string{"blue-owl": {"c"}, "green-elk": {"a"}}},
		{"the last deleted", func() { s.Delete("demo", "c") },
			map[string][]string{"blue-owl": nil, "green-elk": {"a"}}},
	}
	for _, st := range steps {
		st.write()
		for alias, want := range st.want {
			if got := s.Aliased("demo", alias); !slices.Equal(got, want) {
				t.Errorf("%s: Aliased(%q) = %v, want %v", st.name, alias, got, want)
			}
			f, _ := s.Find("demo", alias, "")
			if (f == nil) != (len(want) == 0) || f != nil && !slices.Contains(want, f.Name) {
				t.Errorf("%s: Find(%q) = %v, want one of %v", st.name, alias, f, want)
			}
		}
	}
	if got := s.Aliased("other", "red-fox"); !slices.Equal(got, []string{"z"}) {
		t.Errorf("another project's alias: %v", got)
	}
	if _, byPrefix := s.Find("demo", "no-such-alias", "a"); !slices.Equal(byPrefix, []string{"a"}) {
		t.Errorf("Find by prefix = %v, want [a]", byPrefix)
	}
}
