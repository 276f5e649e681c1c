//go:build e2e

package engine

import (
	"fmt"
	"testing"
)

// TestConcurrentPromotionsE2E: 20 and then 100 stages promoted at once into
// one repository all land, one commit each.
func TestConcurrentPromotionsE2E(t *testing.T) {
	for _, n := range []int{20, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) { promoteAtOnce(t, n) })
	}
}
