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

// clusterStages are the stages of the cluster run: auto-* auto-promoted,
// manual-* promoted through the API.
var clusterStages = []string{"auto-00", "manual-01", "auto-02", "manual-03"}

// TestE2EClusterFaults runs Caravan as it runs in the Helm chart, with real
// processes: a 3-node nats-server cluster (three OS processes, streams and
// buckets with 3 replicas declared by caravan setup), and two replicas of
// each service, each with its admin listener. Every replica must turn
// ready. A first freight is promoted through every stage and verified;
// then, while a second freight is pushed and promoted, the test SIGKILLs
// the node leading the event stream, a promoter replica and a discovery
// replica. At the end every promotion succeeded with exactly one commit, no
// auto-promotion ran twice, every stage holds the newest freight verified,
// and every service stops on SIGTERM with exit code 0.
func TestE2EClusterFaults(t *testing.T) {
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	natsBin := toolPath(t, repoRoot, "nats-server")
	bins := t.TempDir()
	build := func(out, pkg string) {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bins, out), pkg)
		cmd.Dir = repoRoot
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", out, err, b)
		}
	}
	build("caravan", "./cmd/caravan")
	for _, svc := range []string{"gateway", "discovery", "promoter", "verifier"} {
		build("caravan-"+svc, "./services/"+svc+"/cmd/caravan-"+svc)
	}
	logDir := os.Getenv("CARAVAN_CLUSTER_LOGS") // keep every process's log there
	newProc := func(name, bin string, args, env []string) *chaosProc {
		p := &chaosProc{name: name, bin: bin, args: args, env: env, log: &chaosLog{}}
		if logDir != "" {
			f, err := os.Create(filepath.Join(logDir, name+".log"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = f.Close() })
			p.log.file = f
		}
		return p
	}
	var procs []*chaosProc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("--- %s (last lines)\n%s", p.name, p.log.tail(30))
			}
		}
	}()

	// The cluster: three nats-server processes routed to each other.
	var clients, routes []string
	for range 3 {
		clients = append(clients, "nats://"+freePort(t))
		routes = append(routes, "nats://"+freePort(t))
	}
	nodes := make([]*chaosProc, 3)
	for i := range nodes {
		name := fmt.Sprintf("n%d", i)
		host, port, _ := strings.Cut(strings.TrimPrefix(clients[i], "nats://"), ":")
		nodes[i] = newProc("nats-"+name, natsBin, []string{
			"--name", name, "--addr", host, "--port", port, "--jetstream", "--store_dir", t.TempDir(),
			"--cluster_name", "caravan", "--cluster", routes[i], "--routes", strings.Join(routes, ","),
		}, os.Environ())
		procs = append(procs, nodes[i])
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
	natsURL := strings.Join(clients, ",")
	secretKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	const adminToken = "cluster-admin-token"
	common := append(os.Environ(),
		"CARAVAN_NATS_URL="+natsURL,
		"CARAVAN_JS_REPLICAS=3",
		"CARAVAN_SECRET_KEY="+secretKey,
		"CARAVAN_RECONCILE_INTERVAL=5s",
		"CARAVAN_EGRESS_ALLOW=127.0.0.0/8",
		"CARAVAN_LOG_LEVEL=info",
	)

	// caravan setup waits for the cluster to form, then declares the
	// layout with 3 replicas.
	setup := exec.Command(filepath.Join(bins, "caravan"), "setup", "--timeout", "2m")
	setup.Env = common
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("caravan setup: %v\n%s", err, out)
	}

	// The test's own view of the cluster.
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	streams := events.DefaultStreamConfig()
	streams.Replicas = 3
	env, err := service.Connect(t.Context(), nc, "cluster-test", service.Common{
		DataDir: t.TempDir(), SecretKey: secretKey, StreamConfig: streams,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info := streamInfo(t, env.JS); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream %s: %d replicas, cluster %+v; want 3 on 3 nodes", events.StreamEvents, info.Config.Replicas, info.Cluster)
	}

	// The services, two replicas each, as the chart runs them.
	reg := testenv.Registry(t)
	git := testenv.GitServer(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	defer app.Close()
	for _, s := range clusterStages {
		git.CreateRepo(t, s)
		git.Seed(t, s, map[string]string{"values.yaml": "image:\n  tag: none\n"}, "seed")
	}
	var gateways, admins []string
	services := map[string][]*chaosProc{}
	for _, svc := range []string{"gateway", "discovery", "promoter", "verifier"} {
		for i := range 2 {
			name := fmt.Sprintf("%s-%d", svc, i)
			admin := freePort(t)
			admins = append(admins, "http://"+admin)
			extra := []string{"CARAVAN_ADMIN_ADDR=" + admin, "CARAVAN_DATA_DIR=" + t.TempDir()}
			switch svc {
			case "gateway":
				addr := freePort(t)
				gateways = append(gateways, "http://"+addr)
				extra = append(extra, "CARAVAN_HTTP_ADDR="+addr, "CARAVAN_ADMIN_TOKEN="+adminToken)
			case "discovery":
				extra = append(extra, "CARAVAN_REPLICA_ID="+name, "CARAVAN_DISCOVERY_MIN_INTERVAL=1s", "CARAVAN_DISCOVERY_LEASE_TTL=6s")
			case "promoter":
				extra = append(extra, "CARAVAN_REPLICA_ID="+name, "CARAVAN_PROMOTION_LEASE_TTL=6s", "CARAVAN_HEALTH_INTERVAL=1m")
			case "verifier":
				extra = append(extra, "CARAVAN_REPLICA_ID="+name, "CARAVAN_VERIFICATION_LEASE_TTL=6s",
					"CARAVAN_VERIFICATION_SCAN_INTERVAL=2s", "CARAVAN_VERIFICATION_HEALTH_POLL=500ms")
			}
			p := newProc(name, filepath.Join(bins, "caravan-"+svc), nil, append(append([]string(nil), common...), extra...))
			procs = append(procs, p)
			services[svc] = append(services[svc], p)
			p.start(t)
		}
	}
	waitReady := func() {
		waitFor(t, 2*time.Minute, "every replica ready on its admin listener", func() (struct{}, bool) {
			for _, a := range admins {
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
	waitReady()
	for _, a := range admins {
		if st := getStatus(t, a+"/healthz"); st != http.StatusOK {
			t.Errorf("%s/healthz: %d", a, st)
		}
	}
	if body := getBody(t, admins[len(admins)-1]+"/metrics"); !strings.Contains(body, "go_goroutines") {
		t.Errorf("verifier /metrics lacks the Go collector:\n%.500s", body)
	}

	api := &chaosAPI{t: t, urls: gateways, token: adminToken}
	api.waitReady()
	api.apply(chaosManifests(reg.Repo("chaos/app"), git, clusterStages, app.URL))

	start := time.Now()
	round := func(tag string, during func()) string {
		reg.PushImage(t, "chaos/app", tag)
		if during != nil {
			during()
		}
		f := waitFor(t, 3*time.Minute, "freight of "+tag, func() (string, bool) {
			items, _, err := state.List[model.Freight](t.Context(), env.Store.KV(state.Freight), state.Prefix("chaos"), 0, "")
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
				api.promote(s, f)
			}
		}
		waitFor(t, 5*time.Minute, "every stage verified on "+tag, func() (struct{}, bool) {
			for _, s := range clusterStages {
				st, _, err := state.Get[model.StageStatus](t.Context(), env.Store.KV(state.Stages), state.Key("chaos", s))
				if err != nil || len(st.FreightHistory) == 0 {
					return struct{}{}, false
				}
				cur, ok := st.CurrentFreight(model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"})
				h := st.FreightHistory[0].VerificationHistory
				if !ok || cur.Name != f || len(h) == 0 || h[0].Phase != model.VerificationPhaseSuccessful {
					return struct{}{}, false
				}
			}
			return struct{}{}, true
		})
		t.Logf("%s: %s promoted and verified everywhere; promotions %v", time.Since(start).Round(time.Second), tag, chaosPhases(t, env))
		return f
	}
	round("1.0.1", nil)

	// Faults during the second round: the node leading the event stream,
	// a promoter and a discovery replica are SIGKILLed; each comes back
	// after a few seconds, as Kubernetes would restart it.
	leader := streamInfo(t, env.JS).Cluster.Leader
	var killedNode *chaosProc
	for i, n := range nodes {
		if fmt.Sprintf("n%d", i) == leader {
			killedNode = n
		}
	}
	if killedNode == nil {
		t.Fatalf("stream leader %q is none of the nodes", leader)
	}
	restarted := make(chan struct{})
	round("1.0.2", func() {
		killedNode.kill()
		services["promoter"][0].kill()
		services["discovery"][1].kill()
		t.Logf("SIGKILLed %s (stream leader), promoter-0, discovery-1", killedNode.name)
		go func() {
			defer close(restarted)
			time.Sleep(5 * time.Second)
			killedNode.start(t)
			services["promoter"][0].start(t)
			services["discovery"][1].start(t)
		}()
	})
	<-restarted
	// The restarted node catches up and the restarted replicas, started
	// while the cluster may still be electing, turn ready.
	waitFor(t, 2*time.Minute, "the restarted node current again", func() (struct{}, bool) {
		info := streamInfo(t, env.JS)
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
	waitReady()

	// The counts: 2 freight, every promotion succeeded once with one
	// commit, one auto-promotion per auto stage and freight.
	items, _, err := state.List[model.Freight](t.Context(), env.Store.KV(state.Freight), state.Prefix("chaos"), 0, "")
	if err != nil || len(items) != 2 {
		t.Errorf("%d freight (%v), want 2", len(items), err)
	}
	ps := chaosPromotions(t, env)
	if want := 2 * len(clusterStages); len(ps) != want {
		t.Errorf("%d promotions, want %d", len(ps), want)
	}
	commits := map[string]int{}
	for _, s := range clusterStages {
		for _, subject := range strings.Split(git.Run(t, git.Path(s), "log", "--format=%s", "main"), "\n") {
			if name, ok := strings.CutPrefix(subject, "promote "); ok {
				commits[name]++
			}
		}
	}
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

	// Graceful shutdown: every service drains and exits 0 on SIGTERM.
	for svc, ps := range services {
		for i, p := range ps {
			if code, graceful := p.term(); code != 0 || !graceful {
				t.Errorf("%s-%d on SIGTERM: exit code %d, stopped by itself: %v", svc, i, code, graceful)
			}
		}
	}
	fmt.Printf("cluster: 3 nats nodes, 8 service replicas; %d promotions, %d commits, 2 freight in %s with the stream leader, a promoter and a discovery replica SIGKILLed\n",
		len(ps), len(commits), time.Since(start).Round(time.Second))
}

// toolPath builds (once) and returns a tool pinned under tools/.
func toolPath(t *testing.T, repoRoot, name string) string {
	t.Helper()
	out, err := exec.Command("bash", filepath.Join(repoRoot, "scripts", "tool.sh"), name).Output()
	if err != nil {
		t.Fatalf("scripts/tool.sh %s (make tools builds it): %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func streamInfo(t *testing.T, js jetstream.JetStream) *jetstream.StreamInfo {
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

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
