package layout

import "fmt"

// Generate returns a pipeline of n stages fed by warehouses wh-0…wh-(w-1)
// for tests and benchmarks: stage i takes freight from one or two earlier
// stages (fan-out and fan-in) or from a warehouse.
func Generate(n, w int) ([]Node, []Edge) {
	nodes := make([]Node, 0, n+w)
	var edges []Edge
	for i := range w {
		nodes = append(nodes, Node{ID: fmt.Sprintf("wh-%d", i), Width: 200, Height: 60})
	}
	for i := range n {
		id := fmt.Sprintf("stage-%d", i)
		nodes = append(nodes, Node{ID: id, Width: 240, Height: 120})
		switch {
		case i < w:
			edges = append(edges, Edge{fmt.Sprintf("wh-%d", i%w), id})
		case i%7 == 0:
			edges = append(edges, Edge{fmt.Sprintf("stage-%d", i/2), id}, Edge{fmt.Sprintf("stage-%d", i/3), id})
		default:
			edges = append(edges, Edge{fmt.Sprintf("stage-%d", (i-1)/2), id})
		}
	}
	return nodes, edges
}
