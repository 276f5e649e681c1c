package testenv

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// readyTimeout bounds how long a single nats-server may take to accept
// client connections after Start.
const readyTimeout = 10 * time.Second

// Server is an in-process nats-server with JetStream enabled, stopped at
// test cleanup. It is safe for concurrent use.
type Server struct {
	mu   sync.Mutex
	opts *server.Options
	srv  *server.Server
}

// NATSOption changes the options of a server started by NATS.
type NATSOption func(*server.Options)

// WithStoreDir makes the server keep JetStream data in dir instead of a
// fresh t.TempDir(), so two servers started one after another can share it.
func WithStoreDir(dir string) NATSOption {
	return func(o *server.Options) { o.StoreDir = dir }
}

// WithServerOptions lets a test change any server option (limits, accounts,
// a JetStream domain) before the server starts.
func WithServerOptions(fn func(*server.Options)) NATSOption {
	return fn
}

// NATS starts a single nats-server with JetStream on a random loopback port
// and a fresh store directory, and shuts it down at test cleanup.
func NATS(t testing.TB, opts ...NATSOption) *Server {
	t.Helper()
	o := &server.Options{
		ServerName: "testenv",
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
	}
	for _, opt := range opts {
		opt(o)
	}
	srv, err := startServer(o)
	if err != nil {
		t.Fatalf("testenv: start nats-server: %v", err)
	}
	// Pin the port the server picked so Restart comes back on the same URL.
	o.Port = srv.Addr().(*net.TCPAddr).Port
	s := &Server{opts: o, srv: srv}
	t.Cleanup(s.Shutdown)
	return s
}

// NATSAt is NATS with the JetStream store kept in storeDir.
func NATSAt(t testing.TB, storeDir string) *Server {
	t.Helper()
	return NATS(t, WithStoreDir(storeDir))
}

// URL is the client URL, e.g. nats://127.0.0.1:4222. It stays the same
// across Restart.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("nats://%s:%d", s.opts.Host, s.opts.Port)
}

// StoreDir is the directory holding the server's JetStream data.
func (s *Server) StoreDir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.StoreDir
}

// Unwrap returns the running nats-server, for assertions on its state. After
// Restart it is a different value.
func (s *Server) Unwrap() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Conn connects to the server and closes the connection at test cleanup.
// The connection reconnects forever (so it survives Restart) and drops
// asynchronous errors instead of printing them; opts override both.
func (s *Server) Conn(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	return connect(t, s.URL(), opts)
}

// Restart shuts the server down and starts it again on the same port with
// the same store directory, as a restart of a real deployment would.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	stopServer(s.srv)
	srv, err := startServer(s.opts.Clone())
	if err != nil {
		t.Fatalf("testenv: restart nats-server: %v", err)
	}
	s.srv = srv
}

// Shutdown stops the server and waits until it has stopped. It is safe to
// call more than once; Restart starts it again.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	stopServer(s.srv)
}

// connect dials url with test-friendly defaults followed by opts.
func connect(t testing.TB, url string, opts []nats.Option) *nats.Conn {
	t.Helper()
	all := append([]nats.Option{
		nats.Name(t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	}, opts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		t.Fatalf("testenv: connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startServer starts a nats-server with o and waits until it accepts
// client connections.
func startServer(o *server.Options) (*server.Server, error) {
	srv, err := server.NewServer(o)
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		stopServer(srv)
		return nil, fmt.Errorf("not ready for connections after %s", readyTimeout)
	}
	return srv, nil
}

// stopServer shuts srv down and waits for it; a nil or stopped server is
// left alone.
func stopServer(srv *server.Server) {
	if srv == nil {
		return
	}
	srv.Shutdown()
	srv.WaitForShutdown()
}
