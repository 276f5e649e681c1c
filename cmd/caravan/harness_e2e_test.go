//go:build e2e

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// The harness of the process-level suites (chaos, cluster faults, cluster
// benchmarks): the binaries, the OS processes and their logs, the service
// replicas as the Helm chart runs them, a 3-node nats-server cluster, the
// retrying API client, and the project pieces the scenarios share. Each
// *_e2e_test.go file keeps only its scenario.

// serviceNames are the standalone services, in start order.
var serviceNames = []string{"gateway", "discovery", "promoter", "verifier"}

// serviceBins records the one build of the caravan-<service> binaries,
// beside the shared caravan binary (see buildCaravan; TestMain removes
// them).
var serviceBins struct {
	once sync.Once
	out  []byte
	err  error
}

// buildBins builds caravan and caravan-<service> for every service, once
// for the whole package, and returns the folder holding them.
func buildBins(t testing.TB) string {
	t.Helper()
	bin, repoRoot := buildCaravan(t)
	dir := filepath.Dir(bin)
	serviceBins.once.Do(func() {
		for _, svc := range serviceNames {
			build := exec.Command("go", "build", "-o", filepath.Join(dir, "caravan-"+svc), "./services/"+svc+"/cmd/caravan-"+svc)
			build.Dir = repoRoot
			if serviceBins.out, serviceBins.err = build.CombinedOutput(); serviceBins.err != nil {
				serviceBins.err = fmt.Errorf("build caravan-%s: %w", svc, serviceBins.err)
				return
			}
		}
	})
	if serviceBins.err != nil {
		t.Fatalf("%v\n%s", serviceBins.err, serviceBins.out)
	}
	return dir
}

// toolPath builds (once) and returns a tool pinned under tools/.
func toolPath(t testing.TB, repoRoot, name string) string {
	t.Helper()
	out, err := exec.Command("bash", filepath.Join(repoRoot, "scripts", "tool.sh"), name).Output()
	if err != nil {
		t.Fatalf("scripts/tool.sh %s (make tools builds it): %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// waitFor polls cond every 200ms until it holds, failing after timeout.
func waitFor[T any](t testing.TB, timeout time.Duration, what string, cond func() (T, bool)) T {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if v, ok := cond(); ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitReadyz waits until GET <url>/readyz answers 200 on every one of urls.
func waitReadyz(t testing.TB, what string, urls []string) {
	t.Helper()
	waitFor(t, 2*time.Minute, what, func() (struct{}, bool) {
		for _, u := range urls {
			resp, err := http.Get(u + "/readyz")
			if err != nil {
				return struct{}{}, false
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return struct{}{}, false
			}
		}
		return struct{}{}, true
	})
}

// processes are the OS processes of one test or benchmark: each is
// stopped when it ends (the last started first), and the last lines of
// each one's output are logged if it failed.
type processes struct {
	t      testing.TB
	logDir string // every process's output is kept there too when set

	mu    sync.Mutex
	list  []*process
	files []*os.File // the log files in logDir, closed when t ends
}

// newProcesses returns an empty set whose processes are stopped when t
// ends.
func newProcesses(t testing.TB, logDir string) *processes {
	g := &processes{t: t, logDir: logDir}
	t.Cleanup(func() {
		g.stop()
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, p := range g.list {
			if t.Failed() {
				t.Logf("--- %s (last lines)\n%s", p.name, p.log.tail(40))
			}
		}
		for _, f := range g.files {
			_ = f.Close()
		}
	})
	return g
}

// add makes, without starting it, the process name running bin.
func (g *processes) add(name, bin string, args, env []string) *process {
	p := &process{name: name, bin: bin, args: args, env: env, log: &processLog{file: g.logFile(name)}}
	g.mu.Lock()
	g.list = append(g.list, p)
	g.mu.Unlock()
	return p
}

// logFile creates <logDir>/<name>.log, closed when t ends; nil without a
// logDir.
func (g *processes) logFile(name string) *os.File {
	if g.logDir == "" {
		return nil
	}
	f, err := os.Create(filepath.Join(g.logDir, name+".log"))
	if err != nil {
		g.t.Fatal(err)
	}
	g.mu.Lock()
	g.files = append(g.files, f)
	g.mu.Unlock()
	return f
}

// stop stops every process, the last started first.
func (g *processes) stop() {
	g.mu.Lock()
	list := slices.Clone(g.list)
	g.mu.Unlock()
	for _, p := range slices.Backward(list) {
		p.stop()
	}
}

// process is one OS process, killed and started again.
type process struct {
	name, bin string
	args      []string
	env       []string
	log       *processLog

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// start starts the process unless it runs.
func (p *process) start(t testing.TB) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = p.env, p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Errorf("start %s: %v", p.name, err)
		return
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	fmt.Fprintf(p.log, "=== started pid %d\n", cmd.Process.Pid)
}

// kill SIGKILLs the process (it may have died already).
func (p *process) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	fmt.Fprintf(p.log, "=== SIGKILL\n")
}

func (p *process) stop() { p.term() }

// term stops the process with SIGTERM (SIGKILL after 15 s) and reports its
// exit code and whether it stopped on its own; -1 when it was not running.
func (p *process) term() (code int, graceful bool) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return -1, false
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return cmd.ProcessState.ExitCode(), true
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return cmd.ProcessState.ExitCode(), false
	}
}

// processLog keeps a process's output (and copies it to file, if set).
type processLog struct {
	mu    sync.Mutex
	lines []string
	part  string
	file  *os.File
}

func (l *processLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		_, _ = l.file.Write(b)
	}
	s := l.part + string(b)
	lines := strings.Split(s, "\n")
	l.part = lines[len(lines)-1]
	l.lines = append(l.lines, lines[:len(lines)-1]...)
	if len(l.lines) > 5000 {
		l.lines = slices.Clone(l.lines[len(l.lines)-2000:])
	}
	return len(b), nil
}

func (l *processLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[max(0, len(l.lines)-n):], "\n")
}

// secretKey is a CARAVAN_SECRET_KEY made of 32 bytes b.
func secretKey(b byte) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32))
}

// baseSettings are what every Caravan process runs with in these suites:
// reconcile often, reach the loopback git server and web metrics (the
// egress policy refuses loopback by default), log at info.
var baseSettings = []string{
	"CARAVAN_RECONCILE_INTERVAL=5s",
	"CARAVAN_EGRESS_ALLOW=127.0.0.0/8",
	"CARAVAN_LOG_LEVEL=info",
}

// serviceSettings are what every replica of a service runs with besides
// its names and addresses: short leases and intervals, so that the work of
// a killed replica moves on within seconds.
var serviceSettings = map[string][]string{
	"discovery": {"CARAVAN_DISCOVERY_MIN_INTERVAL=1s", "CARAVAN_DISCOVERY_LEASE_TTL=6s"},
	"promoter":  {"CARAVAN_PROMOTION_LEASE_TTL=6s", "CARAVAN_HEALTH_INTERVAL=1m"},
	"verifier": {"CARAVAN_VERIFICATION_LEASE_TTL=6s",
		"CARAVAN_VERIFICATION_SCAN_INTERVAL=2s", "CARAVAN_VERIFICATION_HEALTH_POLL=500ms"},
}

// fleet is the replicas of the services, each a process run as the Helm
// chart runs it: named svc-N by CARAVAN_REPLICA_ID (the chart's POD_NAME),
// its own data directory and admin listener, gateways with an API
// listener and the admin token.
type fleet struct {
	t     testing.TB
	procs *processes
	bins  string // the folder holding caravan-<service>
	// environ is every replica's environment (os.Environ() first).
	environ []string
	// svcEnv is more environment for every replica of one service.
	svcEnv map[string][]string
	// natsURL, when set, gives the CARAVAN_NATS_URL of one replica (by
	// name); otherwise environ holds it.
	natsURL    func(replica string) string
	adminToken string

	services map[string][]*process
	admins   []string // admin listener base URLs
	gateways []string // API base URLs, one per gateway replica
}

// add starts one more replica of svc (named svc-N) and returns it.
func (f *fleet) add(svc string) *process {
	t := f.t
	if f.services == nil {
		f.services = map[string][]*process{}
	}
	name := fmt.Sprintf("%s-%d", svc, len(f.services[svc]))
	admin := freePort(t)
	f.admins = append(f.admins, "http://"+admin)
	env := append(slices.Clone(f.environ), "CARAVAN_REPLICA_ID="+name, "CARAVAN_ADMIN_ADDR="+admin, "CARAVAN_DATA_DIR="+t.TempDir())
	if f.natsURL != nil {
		env = append(env, "CARAVAN_NATS_URL="+f.natsURL(name))
	}
	if svc == "gateway" {
		addr := freePort(t)
		f.gateways = append(f.gateways, "http://"+addr)
		env = append(env, "CARAVAN_HTTP_ADDR="+addr, "CARAVAN_ADMIN_TOKEN="+f.adminToken)
	}
	env = append(append(env, serviceSettings[svc]...), f.svcEnv[svc]...)
	p := f.procs.add(name, filepath.Join(f.bins, "caravan-"+svc), nil, env)
	f.services[svc] = append(f.services[svc], p)
	p.start(t)
	return p
}

// waitReady waits until every replica's admin listener says ready.
func (f *fleet) waitReady() {
	waitReadyz(f.t, "every replica ready on its admin listener", f.admins)
}

// all is every replica, in start order.
func (f *fleet) all() []*process {
	var out []*process
	for _, svc := range serviceNames {
		out = append(out, f.services[svc]...)
	}
	return out
}

// clusterAdminToken is the gateways' admin token in a cluster run.
const clusterAdminToken = "cluster-admin-token"

// clusterOptions shape a cluster.
type clusterOptions struct {
	// promoters is how many promoter replicas start (default 2).
	promoters int
	// otlp is an OTLP/HTTP endpoint (host:port) every service exports its
	// spans to; empty: no tracing.
	otlp string
	// logDir keeps every process's log there when set.
	logDir string
}

// cluster is Caravan as the Helm chart runs it, with real processes: a
// 3-node nats-server cluster (three OS processes, streams and buckets with
// 3 replicas declared by caravan setup) and replicas of each service as
// separate processes (see fleet). Every process is stopped by PID when the
// test ends.
type cluster struct {
	*fleet
	nodes   []*process
	natsURL string
	env     *service.Env // the test's own view of the cluster
	api     *apiClient
}

// startCluster builds caravan and the services, starts the nats-server
// nodes, runs caravan setup and starts the services (two replicas each,
// opts.promoters promoters), and waits until every replica is ready.
func startCluster(t testing.TB, opts clusterOptions) *cluster {
	t.Helper()
	if opts.promoters == 0 {
		opts.promoters = 2
	}
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	natsBin := toolPath(t, repoRoot, "nats-server")
	procs := newProcesses(t, opts.logDir)
	c := &cluster{fleet: &fleet{t: t, procs: procs, bins: buildBins(t), adminToken: clusterAdminToken}}
	c.nodes, c.natsURL = startNATSCluster(t, procs, natsBin)
	secret := secretKey(7)
	c.environ = append(append(os.Environ(), "CARAVAN_NATS_URL="+c.natsURL, "CARAVAN_JS_REPLICAS=3", "CARAVAN_SECRET_KEY="+secret), baseSettings...)
	if opts.otlp != "" {
		c.environ = append(c.environ,
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+opts.otlp,
			"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
			"OTEL_BSP_SCHEDULE_DELAY=500",
			"OTEL_SDK_DISABLED=", "OTEL_TRACES_EXPORTER=", "OTEL_SERVICE_NAME=")
	}

	// caravan setup waits for the cluster to form, then declares the
	// layout with 3 replicas.
	setup := exec.Command(filepath.Join(c.bins, "caravan"), "setup", "--timeout", "2m")
	setup.Env = c.environ
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("caravan setup: %v\n%s", err, out)
	}

	// The test's own view of the cluster.
	nc, err := nats.Connect(c.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	streams := events.DefaultStreamConfig()
	streams.Replicas = 3
	c.env, err = service.Provision(t.Context(), nc, "cluster-test", service.Common{
		DataDir: t.TempDir(), SecretKey: secret, StreamConfig: streams,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info := streamInfo(t, c.env.JS); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream %s: %d replicas, cluster %+v; want 3 on 3 nodes", events.StreamEvents, info.Config.Replicas, info.Cluster)
	}

	// The services, as the chart runs them.
	for _, svc := range serviceNames {
		n := 2
		if svc == "promoter" {
			n = opts.promoters
		}
		for range n {
			c.add(svc)
		}
	}
	c.waitReady()
	c.api = &apiClient{t: t, urls: c.gateways, token: clusterAdminToken}
	c.api.waitReady()
	return c
}

// startNATSCluster starts three nats-server processes (n0, n1, n2) routed
// to each other, waits until each takes client connections, and returns
// them and the client URL naming all three.
func startNATSCluster(t testing.TB, procs *processes, natsBin string) ([]*process, string) {
	t.Helper()
	var clients, routes []string
	for range 3 {
		clients = append(clients, "nats://"+freePort(t))
		routes = append(routes, "nats://"+freePort(t))
	}
	nodes := make([]*process, 3)
	for i := range nodes {
		name := fmt.Sprintf("n%d", i)
		host, port, _ := strings.Cut(strings.TrimPrefix(clients[i], "nats://"), ":")
		nodes[i] = procs.add("nats-"+name, natsBin, []string{
			"--name", name, "--addr", host, "--port", port, "--jetstream", "--store_dir", t.TempDir(),
			"--cluster_name", "caravan", "--cluster", routes[i], "--routes", strings.Join(routes, ","),
		}, os.Environ())
		nodes[i].start(t)
	}
	// Each node must take client connections before the services come. A
	// nats-server that hangs while it starts (seen once on a loaded 2-core
	// machine: 2.15.2 stopped after "Creating JetStream metadata
	// controller", never listened, ignored SIGTERM) is killed and started
	// again, and the test says so: that is the server's start, not what
	// this test checks.
	for i, node := range nodes {
		for attempt := 1; ; attempt++ {
			nc, err := nats.Connect(clients[i], nats.Timeout(time.Second), nats.RetryOnFailedConnect(true),
				nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
			if err == nil {
				deadline := time.Now().Add(30 * time.Second)
				for !nc.IsConnected() && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				up := nc.IsConnected()
				nc.Close()
				if up {
					break
				}
			}
			if attempt == 3 {
				t.Fatalf("nats-server %s took no client connection after %d starts (last error %v)", node.name, attempt, err)
			}
			t.Logf("nats-server %s took no client connection within 30 s: killed and started again", node.name)
			node.kill()
			node.start(t)
		}
	}
	return nodes, strings.Join(clients, ",")
}

// stop stops every process of the cluster (services first, by PID).
func (c *cluster) stop() { c.procs.stop() }

// leaderNode is the nats-server node leading the events stream.
func (c *cluster) leaderNode() *process {
	leader := streamInfo(c.t, c.env.JS).Cluster.Leader
	for i, n := range c.nodes {
		if fmt.Sprintf("n%d", i) == leader {
			return n
		}
	}
	c.t.Fatalf("stream leader %q is none of the nodes", leader)
	return nil
}

// waitNodesCurrent waits until every replica of the events stream is
// current again (after a node came back).
func (c *cluster) waitNodesCurrent() {
	waitFor(c.t, 2*time.Minute, "every node current again", func() (struct{}, bool) {
		info := streamInfo(c.t, c.env.JS)
		if len(info.Cluster.Replicas) != 2 {
			return struct{}{}, false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current {
				return struct{}{}, false
			}
		}
		return struct{}{}, true
	})
}

func streamInfo(t testing.TB, js jetstream.JetStream) *jetstream.StreamInfo {
	t.Helper()
	return waitFor(t, time.Minute, "stream info", func() (*jetstream.StreamInfo, bool) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, events.StreamEvents)
		if err != nil {
			return nil, false
		}
		info, err := s.Info(ctx)
		return info, err == nil && info.Cluster != nil && info.Cluster.Leader != ""
	})
}

// apiClient calls the gateways, any of which may be down: a request is
// retried (with its Idempotency-Key) on another until it is answered.
type apiClient struct {
	t     testing.TB
	urls  []string
	token string
}

func (a *apiClient) waitReady() { waitReadyz(a.t, "the gateways ready", a.urls) }

// do sends the request until a gateway answers below 500 and returns the
// status and body.
func (a *apiClient) do(method, path, contentType, key string, body []byte) (int, []byte) {
	a.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequest(method, a.urls[attempt%len(a.urls)]+path, bytes.NewReader(body))
		if err != nil {
			a.t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+a.token)
		req.Header.Set("Content-Type", contentType)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		client := http.Client{Timeout: 30 * time.Second}
		resp, err := client.Do(req)
		if err == nil {
			out, rerr := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			// 409: the same key still running on a gateway that died.
			if rerr == nil && resp.StatusCode < 500 && resp.StatusCode != http.StatusConflict {
				return resp.StatusCode, out
			}
			err = fmt.Errorf("%d %s", resp.StatusCode, out)
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%s %s: %v", method, path, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (a *apiClient) apply(manifests string) {
	a.t.Helper()
	key := fmt.Sprintf("apply-%x", sha256.Sum256([]byte(manifests))) // one per body
	if st, out := a.do("POST", "/v1/resources", "application/yaml", key, []byte(manifests)); st != http.StatusOK {
		a.t.Fatalf("apply: %d %s", st, out)
	}
}

// promote promotes freight into stage of project.
func (a *apiClient) promote(project, stage, freight string) {
	a.t.Helper()
	body, _ := json.Marshal(map[string]string{"freight": freight})
	if st, out := a.do("POST", "/v1/projects/"+project+"/stages/"+stage+"/promotions", "application/json", "promote-"+stage+"-"+freight, body); st != http.StatusCreated {
		a.t.Fatalf("promote %s into %s: %d %s", freight, stage, st, out)
	}
}

// registryWebhook applies head (a project with one registry webhook
// receiver whose secret is secret), then starts the Debian docker-registry
// (testenv.StartDockerRegistry) notifying that receiver on the API's first
// gateway of every push, its log kept in procs' logDir if set.
func registryWebhook(t testing.TB, procs *processes, api *apiClient, project, head, secret string) *testenv.DockerRegistry {
	t.Helper()
	api.apply(head)
	st, body := api.do(http.MethodGet, "/v1/projects/"+project+"/projectconfig", "", "", nil)
	var pc model.ProjectConfig
	if err := json.Unmarshal(body, &pc); st != http.StatusOK || err != nil || len(pc.Status.WebhookReceivers) != 1 || pc.Status.WebhookReceivers[0].Path == "" {
		t.Fatalf("projectconfig: %d %s (%v)", st, body, err)
	}
	opts := []testenv.DockerRegistryOption{
		testenv.WithNotifications(api.urls[0]+pc.Status.WebhookReceivers[0].Path, secret),
		testenv.WithLogLevel("error"),
	}
	if f := procs.logFile("docker-registry"); f != nil {
		opts = append(opts, testenv.WithLogOutput(f))
	}
	return testenv.StartDockerRegistry(t, opts...)
}

// pushRandom pushes a new random image to registry (host:port) as repo:tag.
func pushRandom(t testing.TB, registry, repo, tag string) {
	img, err := random.Image(256, 1)
	if err != nil {
		t.Error(err)
		return
	}
	ref, err := name.NewTag(registry+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Error(err)
		return
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Errorf("push %s: %v", ref, err)
	}
}

// healthApp is the application the verifications measure: it answers
// {"status":"ok"}. It returns its base URL.
func healthApp(t testing.TB) string {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	t.Cleanup(app.Close)
	return app.URL
}

// seedRepos creates each repository on git, main holding a values.yaml
// with image.tag "none".
func seedRepos(t testing.TB, git *testenv.Git, repos ...string) {
	t.Helper()
	for _, r := range repos {
		git.CreateRepo(t, r)
		git.Seed(t, r, map[string]string{"values.yaml": "image:\n  tag: none\n"}, "seed")
	}
}

// commitsOf counts the "promote <promotion>" commits on main of each repo.
func commitsOf(t testing.TB, git *testenv.Git, repos ...string) map[string]int {
	commits := map[string]int{}
	for _, r := range repos {
		for _, subject := range strings.Split(git.Run(t, git.Path(r), "log", "--format=%s", "main"), "\n") {
			if name, ok := strings.CutPrefix(subject, "promote "); ok {
				commits[name]++
			}
		}
	}
	return commits
}

// freightOf lists the project's freight from warehouse.
func freightOf(t testing.TB, env *service.Env, project, warehouse string) []model.Freight {
	items, _, err := state.List[model.Freight](t.Context(), env.Store.KV(state.Freight), state.Prefix(project), 0, "")
	if err != nil {
		t.Logf("list freight: %v", err)
		return nil
	}
	var out []model.Freight
	for _, it := range items {
		if it.Value.Origin.Name == warehouse {
			out = append(out, it.Value)
		}
	}
	return out
}

// waitFreight waits for the freight of the project's warehouse holding
// tag and returns its name.
func waitFreight(t testing.TB, env *service.Env, project, warehouse, tag string) string {
	t.Helper()
	return waitFor(t, 3*time.Minute, "freight of "+warehouse+":"+tag, func() (string, bool) {
		for _, f := range freightOf(t, env, project, warehouse) {
			if len(f.Images) == 1 && f.Images[0].Tag == tag {
				return f.Name, true
			}
		}
		return "", false
	})
}

// promotionsOf lists the project's promotions.
func promotionsOf(t testing.TB, env *service.Env, project string) []model.Promotion {
	t.Helper()
	items, _, err := state.List[model.Promotion](t.Context(), env.Store.KV(state.Promotions), state.Prefix(project), 0, "")
	if err != nil {
		t.Logf("list promotions: %v", err)
		return nil
	}
	out := make([]model.Promotion, len(items))
	for i, it := range items {
		out[i] = it.Value
	}
	return out
}

// The project pieces the scenarios share, as YAML documents (each
// starting with ---).

// webhookProject is the project, a Secret holding secret, and its
// ProjectConfig: a registry webhook receiver with that secret and
// auto-promotion into each of autoStages.
func webhookProject(project, secret string, autoStages ...string) string {
	s := fmt.Sprintf(`---
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: %[1]s
---
apiVersion: v1
kind: Secret
metadata:
  name: registry-webhook
  namespace: %[1]s
  labels:
    kargo.akuity.io/cred-type: generic
stringData:
  secret: %[2]s
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata:
  name: %[1]s
  namespace: %[1]s
spec:
  webhookReceivers:
  - name: registry
    registry:
      secretRef:
        name: registry-webhook
  promotionPolicies:
`, project, secret)
	for _, st := range autoStages {
		s += "  - stage: " + st + "\n    autoPromotionEnabled: true\n"
	}
	return s
}

// warehouseYAML is the Warehouse name of ns subscribed to image, SemVer
// within constraint (none when empty), discovering every interval.
func warehouseYAML(ns, name, interval, image, constraint string, limit int) string {
	if constraint != "" {
		constraint = fmt.Sprintf("\n      constraint: %q", constraint)
	}
	return fmt.Sprintf(`---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: %s
  namespace: %s
spec:
  interval: %s
  freightCreationPolicy: Automatic
  subscriptions:
  - image:
      repoURL: %s
      imageSelectionStrategy: SemVer%s
      discoveryLimit: %d
`, name, ns, interval, image, constraint, limit)
}

// smokeTemplate is the AnalysisTemplate "smoke" of ns: appURL/healthz
// says "ok", twice, 200 ms apart.
func smokeTemplate(ns, appURL string) string {
	return fmt.Sprintf(`---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: smoke
  namespace: %s
spec:
  metrics:
  - name: up
    count: 2
    interval: 200ms
    successCondition: result == "ok"
    provider:
      web:
        url: %s/healthz
        jsonPath: "{$.status}"
`, ns, appURL)
}

// setTagSteps are promotion steps that clone main of repoURL, write the
// tag of image into values.yaml and push one commit "promote
// <promotion>".
func setTagSteps(repoURL, image string) string {
	return fmt.Sprintf(`- uses: git-clone
  config:
    repoURL: %s
    checkout:
    - branch: main
      path: ./src
- uses: yaml-update
  config:
    path: ./src/values.yaml
    updates:
    - key: image.tag
      value: ${{ imageFrom("%s").Tag }}
- uses: git-commit
  config:
    path: ./src
    message: promote ${{ ctx.promotion }}
- uses: git-push
  config:
    path: ./src
`, repoURL, image)
}

// setTagTask is the PromotionTask "set-tag" of ns: setTagSteps on its var
// repoURL.
func setTagTask(ns, image string) string {
	return fmt.Sprintf(`---
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionTask
metadata:
  name: set-tag
  namespace: %s
spec:
  vars:
  - name: repoURL
  steps:
`, ns) + indent(setTagSteps("${{ vars.repoURL }}", image), "  ")
}

// stageYAML is the Stage name of ns requesting freight of warehouse app
// from sources (a YAML line: "direct: true", "stages: [dev]"), promoted by
// steps and, if verified, verified by smoke.
func stageYAML(ns, name, sources, steps string, verified bool) string {
	s := fmt.Sprintf(`---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: %s
  namespace: %s
spec:
  requestedFreight:
  - origin:
      kind: Warehouse
      name: app
    sources:
      %s
  promotionTemplate:
    spec:
      steps:
`, name, ns, sources) + indent(steps, "      ")
	if verified {
		s += "  verification:\n    analysisTemplates:\n    - name: smoke\n"
	}
	return s
}

// taskStage is stageYAML promoted by set-tag into repoURL, verified.
func taskStage(ns, name, sources, repoURL string) string {
	return stageYAML(ns, name, sources, "- task:\n    name: set-tag\n  vars:\n  - name: repoURL\n    value: "+repoURL+"\n", true)
}

// indent puts prefix before every line of s.
func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "")
}
