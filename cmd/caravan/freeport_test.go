package main

import (
	"net"
	"testing"
)

// freePort is a free loopback host:port (closed again: the process given
// it listens there). Untagged: the e2e suites and the RSS benchmark use it.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}
