package testenv

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// clusterTimeout bounds how long a JetStream cluster may take to elect a
// meta leader that sees every peer. Elections usually take under a second
// on this machine but sometimes 5–7 s.
const clusterTimeout = 15 * time.Second

// ClusterEnv is an in-process JetStream cluster on loopback, stopped at test
// cleanup. It is safe for concurrent use.
type ClusterEnv struct {
	mu    sync.Mutex
	name  string
	opts  []*server.Options
	nodes []*server.Server // nil while a node is stopped
}

// Cluster starts an n-node JetStream cluster (n is usually 3) and waits
// until a meta leader sees all n peers and every node is current, so that
// replicated streams can be placed at once. Even so, a JetStream API call
// right after start or failover may time out once: give such calls a short
// timeout and retry, as production code must.
func Cluster(t testing.TB, n int) *ClusterEnv {
	t.Helper()
	if n < 1 {
		t.Fatalf("testenv: cluster of %d nodes", n)
	}
	ports := freePorts(t, 2*n)
	clientPorts, routePorts := ports[:n], ports[n:]
	routes := make([]string, n)
	for i, p := range routePorts {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	name := "testenv-" + randomHex(4)
	c := &ClusterEnv{name: name, opts: make([]*server.Options, n), nodes: make([]*server.Server, n)}
	t.Cleanup(c.shutdown)
	for i := range n {
		c.opts[i] = &server.Options{
			ServerName: fmt.Sprintf("%s-n%d", name, i),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster: server.ClusterOpts{
				Name: name,
				Host: "127.0.0.1",
				Port: routePorts[i],
			},
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
	}
	// Start every node before waiting on any: a node is only ready for
	// JetStream once it has routes to the others.
	for i := range n {
		srv, err := server.NewServer(c.opts[i].Clone())
		if err != nil {
			t.Fatalf("testenv: cluster node %d: %v", i, err)
		}
		go srv.Start()
		c.nodes[i] = srv
	}
	for i, srv := range c.nodes {
		if !srv.ReadyForConnections(readyTimeout) {
			t.Fatalf("testenv: cluster node %d not ready for connections after %s", i, readyTimeout)
		}
	}
	if err := c.waitForLeader(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return c
}

// URLs are the client URLs of all nodes, running or not.
func (c *ClusterEnv) URLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	urls := make([]string, len(c.opts))
	for i, o := range c.opts {
		urls[i] = fmt.Sprintf("nats://%s:%d", o.Host, o.Port)
	}
	return urls
}

// Conn connects to the cluster (any node, failing over to the others) and
// closes the connection at test cleanup. Defaults as for Server.Conn.
func (c *ClusterEnv) Conn(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	return connect(t, strings.Join(c.URLs(), ","), opts)
}

// Servers returns the nodes in start order; a stopped node is nil.
func (c *ClusterEnv) Servers() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*server.Server(nil), c.nodes...)
}

// Leader returns the node that is the JetStream meta leader, or nil.
func (c *ClusterEnv) Leader() *server.Server {
	for _, srv := range c.Servers() {
		if srv != nil && srv.JetStreamIsLeader() {
			return srv
		}
	}
	return nil
}

// StreamLeader returns the node leading stream in account (server.DEFAULT_GLOBAL_ACCOUNT
// for connections without accounts), or nil if no running node leads it.
func (c *ClusterEnv) StreamLeader(account, stream string) *server.Server {
	for _, srv := range c.Servers() {
		if srv != nil && srv.JetStreamIsStreamLeader(account, stream) {
			return srv
		}
	}
	return nil
}

// Index returns the position of srv in Servers, or -1.
func (c *ClusterEnv) Index(srv *server.Server) int {
	for i, s := range c.Servers() {
		if s != nil && s == srv {
			return i
		}
	}
	return -1
}

// Stop shuts node i down and waits until it has stopped. Stopping a
// stopped node does nothing.
func (c *ClusterEnv) Stop(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stopServer(c.nodes[i])
	c.nodes[i] = nil
}

// Restart stops node i if it runs and starts it again with the same ports
// and store directory. It waits until the node accepts clients, not until
// it has caught up with the cluster: use WaitForLeader for that.
func (c *ClusterEnv) Restart(t testing.TB, i int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	stopServer(c.nodes[i])
	c.nodes[i] = nil
	srv, err := startServer(c.opts[i].Clone())
	if err != nil {
		t.Fatalf("testenv: restart cluster node %d: %v", i, err)
	}
	c.nodes[i] = srv
}

// WaitForLeader waits until a running node is the JetStream meta leader,
// sees every running node as a peer, and every running node has caught up
// with the meta log.
func (c *ClusterEnv) WaitForLeader(t testing.TB) {
	t.Helper()
	if err := c.waitForLeader(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

func (c *ClusterEnv) waitForLeader() error {
	deadline := time.Now().Add(clusterTimeout)
	for time.Now().Before(deadline) {
		if c.formed() {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("cluster %s: no JetStream leader with all peers current after %s", c.name, clusterTimeout)
}

func (c *ClusterEnv) formed() bool {
	var running []*server.Server
	for _, srv := range c.Servers() {
		if srv != nil {
			running = append(running, srv)
		}
	}
	leader := c.Leader()
	if leader == nil || len(leader.JetStreamClusterPeers()) != len(running) {
		return false
	}
	for _, srv := range running {
		if !srv.JetStreamIsCurrent() {
			return false
		}
	}
	return true
}

func (c *ClusterEnv) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, srv := range c.nodes {
		stopServer(srv)
		c.nodes[i] = nil
	}
}

// freePorts finds n distinct free loopback TCP ports by listening on :0 and
// closing again. Another process may take a port in between; that is rare
// enough for tests.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	ls := make([]net.Listener, n)
	// Hold all listeners open until every port is known, so the kernel
	// cannot hand out the same port twice.
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: find a free port: %v", err)
		}
		ls[i] = l
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}
