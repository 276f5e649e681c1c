//go:build e2e

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// Sizes of the chaos run: 50 stages, half auto-promoted, half promoted by
// hand, each taking every one of 10 pieces of freight: 500 promotions,
// each verified.
const (
	chaosStages  = 50
	chaosFreight = 10
	chaosFaults  = 0.10 // of publishes and acks, in every service
)

// TestE2EChaos runs the standalone services as real processes (two
// gateways, one discovery, two promoters, two verifiers), each talking to
// NATS through a proxy that drops, duplicates or delays 10% of its event
// publishes and acks, and SIGKILLs a random one every few seconds
// (restarting it, as Kubernetes would), while 500 promotions run across 50
// stages with auto-promotion and verification. At the end every promotion
// is terminal, every stage holds the newest freight and verified it, each
// successful promotion pushed exactly one commit, and no auto-promotion
// ran twice.
func TestE2EChaos(t *testing.T) {
	bins := buildBins(t)

	// Real parts in the test process: NATS (never killed), an OCI
	// registry, a git server, the application the verification measures.
	nsrv := testenv.NATS(t)
	reg := testenv.Registry(t)
	git := testenv.GitServer(t)
	appURL := healthApp(t)
	secret := secretKey(9)
	const adminToken = "chaos-admin-token"
	image := reg.Repo("chaos/app")
	stageNames := make([]string, chaosStages)
	for i := range stageNames {
		kind := "manual"
		if i%2 == 0 {
			kind = "auto"
		}
		stageNames[i] = fmt.Sprintf("%s-%02d", kind, i)
	}
	seedRepos(t, git, stageNames...)

	// The processes, each behind its own fault proxy.
	proxies := map[string]*testenv.FaultProxy{}
	svcs := &fleet{t: t, procs: newProcesses(t, os.Getenv("CARAVAN_CHAOS_LOGS")), bins: bins, adminToken: adminToken,
		environ: append(append(os.Environ(), "CARAVAN_SECRET_KEY="+secret, "CARAVAN_LOG_FORMAT=text"), baseSettings...),
		svcEnv:  map[string][]string{"promoter": {"CARAVAN_PROMOTION_CONCURRENCY=50"}},
		natsURL: func(replica string) string {
			proxies[replica] = testenv.NATSFaults(t, nsrv.URL(), chaosFaults, events.SubjectRoot+".", "$JS.ACK.")
			return proxies[replica].URL()
		},
	}
	for _, svc := range serviceNames {
		n := 2
		if svc == "discovery" {
			n = 1
		}
		for range n {
			svcs.add(svc)
		}
	}
	// Stopped before the fault proxies close.
	defer svcs.procs.stop()
	procs := svcs.all()

	// The test reads state straight from KV.
	env, err := service.Provision(t.Context(), nsrv.Conn(t), "chaos-test", service.Common{
		DataDir: t.TempDir(), SecretKey: secret, StreamConfig: events.DefaultStreamConfig(),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	api := &apiClient{t: t, urls: svcs.gateways, token: adminToken}
	api.waitReady()
	api.apply(chaosManifests(image, git, stageNames, appURL))

	// Chaos: SIGKILL a random process every 3–6 s; it comes back after
	// 0.3–1 s.
	var kills atomic.Int32
	chaosCtx, stopChaos := context.WithCancel(context.Background())
	defer stopChaos()
	var chaosDone sync.WaitGroup
	chaosDone.Go(func() {
		for {
			select {
			case <-chaosCtx.Done():
				return
			case <-time.After(3*time.Second + time.Duration(rand.Int64N(int64(3*time.Second)))):
			}
			p := procs[rand.IntN(len(procs))]
			p.kill()
			kills.Add(1)
			time.Sleep(300*time.Millisecond + time.Duration(rand.Int64N(int64(700*time.Millisecond))))
			p.start(t)
		}
	})

	// Freight one at a time: push a tag, wait for its freight, promote it
	// by hand into the manual stages (Idempotency-Key, retried), and wait
	// until every auto stage has its auto-promotion of it before the next.
	start := time.Now()
	var freight []string
	for k := 1; k <= chaosFreight; k++ {
		reg.PushImage(t, "chaos/app", fmt.Sprintf("1.0.%d", k))
		f := waitFreight(t, env, "chaos", "app", fmt.Sprintf("1.0.%d", k))
		freight = append(freight, f)
		for _, s := range stageNames {
			if strings.HasPrefix(s, "manual-") {
				api.promote("chaos", s, f)
			}
		}
		waitFor(t, 5*time.Minute, fmt.Sprintf("auto-promotions of freight %d", k), func() (struct{}, bool) {
			n := 0
			for _, p := range promotionsOf(t, env, "chaos") {
				if p.Spec.Freight == f && p.Annotations[model.AnnotationPromotionCreatedBy] == "auto" {
					n++
				}
			}
			return struct{}{}, n >= chaosStages/2
		})
		t.Logf("%s: freight %d requested everywhere; promotions %v; %d kills", time.Since(start).Round(time.Second), k, chaosPhases(t, env), kills.Load())
	}
	stopChaos()
	chaosDone.Wait()
	for _, p := range procs {
		p.start(t) // those killed last
	}
	t.Logf("all requested after %s; %d kills", time.Since(start).Round(time.Second), kills.Load())

	// Then everything settles.
	newest := freight[len(freight)-1]
	lastLog := time.Now()
	waitFor(t, 6*time.Minute, "every promotion terminal and every stage verified on the newest freight", func() (struct{}, bool) {
		if time.Since(lastLog) > 20*time.Second {
			lastLog = time.Now()
			t.Logf("%s: settling; promotions %v", time.Since(start).Round(time.Second), chaosPhases(t, env))
		}
		for _, p := range promotionsOf(t, env, "chaos") {
			if !p.Status.Phase.IsTerminal() {
				return struct{}{}, false
			}
		}
		for _, s := range stageNames {
			st, _, err := state.Get[model.StageStatus](t.Context(), env.Store.KV(state.Stages), state.Key("chaos", s))
			if err != nil || len(st.FreightHistory) == 0 {
				return struct{}{}, false
			}
			cur, ok := st.CurrentFreight(model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"})
			h := st.FreightHistory[0].VerificationHistory
			if !ok || cur.Name != newest || len(h) == 0 || !h[0].Phase.IsTerminal() {
				return struct{}{}, false
			}
		}
		return struct{}{}, true
	})
	elapsed := time.Since(start)

	// The counts.
	ps := promotionsOf(t, env, "chaos")
	phases := map[model.PromotionPhase]int{}
	auto := map[string]int{}
	for _, p := range ps {
		phases[p.Status.Phase]++
		if p.Annotations[model.AnnotationPromotionCreatedBy] == "auto" {
			auto[p.Spec.Stage+"/"+p.Spec.Freight]++
		}
	}
	commits := commitsOf(t, git, stageNames...) // promotion → commits pushed
	var faults testenv.FaultCounts
	for _, proxy := range proxies {
		c := proxy.Counts()
		faults.Matched += c.Matched
		faults.Dropped += c.Dropped
		faults.Duplicated += c.Duplicated
		faults.Delayed += c.Delayed
	}
	verified := 0
	for _, s := range stageNames {
		st, _, _ := state.Get[model.StageStatus](t.Context(), env.Store.KV(state.Stages), state.Key("chaos", s))
		if h := st.FreightHistory[0].VerificationHistory; len(h) > 0 && h[0].Phase == model.VerificationPhaseSuccessful {
			verified++
		}
	}
	fmt.Printf("chaos: %d promotions across %d stages (%d auto) in %s: %v; %d SIGKILLs; faults on publishes and acks: %s; %d commits; %d stages verified on the newest freight\n",
		len(ps), chaosStages, len(auto), elapsed.Round(time.Second), phases, kills.Load(), faults, len(commits), verified)

	if want := chaosStages * chaosFreight; len(ps) != want {
		t.Errorf("%d promotions, want %d", len(ps), want)
	}
	for _, p := range ps {
		n := commits[p.Name]
		switch {
		case p.Status.Phase == model.PromotionPhaseSucceeded && n != 1:
			t.Errorf("promotion %s succeeded with %d commits pushed, want 1", p.Name, n)
		case n > 1:
			t.Errorf("promotion %s (%s) pushed %d commits", p.Name, p.Status.Phase, n)
		}
	}
	for k, n := range auto {
		if n != 1 {
			t.Errorf("%d auto-promotions of %s", n, k)
		}
	}
	if phases[model.PromotionPhaseSucceeded] != len(ps) {
		t.Errorf("not every promotion succeeded: %v", phases)
		for _, p := range ps {
			if p.Status.Phase != model.PromotionPhaseSucceeded {
				t.Logf("%s: %s: %s", p.Name, p.Status.Phase, p.Status.Message)
			}
		}
	}
	if verified != chaosStages {
		t.Errorf("%d of %d stages verified on the newest freight", verified, chaosStages)
	}
}

// chaosManifests is the project: one warehouse, an analysis template, a
// promotion task writing the image tag into the stage's own repository,
// the stages (auto-* auto-promoted).
func chaosManifests(image string, git *testenv.Git, stages []string, appURL string) string {
	var b strings.Builder
	b.WriteString(`apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: chaos
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata:
  name: chaos
  namespace: chaos
spec:
  promotionPolicies:
  - stageSelector:
      name: "glob:auto-*"
    autoPromotionEnabled: true
`)
	b.WriteString(warehouseYAML("chaos", "app", "2s", image, "", 5))
	b.WriteString(smokeTemplate("chaos", appURL))
	b.WriteString(setTagTask("chaos", image))
	for _, s := range stages {
		b.WriteString(taskStage("chaos", s, "direct: true", git.URL(s)))
	}
	return b.String()
}

func chaosPhases(t testing.TB, env *service.Env) map[model.PromotionPhase]int {
	phases := map[model.PromotionPhase]int{}
	for _, p := range promotionsOf(t, env, "chaos") {
		phases[p.Status.Phase]++
	}
	return phases
}
