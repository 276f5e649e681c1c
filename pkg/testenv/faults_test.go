package testenv_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

// Through the proxy, matched publishes are upset at the rate asked; the
// others and everything the server sends pass untouched.
func TestNATSFaults(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	proxy := testenv.NATSFaults(t, srv.URL(), 0.3, "lossy.")
	nc, err := nats.Connect(proxy.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub := srv.Conn(t)
	lossy, err := sub.SubscribeSync("lossy.x")
	if err != nil {
		t.Fatal(err)
	}
	clean, err := sub.SubscribeSync("clean.x")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 300
	for range n {
		msg := nats.NewMsg("lossy.x")
		msg.Header.Set("k", "v") // HPUB
		msg.Data = []byte("payload")
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish("clean.x", []byte("payload")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // the delayed ones
	count := func(s *nats.Subscription) int {
		got := 0
		for {
			m, err := s.NextMsg(100 * time.Millisecond)
			if err != nil {
				return got
			}
			if string(m.Data) != "payload" {
				t.Fatalf("message changed: %q", m.Data)
			}
			got++
		}
	}
	if got := count(clean); got != n {
		t.Fatalf("%d clean messages arrived, want %d", got, n)
	}
	c := proxy.Counts()
	got := count(lossy)
	if c.Matched != n || c.Dropped == 0 || c.Duplicated == 0 || c.Delayed == 0 || int64(got) != n-c.Dropped+c.Duplicated {
		t.Fatalf("%d lossy messages arrived; %s", got, c)
	}
}
