// Package layout places a directed graph in layers, left to right, the
// Sugiyama way: cycles broken by reversing back edges, longest-path
// layering, dummy nodes on edges that span layers, barycentric crossing
// reduction (alternating sweeps, the best ordering kept), vertical
// placement by least squares under separation constraints, and edges
// routed through their dummy nodes as smooth SVG paths. It is pure: no I/O,
// deterministic for the same input.
package layout

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Node is a box to place. Width and Height are in pixels.
type Node struct {
	ID            string
	Width, Height float64
}

// Edge goes From one node To another (by ID).
type Edge struct {
	From, To string
}

// Options tune the layout; zero values take the defaults.
type Options struct {
	// LayerGap is the horizontal space between layers (default 80).
	LayerGap float64
	// NodeGap is the vertical space between boxes of a layer (default 24).
	NodeGap float64
	// Padding surrounds the drawing (default 16).
	Padding float64
	// Sweeps bounds the crossing-reduction sweeps (default 24).
	Sweeps int
}

func (o *Options) defaults() {
	if o.LayerGap <= 0 {
		o.LayerGap = 80
	}
	if o.NodeGap <= 0 {
		o.NodeGap = 24
	}
	if o.Padding <= 0 {
		o.Padding = 16
	}
	if o.Sweeps <= 0 {
		o.Sweeps = 24
	}
}

// Placed is a node with its position (top-left corner), layer and rank
// within the layer.
type Placed struct {
	Node
	X, Y         float64
	Layer, Order int
}

// Point is a position in the drawing.
type Point struct{ X, Y float64 }

// Route is an edge as drawn: from the source's right side, through the
// dummy nodes of its layers, to the target's left side.
type Route struct {
	Edge
	Points []Point
}

// Path is the route as an SVG path: cubic segments leaving and entering
// each point horizontally.
func (r Route) Path() string {
	var b strings.Builder
	for i, p := range r.Points {
		if i == 0 {
			b.WriteString("M")
			writePoint(&b, p)
			continue
		}
		q := r.Points[i-1]
		dx := (p.X - q.X) / 2
		b.WriteString(" C")
		writePoint(&b, Point{q.X + dx, q.Y})
		b.WriteString(" ")
		writePoint(&b, Point{p.X - dx, p.Y})
		b.WriteString(" ")
		writePoint(&b, p)
	}
	return b.String()
}

func writePoint(b *strings.Builder, p Point) {
	b.WriteString(strconv.FormatFloat(p.X, 'f', 1, 64))
	b.WriteByte(',')
	b.WriteString(strconv.FormatFloat(p.Y, 'f', 1, 64))
}

// Result is a laid-out graph.
type Result struct {
	// Nodes in the order they were given.
	Nodes []Placed
	// Routes of the edges kept (known ends, no self-loops, no repeats), in
	// the order they were given.
	Routes []Route
	// Width and Height of the drawing, padding included.
	Width, Height float64
	// Layers is the number of layers.
	Layers int
	// Crossings is the number of edge crossings left.
	Crossings int
}

// vertex is a node or a dummy in the layered graph.
type vertex struct {
	node       int // index into the input nodes; -1 for a dummy
	layer      int
	pos        int
	w, h       float64
	x, y       float64
	preds, sub []int
}

type graph struct {
	v      []vertex
	layers [][]int
	// chains are, per kept edge, the vertices it passes through (source,
	// dummies, target) in drawing order, and whether it was reversed.
	chains   [][]int
	reversed []bool
	kept     []Edge
}

// Layout lays the graph out.
func Layout(nodes []Node, edges []Edge, o Options) Result {
	o.defaults()
	g := build(nodes, edges)
	g.order(o.Sweeps)
	crossings := g.crossings()
	g.place(o)

	res := Result{Nodes: make([]Placed, len(nodes)), Layers: len(g.layers), Crossings: crossings}
	for i := range nodes {
		v := g.v[i]
		res.Nodes[i] = Placed{Node: nodes[i], X: v.x, Y: v.y, Layer: v.layer, Order: v.pos}
		res.Width = max(res.Width, v.x+v.w+o.Padding)
		res.Height = max(res.Height, v.y+v.h+o.Padding)
	}
	for _, v := range g.v[len(nodes):] {
		res.Height = max(res.Height, v.y+o.Padding)
	}
	res.Routes = make([]Route, len(g.kept))
	for i, chain := range g.chains {
		pts := make([]Point, len(chain))
		for j, id := range chain {
			v := g.v[id]
			switch {
			case v.node < 0:
				pts[j] = Point{v.x, v.y}
			case j == 0:
				pts[j] = Point{v.x + v.w, v.y + v.h/2}
			default:
				pts[j] = Point{v.x, v.y + v.h/2}
			}
		}
		if g.reversed[i] {
			// A back edge runs against the flow: from its source's left
			// side back to its target's right side.
			slices.Reverse(pts)
		}
		res.Routes[i] = Route{Edge: g.kept[i], Points: pts}
	}
	return res
}

// build indexes the graph, breaks cycles, assigns layers and adds dummies.
func build(nodes []Node, edges []Edge) *graph {
	index := make(map[string]int, len(nodes))
	g := &graph{v: make([]vertex, len(nodes), len(nodes)*2)}
	for i, n := range nodes {
		if _, dup := index[n.ID]; !dup {
			index[n.ID] = i
		}
		g.v[i] = vertex{node: i, w: n.Width, h: n.Height}
	}
	type pair struct{ a, b int }
	seen := map[pair]bool{}
	var from, to []int
	for _, e := range edges {
		a, okA := index[e.From]
		b, okB := index[e.To]
		if !okA || !okB || a == b || seen[pair{a, b}] {
			continue
		}
		seen[pair{a, b}] = true
		g.kept = append(g.kept, e)
		from, to = append(from, a), append(to, b)
	}
	g.reversed = breakCycles(len(nodes), from, to)
	for i, r := range g.reversed {
		if r {
			from[i], to[i] = to[i], from[i]
		}
	}
	layer := longestPath(len(nodes), from, to)
	top := 0
	for i := range nodes {
		g.v[i].layer = layer[i]
		top = max(top, layer[i])
	}
	g.layers = make([][]int, top+1)
	for i := range nodes {
		g.layers[layer[i]] = append(g.layers[layer[i]], i)
	}
	g.chains = make([][]int, len(from))
	for i := range from {
		chain := []int{from[i]}
		prev := from[i]
		for l := layer[from[i]] + 1; l < layer[to[i]]; l++ {
			id := len(g.v)
			g.v = append(g.v, vertex{node: -1, layer: l})
			g.layers[l] = append(g.layers[l], id)
			g.link(prev, id)
			chain = append(chain, id)
			prev = id
		}
		g.link(prev, to[i])
		g.chains[i] = append(chain, to[i])
	}
	for _, l := range g.layers {
		for p, id := range l {
			g.v[id].pos = p
		}
	}
	return g
}

func (g *graph) link(a, b int) {
	g.v[a].sub = append(g.v[a].sub, b)
	g.v[b].preds = append(g.v[b].preds, a)
}

// breakCycles returns which edges to reverse so that the graph has no
// cycle: the back edges of a depth-first search in node order.
func breakCycles(n int, from, to []int) []bool {
	out := make([][]int, n) // edge indices by source
	for i, a := range from {
		out[a] = append(out[a], i)
	}
	rev := make([]bool, len(from))
	state := make([]uint8, n) // 0 new, 1 on stack, 2 done
	type frame struct{ v, next int }
	for s := range n {
		if state[s] != 0 {
			continue
		}
		stack := []frame{{s, 0}}
		state[s] = 1
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			if f.next == len(out[f.v]) {
				state[f.v] = 2
				stack = stack[:len(stack)-1]
				continue
			}
			e := out[f.v][f.next]
			f.next++
			switch state[to[e]] {
			case 0:
				state[to[e]] = 1
				stack = append(stack, frame{to[e], 0})
			case 1:
				rev[e] = true
			}
		}
	}
	return rev
}

// longestPath layers an acyclic graph: sources in layer 0, every other node
// one layer right of its furthest predecessor.
func longestPath(n int, from, to []int) []int {
	indeg := make([]int, n)
	out := make([][]int, n)
	for i, a := range from {
		out[a] = append(out[a], to[i])
		indeg[to[i]]++
	}
	layer := make([]int, n)
	queue := make([]int, 0, n)
	for v := range n {
		if indeg[v] == 0 {
			queue = append(queue, v)
		}
	}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		for _, w := range out[v] {
			layer[w] = max(layer[w], layer[v]+1)
			if indeg[w]--; indeg[w] == 0 {
				queue = append(queue, w)
			}
		}
	}
	return layer
}

// order reduces crossings: alternating downward and upward sweeps sort each
// layer by the barycentre of its neighbours in the layer just swept; the
// ordering with the fewest crossings is kept.
func (g *graph) order(sweeps int) {
	best := g.snapshot()
	bestC := g.crossings()
	stale := 0
	for i := 0; i < sweeps && bestC > 0; i++ {
		if i%2 == 0 {
			for l := 1; l < len(g.layers); l++ {
				g.sortLayer(l, true)
			}
		} else {
			for l := len(g.layers) - 2; l >= 0; l-- {
				g.sortLayer(l, false)
			}
		}
		if c := g.crossings(); c < bestC {
			best, bestC, stale = g.snapshot(), c, 0
		} else if stale++; stale >= 4 {
			break
		}
	}
	g.restore(best)
}

func (g *graph) sortLayer(l int, down bool) {
	layer := g.layers[l]
	bary := make(map[int]float64, len(layer))
	for _, id := range layer {
		adj := g.v[id].preds
		if !down {
			adj = g.v[id].sub
		}
		if len(adj) == 0 {
			bary[id] = float64(g.v[id].pos) // keeps its place
			continue
		}
		sum := 0.0
		for _, a := range adj {
			sum += float64(g.v[a].pos)
		}
		bary[id] = sum / float64(len(adj))
	}
	slices.SortStableFunc(layer, func(a, b int) int {
		if c := cmpFloat(bary[a], bary[b]); c != 0 {
			return c
		}
		return g.v[a].pos - g.v[b].pos
	})
	for p, id := range layer {
		g.v[id].pos = p
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (g *graph) snapshot() [][]int {
	out := make([][]int, len(g.layers))
	for i, l := range g.layers {
		out[i] = slices.Clone(l)
	}
	return out
}

func (g *graph) restore(s [][]int) {
	g.layers = s
	for _, l := range g.layers {
		for p, id := range l {
			g.v[id].pos = p
		}
	}
}

// crossings counts edge crossings between every pair of adjacent layers,
// by counting inversions with a Fenwick tree (O(E log V) per pair).
func (g *graph) crossings() int {
	total := 0
	type seg struct{ a, b int }
	for l := 0; l+1 < len(g.layers); l++ {
		var segs []seg
		for _, id := range g.layers[l] {
			for _, s := range g.v[id].sub {
				segs = append(segs, seg{g.v[id].pos, g.v[s].pos})
			}
		}
		slices.SortFunc(segs, func(x, y seg) int {
			if x.a != y.a {
				return x.a - y.a
			}
			return x.b - y.b
		})
		n := len(g.layers[l+1])
		tree := make([]int, n+1)
		seenCount := 0
		for _, s := range segs {
			// crossings with earlier segments ending strictly below b
			le := 0
			for i := s.b + 1; i > 0; i -= i & -i {
				le += tree[i]
			}
			total += seenCount - le
			for i := s.b + 1; i <= n; i += i & -i {
				tree[i]++
			}
			seenCount++
		}
	}
	return total
}

// place assigns coordinates: each layer is a column as wide as its widest
// box; within a column, boxes keep their order and move towards the
// average centre of their neighbours (least squares under the gap
// constraints), alternating passes against the layer before and after.
func (g *graph) place(o Options) {
	x := o.Padding
	for _, l := range g.layers {
		w := 0.0
		for _, id := range l {
			w = max(w, g.v[id].w)
		}
		for _, id := range l {
			v := &g.v[id]
			if v.node < 0 {
				v.x = x + w/2
			} else {
				v.x = x + (w-v.w)/2
			}
		}
		x += w + o.LayerGap
	}
	gap := func(a, b int) float64 {
		va, vb := g.v[a], g.v[b]
		sep := o.NodeGap
		if va.node < 0 || vb.node < 0 {
			sep = o.NodeGap / 2
		}
		return va.h/2 + vb.h/2 + sep
	}
	// start stacked
	for _, l := range g.layers {
		c := 0.0
		for i, id := range l {
			if i > 0 {
				c += gap(l[i-1], id)
			}
			g.v[id].y = c // centre, for now
		}
	}
	for pass := range 8 {
		down := pass%2 == 0
		for k := range g.layers {
			l := k
			if !down {
				l = len(g.layers) - 1 - k
			}
			layer := g.layers[l]
			want := make([]float64, len(layer))
			for i, id := range layer {
				adj := g.v[id].preds
				if !down {
					adj = g.v[id].sub
				}
				if len(adj) == 0 {
					want[i] = g.v[id].y
					continue
				}
				sum := 0.0
				for _, a := range adj {
					sum += g.v[a].y
				}
				want[i] = sum / float64(len(adj))
			}
			seps := make([]float64, len(layer))
			for i := 1; i < len(layer); i++ {
				seps[i] = gap(layer[i-1], layer[i])
			}
			ys := fit(want, seps)
			for i, id := range layer {
				g.v[id].y = ys[i]
			}
		}
	}
	// Shift so the top is at the padding; turn centres into corners.
	top := math.Inf(1)
	for _, v := range g.v {
		top = min(top, v.y-v.h/2)
	}
	if math.IsInf(top, 1) {
		top = 0
	}
	for i := range g.v {
		v := &g.v[i]
		v.y = v.y - top + o.Padding
		if v.node >= 0 {
			v.y -= v.h / 2
		}
	}
}

// fit returns the y closest (least squares) to want with
// y[i] - y[i-1] >= seps[i]: isotonic regression (pool adjacent violators)
// after subtracting the cumulative separations.
func fit(want, seps []float64) []float64 {
	n := len(want)
	cum := make([]float64, n)
	for i := 1; i < n; i++ {
		cum[i] = cum[i-1] + seps[i]
	}
	type block struct {
		sum   float64
		count int
	}
	blocks := make([]block, 0, n)
	for i := range n {
		blocks = append(blocks, block{want[i] - cum[i], 1})
		for len(blocks) > 1 {
			a, b := blocks[len(blocks)-2], blocks[len(blocks)-1]
			if a.sum/float64(a.count) <= b.sum/float64(b.count) {
				break
			}
			blocks = blocks[:len(blocks)-2]
			blocks = append(blocks, block{a.sum + b.sum, a.count + b.count})
		}
	}
	out := make([]float64, 0, n)
	for _, b := range blocks {
		m := b.sum / float64(b.count)
		for range b.count {
			out = append(out, m+cum[len(out)])
		}
	}
	return out
}

// String describes the layout's layers, for tests and debugging.
func (r Result) String() string {
	byLayer := make([][]string, r.Layers)
	for _, n := range r.Nodes {
		for len(byLayer) <= n.Layer {
			byLayer = append(byLayer, nil)
		}
		byLayer[n.Layer] = append(byLayer[n.Layer], fmt.Sprintf("%d:%s", n.Order, n.ID))
	}
	parts := make([]string, len(byLayer))
	for i, l := range byLayer {
		slices.Sort(l)
		parts[i] = strings.Join(l, " ")
	}
	return strings.Join(parts, " | ")
}
