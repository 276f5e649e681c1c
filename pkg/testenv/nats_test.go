package testenv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

func TestNATSPublishSubscribe(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	nc := srv.Conn(t)

	sub, err := nc.SubscribeSync("hello")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("hello", []byte("world")); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(2 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data) != "world" {
		t.Fatalf("got %q, want %q", msg.Data, "world")
	}

	js := jetStream(t, nc)
	createStream(t, js, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}})
	publish(t, js, "events.a", "1")
	publish(t, js, "events.b", "2")
	if got := streamMsgs(t, js, "EVENTS"); got != 2 {
		t.Fatalf("stream has %d messages, want 2", got)
	}
}

func TestNATSRestartKeepsStream(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	url := srv.URL()
	nc := srv.Conn(t)
	js := jetStream(t, nc)
	createStream(t, js, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep.>"}, Storage: jetstream.FileStorage})
	for _, data := range []string{"a", "b", "c"} {
		publish(t, js, "keep.x", data)
	}

	srv.Restart(t)

	if srv.URL() != url {
		t.Fatalf("URL changed across restart: %s → %s", url, srv.URL())
	}
	// A fresh connection, and the old one once it has reconnected, both see
	// the stored messages.
	if got := streamMsgs(t, jetStream(t, srv.Conn(t)), "KEEP"); got != 3 {
		t.Fatalf("after restart the stream has %d messages, want 3", got)
	}
	waitFor(t, 5*time.Second, nc.IsConnected)
	publish(t, js, "keep.x", "d")
	if got := streamMsgs(t, js, "KEEP"); got != 4 {
		t.Fatalf("stream has %d messages, want 4", got)
	}
}

func TestNATSAtSharesStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first := testenv.NATSAt(t, dir)
	js := jetStream(t, first.Conn(t))
	createStream(t, js, jetstream.StreamConfig{Name: "SHARED", Subjects: []string{"shared"}})
	publish(t, js, "shared", "x")
	first.Shutdown()

	second := testenv.NATSAt(t, dir)
	if second.StoreDir() != dir {
		t.Fatalf("store dir %s, want %s", second.StoreDir(), dir)
	}
	if got := streamMsgs(t, jetStream(t, second.Conn(t)), "SHARED"); got != 1 {
		t.Fatalf("stream has %d messages, want 1", got)
	}
}

func TestCluster(t *testing.T) {
	t.Parallel()
	c := testenv.Cluster(t, 3)
	if got := len(c.URLs()); got != 3 {
		t.Fatalf("%d URLs, want 3", got)
	}
	js := jetStream(t, c.Conn(t))
	createStream(t, js, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	publish(t, js, "r3.a", "1")

	var leader *server.Server
	waitFor(t, 10*time.Second, func() bool {
		leader = c.StreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "R3")
		return leader != nil
	})
	i := c.Index(leader)
	if i < 0 {
		t.Fatal("stream leader is not a cluster node")
	}

	// Losing the stream leader elects another; the message survives.
	c.Stop(i)
	waitFor(t, 15*time.Second, func() bool {
		l := c.StreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, "R3")
		return l != nil && l != leader
	})
	publish(t, js, "r3.b", "2")
	c.Restart(t, i)
	c.WaitForLeader(t)
	if got := streamMsgs(t, js, "R3"); got != 2 {
		t.Fatalf("stream has %d messages, want 2", got)
	}
}

func jetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// createStream retries with a short per-call timeout: right after a
// cluster forms, the first JetStream API request can go unanswered.
func createStream(t *testing.T, js jetstream.JetStream, cfg jetstream.StreamConfig) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		_, err := js.CreateStream(ctx, cfg)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("create stream %s: %v", cfg.Name, err)
		}
	}
}

// publish retries with a short per-call timeout, as publishing during a
// failover needs; the message ID makes retries idempotent.
func publish(t *testing.T, js jetstream.JetStream, subject, data string) {
	t.Helper()
	id := subject + "/" + data
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := js.Publish(ctx, subject, []byte(data), jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || errors.Is(err, context.Canceled) {
			t.Fatalf("publish %s: %v", subject, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().State.Msgs
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
