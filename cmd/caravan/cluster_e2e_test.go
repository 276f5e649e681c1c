//go:build e2e

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// clusterStages are the stages of the cluster run's "chaos" project:
// auto-* auto-promoted, manual-* promoted through the API.
var clusterStages = []string{"auto-00", "manual-01", "auto-02", "manual-03"}

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
	appURL := healthApp(t)

	// The "pipe" project: docker-registry notifying gateway-0; an SSE
	// client on gateway-1 for the whole run.
	p := startPipe(t, c, git, appURL)
	sse := watchEvents(t, c.gateways[1], pipeProject)
	p.pipeline(query)
	t.Logf("%s: pipeline done", time.Since(start).Round(time.Second))

	// The "chaos" project: promotions through four stages, the stream
	// leader, a promoter and a discovery replica SIGKILLed mid-way.
	reg := testenv.Registry(t)
	seedRepos(t, git, clusterStages...)
	c.api.apply(chaosManifests(reg.Repo("chaos/app"), git, clusterStages, appURL))
	round := func(tag string, during func()) string {
		reg.PushImage(t, "chaos/app", tag)
		if during != nil {
			during()
		}
		f := waitFreight(t, c.env, "chaos", "app", tag)
		for _, s := range clusterStages {
			if strings.HasPrefix(s, "manual-") {
				c.api.promote("chaos", s, f)
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
	ps := promotionsOf(t, c.env, "chaos")
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
