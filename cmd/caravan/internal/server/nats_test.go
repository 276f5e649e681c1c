package server_test

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// runServer runs caravan server on dataDir with natsAddr as
// CARAVAN_EMBEDDED_NATS_ADDR until the test ends.
func runServer(t *testing.T, dataDir, natsAddr string, ln net.Listener) (server.Info, *testenv.SyncBuffer) {
	t.Helper()
	cfg := testConfig(dataDir, ln)
	cfg.EmbeddedNATSAddr = natsAddr
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan server.Info, 1)
	go func() {
		done <- server.Run(ctx, cfg, server.Options{
			Logger:   slog.New(slog.NewTextHandler(logs, nil)),
			Listener: ln,
			Started:  func(i server.Info) { started <- i },
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server stopped with: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("server did not stop")
		}
	})
	select {
	case info := <-started:
		// Stopping a service halfway through its start is an error: let
		// every one finish starting first.
		deadline := time.Now().Add(60 * time.Second)
		for _, msg := range []string{"discovery running", "promoter running", "verifier running", "gateway listening"} {
			for !strings.Contains(logs.String(), msg) {
				if time.Now().After(deadline) {
					t.Fatalf("no %q in the log:\n%s", msg, logs)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		return info, logs
	case err := <-done:
		t.Fatalf("server stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server did not start")
	}
	return server.Info{}, nil
}

// listeningSockets are the inodes of the TCP sockets this process listens
// on (Linux: /proc/self/fd against /proc/self/net/tcp{,6}).
func listeningSockets(t *testing.T) map[string]bool {
	t.Helper()
	owned := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list this process's sockets: %v", err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			owned[strings.TrimSuffix(inode, "]")] = true
		}
	}
	out := map[string]bool{}
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st … inode: state 0A is LISTEN.
			if len(fields) > 9 && fields[3] == "0A" && owned[fields[9]] {
				out[fields[9]] = true
			}
		}
		_ = f.Close()
	}
	return out
}

// TestEmbeddedNATSDoesNotListen: under the default settings caravan server
// opens no TCP listener besides the API: no local process can reach NATS
// to read the streams or write a token record. The services work (the API
// is ready), and a client in the process connects in-process.
//
// Not parallel: it compares this process's listening sockets before and
// after the start.
func TestEmbeddedNATSDoesNotListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	before := listeningSockets(t)
	if len(before) == 0 {
		t.Fatal("found no listening socket, not even the API's: the /proc reading is broken")
	}
	dir := t.TempDir()
	info, logs := runServer(t, dir, "", ln)
	waitReady(t, "http://"+ln.Addr().String())
	for inode := range listeningSockets(t) {
		if !before[inode] {
			t.Errorf("caravan server opened a TCP listener (socket %s) with the default settings", inode)
		}
	}
	if info.NATSURL != "" || info.NATSNKeyFile != "" {
		t.Errorf("info advertises NATS at %q (nkey %q)", info.NATSURL, info.NATSNKeyFile)
	}
	if _, err := os.Stat(filepath.Join(dir, "nats-client.nk")); !os.IsNotExist(err) {
		t.Errorf("an NKey was generated without a listener: %v", err)
	}
	if !strings.Contains(logs.String(), "without a TCP listener") {
		t.Errorf("the log does not say NATS is in-process only:\n%s", logs)
	}
	nc, err := info.ConnectNATS()
	if err != nil {
		t.Fatalf("in-process client: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(context.Background(), events.StreamEvents); err != nil {
		t.Fatalf("in-process client sees no event stream: %v", err)
	}
}

// TestEmbeddedNATSListenerRequiresNKey: with CARAVAN_EMBEDDED_NATS_ADDR set,
// a raw client without credentials is refused, a wrong key is refused, and
// the NKey seed generated into the data dir (0600, named in the log) lets
// a client in.
func TestEmbeddedNATSListenerRequiresNKey(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	info, logs := runServer(t, dir, "127.0.0.1:-1", ln)
	waitReady(t, "http://"+ln.Addr().String())
	if info.NATSURL == "" || info.NATSNKeyFile != filepath.Join(dir, "nats-client.nk") {
		t.Fatalf("info: NATS at %q, nkey %q", info.NATSURL, info.NATSNKeyFile)
	}
	st, err := os.Stat(info.NATSNKeyFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("NKey seed file: %v %v", st, err)
	}
	for _, want := range []string{info.NATSNKeyFile, "CARAVAN_NATS_NKEY=", "nats --server " + info.NATSURL} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the start log does not say %q:\n%s", want, logs)
		}
	}

	if nc, err := nats.Connect(info.NATSURL, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a client without credentials connected")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("refused for another reason: %v", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	other := filepath.Join(t.TempDir(), "other.nk")
	if err := os.WriteFile(other, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if opt, err := nats.NkeyOptionFromSeed(other); err != nil {
		t.Fatal(err)
	} else if nc, err := nats.Connect(info.NATSURL, opt, nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a client with another NKey connected")
	}

	// A standalone service's settings: CARAVAN_NATS_URL and CARAVAN_NATS_NKEY.
	nc, err := events.Connect(context.Background(), events.NATSConfig{URL: info.NATSURL, NKeyFile: info.NATSNKeyFile, ConnectTimeout: 10 * time.Second}, "test")
	if err != nil {
		t.Fatalf("with the NKey: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(context.Background(), events.StreamEvents); err != nil {
		t.Fatalf("authenticated client sees no event stream: %v", err)
	}
}
