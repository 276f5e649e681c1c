//go:build e2e

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// clusterStages are the stages of the cluster run's "chaos" project:
// auto-* auto-promoted, manual-* promoted through the API.
var clusterStages = []string{"auto-00", "manual-01", "auto-02", "manual-03"}

// clusterAdminToken is the gateways' admin token in a cluster run.
const clusterAdminToken = "cluster-admin-token"

// clusterServices are the services a cluster runs, in start order.
var clusterServices = []string{"gateway", "discovery", "promoter", "verifier"}

// replicaEnv names a replica of svc by CARAVAN_REPLICA_ID, as the Helm
// chart does through POD_NAME.
func replicaEnv(_, id string) []string {
	return []string{"CARAVAN_REPLICA_ID=" + id}
}

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
// separate processes, each with its admin listener. Every process is
// stopped by PID when the test ends.
type cluster struct {
	t        testing.TB
	bins     string
	common   []string // every service's environment
	nodes    []*chaosProc
	clients  []string // the nodes' client URLs
	natsURL  string
	procs    []*chaosProc
	services map[string][]*chaosProc
	admins   []string // admin listener base URLs
	gateways []string // API base URLs, one per gateway replica
	logDir   string
	env      *service.Env // the test's own view of the cluster
	api      *chaosAPI
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
	c := &cluster{t: t, bins: t.TempDir(), services: map[string][]*chaosProc{}, logDir: opts.logDir}
	build := func(out, pkg string) {
		cmd := exec.Command("go", "build", "-o", filepath.Join(c.bins, out), pkg)
		cmd.Dir = repoRoot
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", out, err, b)
		}
	}
	build("caravan", "./cmd/caravan")
	for _, svc := range clusterServices {
		build("caravan-"+svc, "./services/"+svc+"/cmd/caravan-"+svc)
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			p.stop()
		}
		if t.Failed() {
			for _, p := range c.procs {
				t.Logf("--- %s (last lines)\n%s", p.name, p.log.tail(30))
			}
		}
	})

	// The cluster: three nats-server processes routed to each other.
	var routes []string
	for range 3 {
		c.clients = append(c.clients, "nats://"+freePort(t))
		routes = append(routes, "nats://"+freePort(t))
	}
	c.nodes = make([]*chaosProc, 3)
	for i := range c.nodes {
		name := fmt.Sprintf("n%d", i)
		host, port, _ := strings.Cut(strings.TrimPrefix(c.clients[i], "nats://"), ":")
		c.nodes[i] = c.newProc("nats-"+name, natsBin, []string{
			"--name", name, "--addr", host, "--port", port, "--jetstream", "--store_dir", t.TempDir(),
			"--cluster_name", "caravan", "--cluster", routes[i], "--routes", strings.Join(routes, ","),
		}, os.Environ())
		c.nodes[i].start(t)
	}
	// Each node must take client connections before the services come. A
	// nats-server that hangs while it starts (seen once on a loaded 2-core
	// machine: 2.15.2 stopped after "Creating JetStream metadata
	// controller", never listened, ignored SIGTERM) is killed and started
	// again, and the test says so: that is the server's start, not what
	// this test checks.
	for i, node := range c.nodes {
		for attempt := 1; ; attempt++ {
			nc, err := nats.Connect(c.clients[i], nats.Timeout(time.Second), nats.RetryOnFailedConnect(true),
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
	c.natsURL = strings.Join(c.clients, ",")
	secretKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	c.common = append(os.Environ(),
		"CARAVAN_NATS_URL="+c.natsURL,
		"CARAVAN_JS_REPLICAS=3",
		"CARAVAN_SECRET_KEY="+secretKey,
		"CARAVAN_RECONCILE_INTERVAL=5s",
		"CARAVAN_EGRESS_ALLOW=127.0.0.0/8",
		"CARAVAN_LOG_LEVEL=info",
	)
	if opts.otlp != "" {
		c.common = append(c.common,
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+opts.otlp,
			"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
			"OTEL_BSP_SCHEDULE_DELAY=500",
			"OTEL_SDK_DISABLED=", "OTEL_TRACES_EXPORTER=", "OTEL_SERVICE_NAME=")
	}

	// caravan setup waits for the cluster to form, then declares the
	// layout with 3 replicas.
	setup := exec.Command(filepath.Join(c.bins, "caravan"), "setup", "--timeout", "2m")
	setup.Env = c.common
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
		DataDir: t.TempDir(), SecretKey: secretKey, StreamConfig: streams,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info := streamInfo(t, c.env.JS); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream %s: %d replicas, cluster %+v; want 3 on 3 nodes", events.StreamEvents, info.Config.Replicas, info.Cluster)
	}

	// The services, as the chart runs them.
	for _, svc := range clusterServices {
		n := 2
		if svc == "promoter" {
			n = opts.promoters
		}
		for range n {
			c.addReplica(svc)
		}
	}
	c.waitReady()
	c.api = &chaosAPI{t: t, urls: c.gateways, token: clusterAdminToken}
	c.api.waitReady()
	return c
}

// newProc makes (without starting) a process the cluster stops at the end.
func (c *cluster) newProc(name, bin string, args, env []string) *chaosProc {
	p := &chaosProc{name: name, bin: bin, args: args, env: env, log: &chaosLog{}}
	if c.logDir != "" {
		f, err := os.Create(filepath.Join(c.logDir, name+".log"))
		if err != nil {
			c.t.Fatal(err)
		}
		c.t.Cleanup(func() { _ = f.Close() })
		p.log.file = f
	}
	c.procs = append(c.procs, p)
	return p
}

// addReplica starts one more replica of svc (named svc-N) and returns it.
func (c *cluster) addReplica(svc string) *chaosProc {
	t := c.t
	name := fmt.Sprintf("%s-%d", svc, len(c.services[svc]))
	admin := freePort(t)
	c.admins = append(c.admins, "http://"+admin)
	extra := append([]string{"CARAVAN_ADMIN_ADDR=" + admin, "CARAVAN_DATA_DIR=" + t.TempDir()}, replicaEnv(svc, name)...)
	switch svc {
	case "gateway":
		addr := freePort(t)
		c.gateways = append(c.gateways, "http://"+addr)
		extra = append(extra, "CARAVAN_HTTP_ADDR="+addr, "CARAVAN_ADMIN_TOKEN="+clusterAdminToken)
	case "discovery":
		extra = append(extra, "CARAVAN_DISCOVERY_MIN_INTERVAL=1s", "CARAVAN_DISCOVERY_LEASE_TTL=6s")
	case "promoter":
		extra = append(extra, "CARAVAN_PROMOTION_LEASE_TTL=6s", "CARAVAN_HEALTH_INTERVAL=1m")
	case "verifier":
		extra = append(extra, "CARAVAN_VERIFICATION_LEASE_TTL=6s",
			"CARAVAN_VERIFICATION_SCAN_INTERVAL=2s", "CARAVAN_VERIFICATION_HEALTH_POLL=500ms")
	}
	p := c.newProc(name, filepath.Join(c.bins, "caravan-"+svc), nil, append(append([]string(nil), c.common...), extra...))
	c.services[svc] = append(c.services[svc], p)
	p.start(t)
	return p
}

// stop stops every process of the cluster (services first, by PID).
func (c *cluster) stop() {
	for _, p := range slices.Backward(c.procs) {
		p.stop()
	}
}

// waitReady waits until every replica's admin listener says ready.
func (c *cluster) waitReady() {
	waitFor(c.t, 2*time.Minute, "every replica ready on its admin listener", func() (struct{}, bool) {
		for _, a := range c.admins {
			resp, err := http.Get(a + "/readyz")
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

// leaderNode is the nats-server node leading the events stream.
func (c *cluster) leaderNode() *chaosProc {
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

// commits counts the "promote <promotion>" commits on main of each repo.
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

// TestE2EClusterFaults runs Caravan as the Helm chart runs it (see
// cluster) with a Jaeger and the Debian docker-registry notifying a
// gateway replica, and puts it through each fault on one shared cluster:
//
//   - pipeline: a push to docker-registry reaches a gateway as a webhook,
//     becomes freight, is auto-promoted into dev (one commit), verified,
//     auto-promoted into staging, and promoted into prod by
//     `caravan promote --wait`; Jaeger holds one trace spanning gateway,
//     discovery, promoter and verifier;
//   - promoter: freight promoted through four stages while the node leading
//     the event stream, a promoter replica (mid-promotion) and a discovery
//     replica are SIGKILLed;
//   - burst: 200 pushes to docker-registry while the discovery replica
//     holding the warehouse's lease is SIGKILLed and the gateway serving an
//     SSE client is restarted (the client resumes with Last-Event-ID);
//   - leader: the node leading the event stream SIGKILLed with 1,000
//     events in flight.
//
// Each is counted: nothing lost, nothing done twice. At the end every
// event of the project reached the SSE client exactly once, and every
// service stops on SIGTERM with exit code 0.
func TestE2EClusterFaults(t *testing.T) {
	otlp, query := startJaeger(t)
	c := startCluster(t, clusterOptions{otlp: otlp, logDir: os.Getenv("CARAVAN_CLUSTER_LOGS")})
	for _, a := range c.admins {
		if st := getStatus(t, a+"/healthz"); st != http.StatusOK {
			t.Errorf("%s/healthz: %d", a, st)
		}
	}
	if body := getBody(t, c.admins[len(c.admins)-1]+"/metrics"); !strings.Contains(body, "go_goroutines") {
		t.Errorf("verifier /metrics lacks the Go collector:\n%.500s", body)
	}
	start := time.Now()
	git := testenv.GitServer(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	defer app.Close()

	// The "pipe" project: docker-registry notifying gateway-0; an SSE
	// client on gateway-1 for the whole run.
	p := startPipe(t, c, git, app.URL)
	sse := watchEvents(t, c.gateways[1], pipeProject)
	p.pipeline(query)
	t.Logf("%s: pipeline done", time.Since(start).Round(time.Second))

	// The "chaos" project: promotions through four stages, the stream
	// leader, a promoter and a discovery replica SIGKILLed mid-way.
	reg := testenv.Registry(t)
	for _, s := range clusterStages {
		git.CreateRepo(t, s)
		git.Seed(t, s, map[string]string{"values.yaml": "image:\n  tag: none\n"}, "seed")
	}
	c.api.apply(chaosManifests(reg.Repo("chaos/app"), git, clusterStages, app.URL))
	round := func(tag string, during func()) string {
		reg.PushImage(t, "chaos/app", tag)
		if during != nil {
			during()
		}
		f := waitFor(t, 3*time.Minute, "freight of "+tag, func() (string, bool) {
			items, _, err := state.List[model.Freight](t.Context(), c.env.Store.KV(state.Freight), state.Prefix("chaos"), 0, "")
			if err != nil {
				return "", false
			}
			for _, it := range items {
				if len(it.Value.Images) == 1 && it.Value.Images[0].Tag == tag {
					return it.Value.Name, true
				}
			}
			return "", false
		})
		for _, s := range clusterStages {
			if strings.HasPrefix(s, "manual-") {
				c.api.promote(s, f)
			}
		}
		waitFor(t, 5*time.Minute, "every stage verified on "+tag, func() (struct{}, bool) {
			for _, s := range clusterStages {
				if !verifiedOn(t, c.env, "chaos", s, f) {
					return struct{}{}, false
				}
			}
			return struct{}{}, true
		})
		t.Logf("%s: %s promoted and verified everywhere; promotions %v", time.Since(start).Round(time.Second), tag, chaosPhases(t, c.env))
		return f
	}
	round("1.0.1", nil)

	// Faults during the second round: the node leading the event stream,
	// a promoter and a discovery replica are SIGKILLed; each comes back
	// after a few seconds, as Kubernetes would restart it.
	killedNode := c.leaderNode()
	restarted := make(chan struct{})
	round("1.0.2", func() {
		killedNode.kill()
		c.services["promoter"][0].kill()
		c.services["discovery"][1].kill()
		t.Logf("SIGKILLed %s (stream leader), promoter-0, discovery-1", killedNode.name)
		go func() {
			defer close(restarted)
			time.Sleep(5 * time.Second)
			killedNode.start(t)
			c.services["promoter"][0].start(t)
			c.services["discovery"][1].start(t)
		}()
	})
	<-restarted
	// The restarted node catches up and the restarted replicas, started
	// while the cluster may still be electing, turn ready.
	c.waitNodesCurrent()
	c.waitReady()

	// The counts: 2 freight, every promotion succeeded once with one
	// commit, one auto-promotion per auto stage and freight.
	items, _, err := state.List[model.Freight](t.Context(), c.env.Store.KV(state.Freight), state.Prefix("chaos"), 0, "")
	if err != nil || len(items) != 2 {
		t.Errorf("%d freight (%v), want 2", len(items), err)
	}
	ps := chaosPromotions(t, c.env)
	if want := 2 * len(clusterStages); len(ps) != want {
		t.Errorf("%d promotions, want %d", len(ps), want)
	}
	checkPromotions(t, ps, commitsOf(t, git, clusterStages...))
	t.Logf("%s: promoter fault done", time.Since(start).Round(time.Second))

	// The burst (discovery SIGKILLed, the SSE client's gateway restarted),
	// then the stream leader SIGKILLed with 1,000 events in flight.
	p.burst(sse)
	t.Logf("%s: burst done", time.Since(start).Round(time.Second))
	p.leaderInFlight()
	t.Logf("%s: leader fault done", time.Since(start).Round(time.Second))
	sse.check(t, c)
	if n := len(p.promotions()); n != len(pipeStages) {
		t.Errorf("%d promotions in pipe at the end, want %d: the burst's warehouse feeds no stage", n, len(pipeStages))
	}

	// Graceful shutdown: every service drains and exits 0 on SIGTERM.
	for svc, ps := range c.services {
		for i, p := range ps {
			if code, graceful := p.term(); code != 0 || !graceful {
				t.Errorf("%s-%d on SIGTERM: exit code %d, stopped by itself: %v", svc, i, code, graceful)
			}
		}
	}
	fmt.Printf("cluster: 3 nats nodes, 8 service replicas; pipeline to prod in one trace; %d chaos promotions with the stream leader, a promoter and a discovery replica SIGKILLed; %d pushes with discovery SIGKILLed and a gateway restarted under an SSE client (%d events, %d reconnects); %d events with the stream leader SIGKILLed; in %s\n",
		len(ps), burstPushes, sse.count(), sse.reconnects(), inFlightEvents, time.Since(start).Round(time.Second))
}

// verifiedOn reports whether stage holds freight f, verified.
func verifiedOn(t testing.TB, env *service.Env, project, stage, f string) bool {
	st, _, err := state.Get[model.StageStatus](t.Context(), env.Store.KV(state.Stages), state.Key(project, stage))
	if err != nil || len(st.FreightHistory) == 0 {
		return false
	}
	cur, ok := st.CurrentFreight(model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"})
	h := st.FreightHistory[0].VerificationHistory
	return ok && cur.Name == f && len(h) > 0 && h[0].Phase == model.VerificationPhaseSuccessful
}

// checkPromotions: every promotion succeeded with exactly one commit, and
// no auto-promotion of one freight into one stage ran twice.
func checkPromotions(t testing.TB, ps []model.Promotion, commits map[string]int) {
	t.Helper()
	auto := map[string]int{}
	for _, p := range ps {
		if p.Status.Phase != model.PromotionPhaseSucceeded || commits[p.Name] != 1 {
			t.Errorf("promotion %s: %s with %d commits, want Succeeded with 1", p.Name, p.Status.Phase, commits[p.Name])
		}
		if p.Annotations[model.AnnotationPromotionCreatedBy] == "auto" {
			auto[p.Spec.Stage+"/"+p.Spec.Freight]++
		}
	}
	for k, n := range auto {
		if n != 1 {
			t.Errorf("%d auto-promotions of %s", n, k)
		}
	}
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

func getBody(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
