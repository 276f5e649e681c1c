package testenv

import (
	"testing"
	"time"
)

// Eventually calls fn until it returns nil, every 50 ms for up to a minute
// (generous: right after a NATS restart a stream may still be recovering,
// an index reloading), and fails the test with fn's last error, after
// what, if it never does.
func Eventually(t testing.TB, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
