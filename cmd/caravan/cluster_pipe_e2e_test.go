//go:build e2e

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/client"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

const (
	// pipeProject is the project the Debian docker-registry notifies.
	pipeProject = "pipe"
	// pipeSecret is its registry webhook receiver's secret.
	pipeSecret = "pipe-webhook-secret"
	// burstPushes is how many tags the burst pushes.
	burstPushes = 200
	// inFlightEvents is how many events are in flight when the stream
	// leader is SIGKILLed.
	inFlightEvents = 1000
)

// pipeStages are the pipe project's stages, each fed by the one before.
var pipeStages = []string{"dev", "staging", "prod"}

// pipeHead is the project, its webhook receiver and its promotion
// policies (dev and staging promote themselves).
var pipeHead = webhookProject(pipeProject, pipeSecret, "dev", "staging")

// pipeManifests are the pipe project's warehouses (app, fed to the
// stages; burst, fed to none) and its stages. Their interval is long: only
// webhooks make them discover during the run.
func pipeManifests(registry string, git *testenv.Git, appURL string) string {
	image := registry + "/pipe/app"
	var b strings.Builder
	b.WriteString(warehouseYAML(pipeProject, "app", "10m", image, ">=1.0.0", 5))
	b.WriteString(warehouseYAML(pipeProject, "burst", "10m", registry+"/pipe/burst", ">=2.0.0", model.MaxDiscoveryLimit))
	b.WriteString(smokeTemplate(pipeProject, appURL))
	b.WriteString(setTagTask(pipeProject, image))
	for i, s := range pipeStages {
		sources := "direct: true"
		if i > 0 {
			sources = "stages: [" + pipeStages[i-1] + "]"
		}
		b.WriteString(taskStage(pipeProject, s, sources, git.URL("pipe-"+s)))
	}
	return b.String()
}

// pipeRepos are the stages' git repositories.
func pipeRepos() []string {
	repos := make([]string, len(pipeStages))
	for i, s := range pipeStages {
		repos[i] = "pipe-" + s
	}
	return repos
}

// pipe is the pipe project on a cluster, fed by a Debian docker-registry
// whose notifications go to gateway-0.
type pipe struct {
	t        *testing.T
	c        *cluster
	git      *testenv.Git
	registry string // host:port
}

// startPipe applies the project, starts docker-registry notifying the
// project's registry receiver on gateway-0, and applies the rest.
func startPipe(t *testing.T, c *cluster, git *testenv.Git, appURL string) *pipe {
	t.Helper()
	seedRepos(t, git, pipeRepos()...)
	p := &pipe{t: t, c: c, git: git, registry: registryWebhook(t, c.procs, c.api, pipeProject, pipeHead, pipeSecret).Host()}
	// The repositories exist before the warehouses do, with a tag neither
	// takes.
	p.push("pipe/app", "0.1.0")
	p.push("pipe/burst", "0.1.0")
	c.api.apply(pipeHead + pipeManifests(p.registry, git, appURL))
	return p
}

// push pushes a new random image as repo:tag.
func (p *pipe) push(repo, tag string) { pushRandom(p.t, p.registry, repo, tag) }

// freight lists the project's freight from warehouse.
func (p *pipe) freight(warehouse string) []model.Freight {
	return freightOf(p.t, p.c.env, pipeProject, warehouse)
}

// waitFreight waits for the freight of warehouse holding tag.
func (p *pipe) waitFreight(warehouse, tag string) string {
	return waitFreight(p.t, p.c.env, pipeProject, warehouse, tag)
}

// pipeline pushes pipe/app:1.0.0 and follows it to prod: the webhook makes
// freight, dev and staging promote themselves, each verified, and
// `caravan promote --wait` takes it into prod. One commit per promotion;
// one trace in Jaeger (at query) spans the four services.
func (p *pipe) pipeline(query string) {
	t, c := p.t, p.c
	p.push("pipe/app", "1.0.0")
	f := p.waitFreight("app", "1.0.0")
	waitFor(t, 3*time.Minute, "freight verified in dev and staging", func() (struct{}, bool) {
		return struct{}{}, verifiedOn(t, c.env, pipeProject, "dev", f) && verifiedOn(t, c.env, pipeProject, "staging", f)
	})
	cli := exec.Command(filepath.Join(c.bins, "caravan"), "promote", "-p", pipeProject, "--stage", "prod", "--freight", f, "--wait")
	cli.Env = append(os.Environ(), "CARAVAN_SERVER="+c.gateways[0], "CARAVAN_TOKEN="+clusterAdminToken,
		"CARAVAN_CONFIG="+filepath.Join(t.TempDir(), "config.yaml"))
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("caravan promote --wait: %v\n%s", err, out)
	}
	waitFor(t, 2*time.Minute, "freight verified in prod", func() (struct{}, bool) {
		return struct{}{}, verifiedOn(t, c.env, pipeProject, "prod", f)
	})
	ps := p.promotions()
	if len(ps) != len(pipeStages) {
		t.Errorf("%d promotions in pipe, want %d", len(ps), len(pipeStages))
	}
	checkPromotions(t, ps, commitsOf(t, p.git, pipeRepos()...))
	if n := len(p.freight("app")); n != 1 {
		t.Errorf("%d freight of app, want 1", n)
	}

	// The trace: the services export in batches every 0.5 s.
	want := []string{"caravan-gateway", "caravan-discovery", "caravan-promoter", "caravan-verifier"}
	var last string
	waitFor(t, time.Minute, "one trace in Jaeger spanning "+strings.Join(want, ", "), func() (struct{}, bool) {
		got, ops, err := widestTrace(query)
		if err != nil {
			last = err.Error()
			return struct{}{}, false
		}
		last = fmt.Sprintf("the widest trace spans %v", got)
		for _, s := range want {
			if !slices.Contains(got, s) {
				return struct{}{}, false
			}
		}
		t.Logf("one trace of %d spans across %v, from %q", len(ops), got, ops[0])
		return struct{}{}, true
	})
	if t.Failed() {
		t.Log(last)
	}
}

// widestTrace returns the services and the operations (root first) of the
// trace starting at caravan-gateway that spans the most services.
func widestTrace(query string) ([]string, []string, error) {
	resp, err := http.Get(query + "/api/traces?service=caravan-gateway&limit=1000&lookback=1h")
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET /api/traces: %s", resp.Status)
	}
	var out struct {
		Data []struct {
			Spans []struct {
				OperationName string `json:"operationName"`
				ProcessID     string `json:"processID"`
				StartTime     int64  `json:"startTime"`
			} `json:"spans"`
			Processes map[string]struct {
				ServiceName string `json:"serviceName"`
			} `json:"processes"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, nil, err
	}
	var best, bestOps []string
	for _, tr := range out.Data {
		var svcs []string
		for _, s := range tr.Spans {
			if n := tr.Processes[s.ProcessID].ServiceName; !slices.Contains(svcs, n) {
				svcs = append(svcs, n)
			}
		}
		if len(svcs) > len(best) {
			spans := slices.Clone(tr.Spans)
			slices.SortFunc(spans, func(a, b struct {
				OperationName string `json:"operationName"`
				ProcessID     string `json:"processID"`
				StartTime     int64  `json:"startTime"`
			}) int {
				return int(a.StartTime - b.StartTime)
			})
			bestOps = nil
			for _, s := range spans {
				bestOps = append(bestOps, s.OperationName)
			}
			slices.Sort(svcs)
			best = svcs
		}
	}
	if best == nil {
		return nil, nil, errors.New("no trace of caravan-gateway yet")
	}
	return best, bestOps, nil
}

func (p *pipe) promotions() []model.Promotion { return promotionsOf(p.t, p.c.env, pipeProject) }

// discoveryHolder is the discovery replica holding the lease of warehouse
// (read from the leases bucket, whatever its key layout), or discovery-0
// when none is found.
func (p *pipe) discoveryHolder(warehouse string) *process {
	ctx := p.t.Context()
	kv := p.c.env.Store.KV(state.DiscoveryLeases)
	keys, _ := state.Keys(ctx, kv, ">")
	for _, k := range keys {
		if !strings.Contains(k, warehouse) {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var rec struct {
			Holder string `json:"holder"`
			Lease  struct {
				Holder string `json:"holder"`
			} `json:"lease"`
		}
		if json.Unmarshal(e.Value(), &rec) != nil {
			continue
		}
		for _, r := range p.c.services["discovery"] {
			if r.name == rec.Holder || r.name == rec.Lease.Holder {
				return r
			}
		}
	}
	p.t.Logf("no lease of warehouse %s found: SIGKILLing discovery-0", warehouse)
	return p.c.services["discovery"][0]
}

// burst pushes burstPushes tags of pipe/burst, four at a time. A quarter
// in, the discovery replica holding the warehouse's lease is SIGKILLed
// (back 3 s later); half-way, gateway-1, which serves sse, restarts. Then:
// one WarehouseRefreshRequested per pushed tag, no freight discovered
// twice, freight of the newest tag, and the newest tags discovered.
func (p *pipe) burst(sse *sseWatch) {
	t, c := p.t, p.c
	holder := p.discoveryHolder("burst")
	tags := make([]string, burstPushes)
	for i := range tags {
		tags[i] = fmt.Sprintf("2.0.%d", i)
	}
	jobs := make(chan string)
	var pushed atomic.Int32
	var pushers sync.WaitGroup
	for range 4 {
		pushers.Go(func() {
			for tag := range jobs {
				p.push("pipe/burst", tag)
				pushed.Add(1)
			}
		})
	}
	var faults sync.WaitGroup
	faults.Go(func() {
		waitFor(t, 2*time.Minute, "a quarter of the burst pushed", func() (struct{}, bool) { return struct{}{}, pushed.Load() >= burstPushes/4 })
		holder.kill()
		t.Logf("SIGKILLed %s (holding the lease of warehouse burst) after %d pushes", holder.name, pushed.Load())
		time.Sleep(3 * time.Second)
		holder.start(t)
	})
	faults.Go(func() {
		waitFor(t, 2*time.Minute, "half the burst pushed", func() (struct{}, bool) { return struct{}{}, pushed.Load() >= burstPushes/2 })
		gw := c.services["gateway"][1]
		before := sse.count()
		if code, graceful := gw.term(); code != 0 || !graceful {
			t.Errorf("gateway-1 on SIGTERM: exit code %d, stopped by itself: %v", code, graceful)
		}
		gw.start(t)
		t.Logf("restarted gateway-1 (the SSE client's) after %d pushes, %d events streamed", pushed.Load(), before)
	})
	for _, tag := range tags {
		jobs <- tag
	}
	close(jobs)
	pushers.Wait()
	faults.Wait()
	newest := tags[len(tags)-1]
	p.waitFreight("burst", newest)
	c.waitReady()

	// Every push was notified and became exactly one refresh request.
	subject := events.Subject(pipeProject, events.TypeWarehouseRefreshRequested, events.Ref{Kind: model.KindWarehouse, Name: "burst"})
	hinted := map[string]int{}
	waitFor(t, time.Minute, "a refresh request per push", func() (struct{}, bool) {
		hinted = map[string]int{}
		for _, m := range streamMsgs(t, c.env.JS, subject) {
			var ev events.WarehouseRefreshRequested
			if m.env.Decode(&ev) == nil && ev.Hint != nil {
				hinted[ev.Hint.Tag]++
			}
		}
		return struct{}{}, len(hinted) >= burstPushes
	})
	for _, tag := range tags {
		if n := hinted[tag]; n != 1 {
			t.Errorf("tag %s: %d refresh requests, want 1", tag, n)
		}
	}
	// Every freight is of a pushed tag and was discovered once.
	freight := p.freight("burst")
	discovered := p.freightDiscovered("burst")
	for _, f := range freight {
		if len(f.Images) != 1 || !slices.Contains(tags, f.Images[0].Tag) {
			t.Errorf("freight %s of burst: images %+v, none of the pushed tags", f.Name, f.Images)
		}
		if n := discovered[f.Name]; n != 1 {
			t.Errorf("freight %s: %d FreightDiscovered, want 1", f.Name, n)
		}
	}
	if len(discovered) != len(freight) {
		t.Errorf("%d freight discovered, %d stored", len(discovered), len(freight))
	}
	// The warehouse lists the newest pushed tags (its discoveryLimit).
	waitFor(t, time.Minute, "warehouse burst listing the newest tags", func() (struct{}, bool) {
		st, _, err := state.Get[model.WarehouseStatus](t.Context(), c.env.Store.KV(state.Warehouses), state.Key(pipeProject, "burst"))
		if err != nil || st.DiscoveredArtifacts == nil || len(st.DiscoveredArtifacts.Images) != 1 {
			return struct{}{}, false
		}
		have := map[string]bool{}
		for _, r := range st.DiscoveredArtifacts.Images[0].References {
			have[r.Tag] = true
		}
		for _, tag := range tags[len(tags)-model.MaxDiscoveryLimit:] {
			if !have[tag] {
				return struct{}{}, false
			}
		}
		return struct{}{}, true
	})
	t.Logf("burst: %d pushes, %d refresh requests, %d freight (each discovered once)", burstPushes, len(hinted), len(freight))
}

// freightDiscovered counts the FreightDiscovered events of the project's
// warehouse, by freight.
func (p *pipe) freightDiscovered(warehouse string) map[string]int {
	out := map[string]int{}
	for _, m := range streamMsgs(p.t, p.c.env.JS, events.Filter(pipeProject, events.TypeFreightDiscovered, "")) {
		var ev events.FreightDiscovered
		if m.env.Decode(&ev) == nil && ev.Origin.Name == warehouse {
			out[ev.Freight]++
		}
	}
	return out
}

// leaderInFlight publishes inFlightEvents refresh requests of warehouse
// burst (each hinting a tag it already has, as a registry's redelivery
// would), eight publishers at once, and SIGKILLs the node leading the
// event stream after 300 were acknowledged (back 3 s later). Each event is
// then in the stream once, discovery has processed them all, and they made
// no new freight.
func (p *pipe) leaderInFlight() {
	t, c := p.t, p.c
	freightBefore := len(p.freight("burst"))
	st, _, err := state.Get[model.WarehouseStatus](t.Context(), c.env.Store.KV(state.Warehouses), state.Key(pipeProject, "burst"))
	if err != nil || st.DiscoveredArtifacts == nil || len(st.DiscoveredArtifacts.Images) != 1 || len(st.DiscoveredArtifacts.Images[0].References) == 0 {
		t.Fatalf("warehouse burst: %+v (%v)", st, err)
	}
	known := st.DiscoveredArtifacts.Images[0].References[0]
	node := c.leaderNode()
	const prefix = "e2e-in-flight-"
	ids := make(chan int)
	var acked atomic.Int32
	var publishers sync.WaitGroup
	for range 8 {
		publishers.Go(func() {
			for i := range ids {
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
				_, err := c.env.Bus.PublishWithID(ctx, fmt.Sprintf("%s%04d", prefix, i), pipeProject,
					events.Ref{Kind: model.KindWarehouse, Name: "burst"},
					events.WarehouseRefreshRequested{Warehouse: "burst", Reason: "e2e in flight",
						Hint: &events.ArtifactHint{RepoURL: p.registry + "/pipe/burst", Tag: known.Tag, Digest: known.Digest}})
				cancel()
				if err != nil {
					t.Errorf("publish event %d: %v", i, err)
				}
				acked.Add(1)
			}
		})
	}
	var fault sync.WaitGroup
	fault.Go(func() {
		waitFor(t, 2*time.Minute, "300 events acknowledged", func() (struct{}, bool) { return struct{}{}, acked.Load() >= 300 })
		node.kill()
		t.Logf("SIGKILLed %s (stream leader) with %d of %d events acknowledged", node.name, acked.Load(), inFlightEvents)
		time.Sleep(3 * time.Second)
		node.start(t)
	})
	started := time.Now()
	for i := range inFlightEvents {
		ids <- i
	}
	close(ids)
	publishers.Wait()
	fault.Wait()
	t.Logf("%d events published in %s across the leader's SIGKILL", inFlightEvents, time.Since(started).Round(100*time.Millisecond))
	c.waitNodesCurrent()

	// Each in the stream once.
	seen := map[string]int{}
	for _, m := range streamMsgs(t, c.env.JS, events.Subject(pipeProject, events.TypeWarehouseRefreshRequested, events.Ref{Kind: model.KindWarehouse, Name: "burst"})) {
		if strings.HasPrefix(m.env.ID, prefix) {
			seen[m.env.ID]++
		}
	}
	for i := range inFlightEvents {
		if n := seen[fmt.Sprintf("%s%04d", prefix, i)]; n != 1 {
			t.Errorf("event %d: %d times in the stream, want 1", i, n)
		}
	}
	// Discovery processed every one.
	waitFor(t, 2*time.Minute, "discovery's consumer done with every event", func() (struct{}, bool) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		cons, err := c.env.JS.Consumer(ctx, events.StreamEvents, events.DiscoveryRefresh.Durable)
		if err != nil {
			return struct{}{}, false
		}
		info, err := cons.Info(ctx)
		return struct{}{}, err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	// And made nothing twice: no new freight.
	if n := len(p.freight("burst")); n != freightBefore {
		t.Errorf("%d freight of burst after the in-flight events, %d before", n, freightBefore)
	}
	discovered := p.freightDiscovered("burst")
	for f, n := range discovered {
		if n != 1 {
			t.Errorf("freight %s: %d FreightDiscovered, want 1", f, n)
		}
	}
}

// streamMsg is one event read back from the stream.
type streamMsg struct {
	seq uint64
	env events.Envelope
}

// streamMsgs reads every event on filter from the events stream.
func streamMsgs(t testing.TB, js jetstream.JetStream, filter string) []streamMsg {
	t.Helper()
	return streamFrom(t, js, filter, 0)
}

// streamFrom reads every event on filter from stream sequence from (0: the
// first) to the end.
func streamFrom(t testing.TB, js jetstream.JetStream, filter string, from uint64) []streamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	var out []streamMsg
	for {
		// Each attempt has its own timeout: during a failover a call on
		// the long context would wait for the whole of it.
		attempt, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		cons, err := js.OrderedConsumer(attempt, events.StreamEvents, cfg)
		cancelAttempt()
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("read %s: %v", filter, err)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if cons.CachedInfo().NumPending == 0 {
			return out
		}
		for {
			batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				t.Fatalf("read %s: %v", filter, err)
			}
			pending := uint64(1)
			n := 0
			for m := range batch.Messages() {
				meta, err := m.Metadata()
				if err != nil {
					continue
				}
				env, err := events.Open(m)
				if err != nil {
					t.Errorf("event %d on %s: %v", meta.Sequence.Stream, m.Subject(), err)
				}
				out = append(out, streamMsg{seq: meta.Sequence.Stream, env: env})
				pending, n = meta.NumPending, n+1
			}
			if n > 0 && pending == 0 {
				return out
			}
			if ctx.Err() != nil {
				t.Fatalf("read %s: still events pending after 2 min", filter)
			}
		}
	}
}

// sseWatch is an SSE client of a project's events on one gateway that
// reconnects, resuming with Last-Event-ID, whenever its stream ends.
type sseWatch struct {
	project string
	mu      sync.Mutex
	ids     []uint64
	reconn  int
	done    chan struct{}
}

// watchEvents opens the stream (events published after it returns are
// seen) and follows it until the test ends.
func watchEvents(t *testing.T, base, project string) *sseWatch {
	t.Helper()
	cl, err := client.New(base, clusterAdminToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := cl.Events(ctx, project, "")
	if err != nil {
		cancel()
		t.Fatalf("open the event stream: %v", err)
	}
	w := &sseWatch{project: project, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			ev, err := s.Next()
			if err == nil {
				id, perr := strconv.ParseUint(ev.ID, 10, 64)
				if perr != nil {
					t.Errorf("SSE event %q: id %q is no stream sequence", ev.Type, ev.ID)
					continue
				}
				w.mu.Lock()
				w.ids = append(w.ids, id)
				w.mu.Unlock()
				continue
			}
			_ = s.Close()
			for {
				if ctx.Err() != nil {
					return
				}
				next, err := cl.Events(ctx, project, s.LastID())
				if err == nil {
					s = next
					w.mu.Lock()
					w.reconn++
					w.mu.Unlock()
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

func (w *sseWatch) snapshot() []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ids)
}

func (w *sseWatch) count() int { return len(w.snapshot()) }

func (w *sseWatch) reconnects() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reconn
}

// check: from the first event the client saw to the last in the stream,
// it saw every event of the project exactly once, in order, having
// reconnected at least once.
func (w *sseWatch) check(t *testing.T, c *cluster) {
	t.Helper()
	ids := w.snapshot()
	if len(ids) == 0 {
		t.Fatal("the SSE client saw no event")
	}
	msgs := streamFrom(t, c.env.JS, events.ProjectFilter(w.project), ids[0])
	last := msgs[len(msgs)-1].seq
	waitFor(t, time.Minute, "the SSE client at the stream's last event", func() (struct{}, bool) {
		ids = w.snapshot()
		return struct{}{}, ids[len(ids)-1] >= last
	})
	seen := map[uint64]int{}
	for i, id := range ids {
		seen[id]++
		if i > 0 && id <= ids[i-1] && seen[id] == 1 {
			t.Errorf("SSE event %d after %d: out of order", id, ids[i-1])
		}
	}
	dup, missing := 0, 0
	for _, m := range msgs {
		switch seen[m.seq] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
		delete(seen, m.seq)
	}
	extra := 0
	for id := range seen {
		if id <= last {
			extra++
		}
	}
	if missing+dup+extra > 0 {
		t.Errorf("SSE client: %d of %d events missing, %d duplicated, %d not in the stream", missing, len(msgs), dup, extra)
	}
	if w.reconnects() == 0 {
		t.Error("the SSE client never reconnected: its gateway's restart did not reach it")
	}
	t.Logf("SSE client: %d events, each once, across %d reconnects", len(msgs), w.reconnects())
}
