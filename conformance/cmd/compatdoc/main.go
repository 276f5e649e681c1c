// Command compatdoc writes docs/kargo-compatibility.md from the
// conformance tables: compatdoc <output file>.
package main

import (
	"fmt"
	"os"

	"github.com/caravan-cd/caravan/conformance"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "compatdoc:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: compatdoc <output file>")
	}
	kinds, err := conformance.Kinds()
	if err != nil {
		return err
	}
	steps, err := conformance.Steps()
	if err != nil {
		return err
	}
	return os.WriteFile(args[0], conformance.Render(kinds, steps), 0o644)
}
