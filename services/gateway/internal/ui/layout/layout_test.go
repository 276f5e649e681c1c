package layout

import (
	"strings"
	"testing"
)

func box(ids ...string) []Node {
	out := make([]Node, len(ids))
	for i, id := range ids {
		out[i] = Node{ID: id, Width: 200, Height: 100}
	}
	return out
}

func edges(spec string) []Edge {
	var out []Edge
	for _, f := range strings.Fields(spec) {
		a, b, _ := strings.Cut(f, ">")
		out = append(out, Edge{a, b})
	}
	return out
}

func TestLayout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		nodes     []Node
		edges     string
		layers    string
		crossings int
		// points per route, in edge order
		points []int
	}{
		{
			name: "chain", nodes: box("wh", "dev", "staging", "prod"), edges: "wh>dev dev>staging staging>prod",
			layers: "0:wh | 0:dev | 0:staging | 0:prod", points: []int{2, 2, 2},
		},
		{
			name: "fan-out and fan-in", nodes: box("wh", "test", "uat-a", "uat-b", "uat-c", "prod"),
			edges:  "wh>test test>uat-a test>uat-b test>uat-c uat-a>prod uat-b>prod uat-c>prod",
			layers: "0:wh | 0:test | 0:uat-a 1:uat-b 2:uat-c | 0:prod", points: []int{2, 2, 2, 2, 2, 2, 2},
		},
		{
			name: "long edge gets dummies", nodes: box("wh", "a", "b", "c"), edges: "wh>a a>b b>c wh>c",
			layers: "0:wh | 0:a | 0:b | 0:c", points: []int{2, 2, 2, 4},
		},
		{
			name: "crossings reduced", nodes: box("w1", "w2", "x", "y"), edges: "w1>y w2>x",
			layers: "0:w1 1:w2 | 0:y 1:x", points: []int{2, 2},
		},
		{
			name: "two warehouses fan in", nodes: box("images", "charts", "dev", "prod"), edges: "images>dev charts>dev dev>prod",
			layers: "0:charts 1:images | 0:dev | 0:prod", points: []int{2, 2, 2},
		},
		{
			name: "cycle broken", nodes: box("a", "b", "c"), edges: "a>b b>c c>a",
			layers: "0:a | 0:b | 0:c", points: []int{2, 2, 3},
		},
		{
			name: "unknown ends, self-loops and repeats dropped", nodes: box("a", "b"), edges: "a>b a>b a>a a>zz",
			layers: "0:a | 0:b", points: []int{2},
		},
		{name: "empty", layers: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := Layout(tt.nodes, edges(tt.edges), Options{})
			// ordering inside a layer may mirror; compare sets of layers when
			// the order does not matter
			if got := r.String(); got != tt.layers && !sameLayers(got, tt.layers) {
				t.Errorf("layers %q, want %q", got, tt.layers)
			}
			if r.Crossings != tt.crossings {
				t.Errorf("crossings %d, want %d", r.Crossings, tt.crossings)
			}
			if len(r.Routes) != len(tt.points) {
				t.Fatalf("routes %d, want %d", len(r.Routes), len(tt.points))
			}
			for i, rt := range r.Routes {
				if len(rt.Points) != tt.points[i] {
					t.Errorf("route %v: %d points, want %d", rt.Edge, len(rt.Points), tt.points[i])
				}
			}
			checkGeometry(t, r)
		})
	}
}

// sameLayers compares layer contents ignoring the order within a layer.
func sameLayers(a, b string) bool {
	strip := func(s string) string {
		var out []string
		for _, l := range strings.Split(s, " | ") {
			var ids []string
			for _, f := range strings.Fields(l) {
				_, id, _ := strings.Cut(f, ":")
				ids = append(ids, id)
			}
			out = append(out, strings.Join(sorted(ids), " "))
		}
		return strings.Join(out, " | ")
	}
	return strip(a) == strip(b)
}

func sorted(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// checkGeometry checks that boxes of a layer do not overlap, layers go
// left to right, routes start at their source's right side and end at
// their target's left side (for forward edges), and the drawing holds
// everything.
func checkGeometry(t *testing.T, r Result) {
	t.Helper()
	byID := map[string]Placed{}
	for _, n := range r.Nodes {
		byID[n.ID] = n
		if n.X < 0 || n.Y < 0 || n.X+n.Width > r.Width || n.Y+n.Height > r.Height {
			t.Errorf("%s outside the drawing: %+v in %gx%g", n.ID, n, r.Width, r.Height)
		}
	}
	for _, a := range r.Nodes {
		for _, b := range r.Nodes {
			if a.ID < b.ID && a.Layer == b.Layer && a.Y < b.Y+b.Height && b.Y < a.Y+a.Height {
				t.Errorf("%s and %s overlap", a.ID, b.ID)
			}
			if a.Layer < b.Layer && a.X+a.Width > b.X {
				t.Errorf("layer of %s not left of %s", a.ID, b.ID)
			}
		}
	}
	for _, rt := range r.Routes {
		from, to := byID[rt.From], byID[rt.To]
		first, last := rt.Points[0], rt.Points[len(rt.Points)-1]
		if from.Layer < to.Layer {
			if first.X != from.X+from.Width || last.X != to.X {
				t.Errorf("route %v: %v…%v does not join the boxes", rt.Edge, first, last)
			}
		}
		if !strings.HasPrefix(rt.Path(), "M") || strings.Count(rt.Path(), " C") != len(rt.Points)-1 {
			t.Errorf("path %q", rt.Path())
		}
	}
}

func TestFit(t *testing.T) {
	t.Parallel()
	got := fit([]float64{10, 10, 10}, []float64{0, 5, 5})
	want := []float64{5, 10, 15}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("fit: %v, want %v", got, want)
		}
	}
	got = fit([]float64{0, 100}, []float64{0, 5})
	if got[0] != 0 || got[1] != 100 {
		t.Errorf("unconstrained: %v", got)
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	nodes, es := Generate(300, 3)
	a := Layout(nodes, es, Options{})
	b := Layout(nodes, es, Options{})
	for i := range a.Nodes {
		if a.Nodes[i] != b.Nodes[i] {
			t.Fatalf("node %d differs: %+v %+v", i, a.Nodes[i], b.Nodes[i])
		}
	}
	if a.Crossings != b.Crossings {
		t.Fatal("crossings differ")
	}
}

func BenchmarkLayout1000(b *testing.B) {
	nodes, es := Generate(1000, 5)
	b.ReportAllocs()
	for b.Loop() {
		Layout(nodes, es, Options{})
	}
}
