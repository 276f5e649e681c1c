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
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bins := t.TempDir()
	for _, svc := range []string{"gateway", "discovery", "promoter", "verifier"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bins, "caravan-"+svc), "./services/"+svc+"/cmd/caravan-"+svc)
		build.Dir = repoRoot
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", svc, err, out)
		}
	}

	// Real parts in the test process: NATS (never killed), an OCI
	// registry, a git server, the application the verification measures.
	nsrv := testenv.NATS(t)
	reg := testenv.Registry(t)
	git := testenv.GitServer(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	}))
	defer app.Close()
	secretKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	const adminToken = "chaos-admin-token"
	image := reg.Repo("chaos/app")
	stageNames := make([]string, chaosStages)
	for i := range stageNames {
		kind := "manual"
		if i%2 == 0 {
			kind = "auto"
		}
		stageNames[i] = fmt.Sprintf("%s-%02d", kind, i)
		git.CreateRepo(t, stageNames[i])
		git.Seed(t, stageNames[i], map[string]string{"values.yaml": "image:\n  tag: none\n"}, "seed")
	}

	// The processes, each behind its own fault proxy.
	common := []string{
		"CARAVAN_SECRET_KEY=" + secretKey,
		"CARAVAN_RECONCILE_INTERVAL=5s",
		// The web metric and the git server listen on loopback, which the
		// egress policy refuses by default.
		"CARAVAN_EGRESS_ALLOW=127.0.0.0/8",
		"CARAVAN_LOG_LEVEL=info",
		"CARAVAN_LOG_FORMAT=text",
	}
	var procs []*chaosProc
	logDir := os.Getenv("CARAVAN_CHAOS_LOGS") // keep every process's log there
	add := func(name, bin string, env ...string) *chaosProc {
		proxy := testenv.NATSFaults(t, nsrv.URL(), chaosFaults, events.SubjectRoot+".", "$JS.ACK.")
		p := &chaosProc{name: name, bin: filepath.Join(bins, bin), proxy: proxy,
			env: append(append(append(os.Environ(), common...), "CARAVAN_NATS_URL="+proxy.URL(), "CARAVAN_DATA_DIR="+t.TempDir()), env...),
			log: &chaosLog{}}
		if logDir != "" {
			f, err := os.Create(filepath.Join(logDir, name+".log"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = f.Close() })
			p.log.file = f
		}
		procs = append(procs, p)
		return p
	}
	var gateways []string
	for i := range 2 {
		addr := freePort(t)
		gateways = append(gateways, "http://"+addr)
		add(fmt.Sprintf("gateway-%d", i), "caravan-gateway", "CARAVAN_HTTP_ADDR="+addr, "CARAVAN_ADMIN_TOKEN="+adminToken)
	}
	add("discovery-0", "caravan-discovery", "CARAVAN_REPLICA_ID=discovery-0", "CARAVAN_DISCOVERY_MIN_INTERVAL=1s", "CARAVAN_DISCOVERY_LEASE_TTL=6s")
	for i := range 2 {
		add(fmt.Sprintf("promoter-%d", i), "caravan-promoter", fmt.Sprintf("CARAVAN_REPLICA_ID=promoter-%d", i), "CARAVAN_PROMOTION_LEASE_TTL=6s",
			"CARAVAN_PROMOTION_CONCURRENCY=50", "CARAVAN_HEALTH_INTERVAL=1m")
	}
	for i := range 2 {
		add(fmt.Sprintf("verifier-%d", i), "caravan-verifier", fmt.Sprintf("CARAVAN_REPLICA_ID=verifier-%d", i), "CARAVAN_VERIFICATION_LEASE_TTL=6s",
			"CARAVAN_VERIFICATION_SCAN_INTERVAL=2s", "CARAVAN_VERIFICATION_HEALTH_POLL=500ms")
	}
	for _, p := range procs {
		p.start(t)
	}
	defer func() {
		for _, p := range procs {
			p.stop()
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("--- %s (last lines)\n%s", p.name, p.log.tail(40))
			}
		}
	}()

	// The test reads state straight from KV.
	env, err := service.Provision(t.Context(), nsrv.Conn(t), "chaos-test", service.Common{
		DataDir: t.TempDir(), SecretKey: secretKey, StreamConfig: events.DefaultStreamConfig(),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	api := &chaosAPI{t: t, urls: gateways, token: adminToken}
	api.waitReady()
	api.apply(chaosManifests(image, git, stageNames, app.URL))

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
		f := waitFor(t, 3*time.Minute, fmt.Sprintf("freight of 1.0.%d", k), func() (string, bool) {
			items, _, err := state.List[model.Freight](t.Context(), env.Store.KV(state.Freight), state.Prefix("chaos"), 0, "")
			if err != nil {
				return "", false
			}
			for _, it := range items {
				if len(it.Value.Images) == 1 && it.Value.Images[0].Tag == fmt.Sprintf("1.0.%d", k) {
					return it.Value.Name, true
				}
			}
			return "", false
		})
		freight = append(freight, f)
		for _, s := range stageNames {
			if strings.HasPrefix(s, "manual-") {
				api.promote(s, f)
			}
		}
		waitFor(t, 5*time.Minute, fmt.Sprintf("auto-promotions of freight %d", k), func() (struct{}, bool) {
			n := 0
			for _, p := range chaosPromotions(t, env) {
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
		for _, p := range chaosPromotions(t, env) {
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
	ps := chaosPromotions(t, env)
	phases := map[model.PromotionPhase]int{}
	auto := map[string]int{}
	for _, p := range ps {
		phases[p.Status.Phase]++
		if p.Annotations[model.AnnotationPromotionCreatedBy] == "auto" {
			auto[p.Spec.Stage+"/"+p.Spec.Freight]++
		}
	}
	commits := map[string]int{} // promotion → commits pushed
	for _, s := range stageNames {
		for _, subject := range strings.Split(git.Run(t, git.Path(s), "log", "--format=%s", "main"), "\n") {
			if name, ok := strings.CutPrefix(subject, "promote "); ok {
				commits[name]++
			}
		}
	}
	var faults testenv.FaultCounts
	for _, p := range procs {
		c := p.proxy.Counts()
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
	fmt.Fprintf(&b, `apiVersion: kargo.akuity.io/v1alpha1
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
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: app
  namespace: chaos
spec:
  interval: 2s
  freightCreationPolicy: Automatic
  subscriptions:
  - image:
      repoURL: %[1]s
      imageSelectionStrategy: SemVer
      discoveryLimit: 5
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: smoke
  namespace: chaos
spec:
  metrics:
  - name: up
    count: 2
    interval: 200ms
    successCondition: result == "ok"
    provider:
      web:
        url: %[2]s/healthz
        jsonPath: "{$.status}"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionTask
metadata:
  name: set-tag
  namespace: chaos
spec:
  vars:
  - name: repoURL
  steps:
  - uses: git-clone
    config:
      repoURL: ${{ vars.repoURL }}
      checkout:
      - branch: main
        path: ./src
  - uses: yaml-update
    config:
      path: ./src/values.yaml
      updates:
      - key: image.tag
        value: ${{ imageFrom("%[1]s").Tag }}
  - uses: git-commit
    config:
      path: ./src
      message: promote ${{ ctx.promotion }}
  - uses: git-push
    config:
      path: ./src
`, image, appURL)
	for _, s := range stages {
		fmt.Fprintf(&b, `---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: %s
  namespace: chaos
spec:
  requestedFreight:
  - origin:
      kind: Warehouse
      name: app
    sources:
      direct: true
  promotionTemplate:
    spec:
      steps:
      - task:
          name: set-tag
        vars:
        - name: repoURL
          value: %s
  verification:
    analysisTemplates:
    - name: smoke
`, s, git.URL(s))
	}
	return b.String()
}

func chaosPhases(t testing.TB, env *service.Env) map[model.PromotionPhase]int {
	phases := map[model.PromotionPhase]int{}
	for _, p := range chaosPromotions(t, env) {
		phases[p.Status.Phase]++
	}
	return phases
}

func chaosPromotions(t testing.TB, env *service.Env) []model.Promotion {
	t.Helper()
	items, _, err := state.List[model.Promotion](t.Context(), env.Store.KV(state.Promotions), state.Prefix("chaos"), 0, "")
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

// chaosAPI calls the gateways, any of which may be down: a request is
// retried (with its Idempotency-Key) on another until it is answered.
type chaosAPI struct {
	t     testing.TB
	urls  []string
	token string
}

func (a *chaosAPI) waitReady() {
	waitFor(a.t, 2*time.Minute, "the gateways ready", func() (struct{}, bool) {
		for _, u := range a.urls {
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

// do sends the request until a gateway answers below 500 and returns the
// status and body.
func (a *chaosAPI) do(method, path, contentType, key string, body []byte) (int, []byte) {
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

func (a *chaosAPI) apply(manifests string) {
	a.t.Helper()
	key := fmt.Sprintf("apply-%x", sha256.Sum256([]byte(manifests))) // one per body
	if st, out := a.do("POST", "/v1/resources", "application/yaml", key, []byte(manifests)); st != http.StatusOK {
		a.t.Fatalf("apply: %d %s", st, out)
	}
}

func (a *chaosAPI) promote(stage, freight string) {
	a.t.Helper()
	body, _ := json.Marshal(map[string]string{"freight": freight})
	if st, out := a.do("POST", "/v1/projects/chaos/stages/"+stage+"/promotions", "application/json", "promote-"+stage+"-"+freight, body); st != http.StatusCreated {
		a.t.Fatalf("promote %s into %s: %d %s", freight, stage, st, out)
	}
}

// chaosProc is one service process, killed and started again.
type chaosProc struct {
	name, bin string
	args      []string
	env       []string
	proxy     *testenv.FaultProxy
	log       *chaosLog

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *chaosProc) start(t testing.TB) {
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
func (p *chaosProc) kill() {
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

func (p *chaosProc) stop() { p.term() }

// term stops the process with SIGTERM (SIGKILL after 15 s) and reports its
// exit code and whether it stopped on its own; -1 when it was not running.
func (p *chaosProc) term() (code int, graceful bool) {
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

// chaosLog keeps a process's output (and copies it to file, if set).
type chaosLog struct {
	mu    sync.Mutex
	lines []string
	part  string
	file  *os.File
}

func (l *chaosLog) Write(b []byte) (int, error) {
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

func (l *chaosLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[max(0, len(l.lines)-n):], "\n")
}
