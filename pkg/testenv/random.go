package testenv

import (
	"crypto/rand"
	"encoding/hex"
)

// randomHex returns 2n random hex digits, for names that must not collide
// between tests running in parallel.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
