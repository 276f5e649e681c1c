// Command genperms writes the Helm chart's NATS permissions file from
// service.NATSRules: go generate ./service in pkg.
package main

import (
	"fmt"
	"os"

	"github.com/caravan-cd/caravan/pkg/service"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: genperms <output file>")
		os.Exit(2)
	}
	if err := os.WriteFile(os.Args[1], service.PermissionsYAML(), 0o644); err != nil { //nolint:gosec // a chart file, world-readable
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
