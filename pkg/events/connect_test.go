package events

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

// TestConnectWaitsForServer starts connecting before the server is up, as
// a service started beside its NATS cluster does.
func TestConnectWaitsForServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()

	type result struct {
		connected bool
		err       error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := Connect(context.Background(), NATSConfig{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), ConnectTimeout: time.Minute}, "test")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer nc.Close()
		done <- result{connected: nc.IsConnected()}
	}()
	time.Sleep(300 * time.Millisecond) // let it fail a few times first
	testenv.NATS(t, testenv.WithServerOptions(func(o *server.Options) { o.Port = port }))
	select {
	case r := <-done:
		if r.err != nil || !r.connected {
			t.Fatalf("Connect = %+v", r)
		}
	case <-time.After(time.Minute):
		t.Fatal("Connect did not return")
	}
}

func TestConnectGivesUp(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := Connect(ctx, NATSConfig{URL: "nats://user:s3cret@127.0.0.1:1"}, "test")
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error leaks the password: %v", err)
	}
	if _, err := Connect(ctx, NATSConfig{}, "test"); err == nil || !strings.Contains(err.Error(), "CARAVAN_NATS_URL") {
		t.Errorf("empty URL: %v", err)
	}
}
