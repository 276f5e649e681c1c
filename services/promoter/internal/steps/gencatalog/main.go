// Command gencatalog writes pkg/model's StepCatalog from the promoter's
// step registry: gencatalog <file>.
package main

import (
	"fmt"
	"os"

	"github.com/caravan-cd/caravan/services/promoter/internal/steps"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gencatalog <file>")
		os.Exit(2)
	}
	src, err := steps.CatalogSource(steps.Builtins())
	if err == nil {
		err = os.WriteFile(os.Args[1], src, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gencatalog:", err)
		os.Exit(1)
	}
}
