//go:build e2e

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

// uiServer is a `caravan server` with the demo, started as a process from
// the binary go build makes.
type uiServer struct {
	url, token, loginURL string
	logs                 *testenv.SyncBuffer
	bin, work            string
	env                  []string
	proc                 *exec.Cmd
	done                 chan error
}

func startUIServer(t *testing.T, extraEnv ...string) *uiServer {
	t.Helper()
	bin, repoRoot := buildCaravan(t)
	httpAddr := freePort(t)
	s := &uiServer{url: "http://" + httpAddr, logs: &testenv.SyncBuffer{}, bin: bin, work: t.TempDir()}
	s.env = append(os.Environ(),
		"CARAVAN_DEMO=true",
		"CARAVAN_DEMO_DIR="+filepath.Join(repoRoot, "examples", "demo"),
		"CARAVAN_DEMO_PUSH_INTERVAL=15s",
		"CARAVAN_DEMO_REGISTRY_ADDR="+freePort(t),
		"CARAVAN_DEMO_GIT_ADDR="+freePort(t),
		"CARAVAN_HTTP_ADDR="+httpAddr,
		"CARAVAN_EMBEDDED_NATS_ADDR=127.0.0.1:-1",
		// The extra stages' step and metric call this server's own
		// /healthz, which the egress policy refuses unless opened.
		"CARAVAN_EGRESS_ALLOW="+httpAddr,
	)
	s.env = append(s.env, extraEnv...)
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("server log:\n%s", s.logs.String())
		}
	})
	s.start(t)
	b, err := os.ReadFile(filepath.Join(s.work, ".caravan", "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	s.token = strings.TrimSpace(string(b))
	return s
}

// start runs the server (again, on the same data and addresses) and waits
// until it is ready and has printed its sign-in link.
func (s *uiServer) start(t *testing.T) {
	t.Helper()
	s.proc = exec.Command(s.bin, "server")
	s.proc.Dir, s.proc.Env, s.proc.Stdout, s.proc.Stderr = s.work, s.env, s.logs, s.logs
	if err := s.proc.Start(); err != nil {
		t.Fatal(err)
	}
	s.done = make(chan error, 1)
	go func(p *exec.Cmd, done chan error) { done <- p.Wait() }(s.proc, s.done)
	deadline := time.Now().Add(90 * time.Second)
	link := regexp.MustCompile(`url=(http://\S+/login/link/\S+)`)
	for {
		if m := link.FindStringSubmatch(s.logs.String()); m != nil && s.loginURL == "" {
			s.loginURL = m[1]
		}
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && s.loginURL != "" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready (or no sign-in link in the log) after 90 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill stops the server hard (SIGKILL): its streams break.
func (s *uiServer) kill() {
	if s.proc == nil {
		return
	}
	_ = s.proc.Process.Kill()
	// Killed: an exit error is expected; it goes with the server's logs.
	fmt.Fprintf(s.logs, "killed: %v\n", <-s.done)
	s.proc = nil
}

// call sends an API request as the admin.
func (s *uiServer) call(t *testing.T, method, path, contentType string, body []byte, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// browser drives one headless Chromium tab.
type browser struct {
	t      *testing.T
	ctx    context.Context
	shots  string
	docs   string
	axeSrc string
}

func newBrowser(t *testing.T, ctx context.Context) *browser {
	t.Helper()
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatal("chromium is not installed: apt-get install chromium (CI's .ci/run installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelA := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	b := &browser{t: t, ctx: bctx, shots: os.Getenv("CARAVAN_E2E_ARTIFACTS"), docs: os.Getenv("CARAVAN_UI_SCREENSHOTS")}
	if b.shots == "" {
		b.shots = t.TempDir()
	}
	if err := os.MkdirAll(b.shots, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots: %s", b.shots)
	src, err := os.ReadFile("testdata/axe-core/axe.min.js")
	if err != nil {
		t.Fatal(err)
	}
	b.axeSrc = string(src)
	b.do(chromedp.EmulateViewport(1280, 860))
	return b
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.shot("failure")
		b.t.Fatalf("browser: %v", err)
	}
}

func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// wait evaluates a JavaScript predicate until it is truthy. Errors (a
// navigation in between) count as false.
func (b *browser) wait(what, expr string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err == nil && ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			b.shot("failure")
			b.t.Fatalf("waiting for %s (%s): gave up after %s (last error: %v)", what, expr, timeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// shot saves a screenshot of the page as a test artefact (and into the
// docs folder when CARAVAN_UI_SCREENSHOTS names one).
func (b *browser) shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Errorf("save screenshot: %v", err)
	}
	if b.docs != "" && name != "failure" {
		_ = os.WriteFile(filepath.Join(b.docs, name+".png"), png, 0o644)
	}
}

// axe runs the vendored axe-core on the page and fails on serious or
// critical violations.
func (b *browser) axe(page string) {
	b.t.Helper()
	b.do(chromedp.Evaluate[chromedp.Void](b.axeSrc))
	res := eval[[]struct {
		ID     string `json:"id"`
		Impact string `json:"impact"`
		Help   string `json:"help"`
		Nodes  []struct {
			Target []string `json:"target"`
		} `json:"nodes"`
	}](b, `axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => ({target: n.target.map(String)}))})))`)
	for _, v := range res {
		if v.Impact == "serious" || v.Impact == "critical" {
			b.t.Errorf("axe on %s: %s (%s): %s at %v", page, v.ID, v.Impact, v.Help, v.Nodes)
		} else {
			b.t.Logf("axe on %s: %s (%s): %s", page, v.ID, v.Impact, v.Help)
		}
	}
}

const extraStages = `apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: slow-check, namespace: demo}
spec:
  metrics:
  - name: api-healthy
    count: 60
    interval: 2s
    successCondition: result == "ok"
    provider:
      web:
        url: %[1]s/healthz
        jsonPath: "{$.status}"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: soak, namespace: demo, annotations: {kargo.akuity.io/color: violet}}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: compose-output
        as: note
        config: {note: "nothing to deploy"}
  verification:
    analysisTemplates:
    - name: slow-check
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: hold, namespace: demo}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: http
        as: wait-for-change-window
        config:
          method: GET
          url: %[1]s/healthz
          successExpression: "false"
        retry: {timeout: 30m}
`

// TestWebUIE2E drives the web UI of a real `caravan server` running the
// demo in headless Chromium: sign in with the one-time link, see the
// pipeline with its freight, promote prod from a stage's menu and by
// dragging freight onto it and watch both finish without a reload,
// approve, re-verify, abort a verification and a promotion, check that a
// viewer sees no actions, and scan each view with axe-core.
func TestWebUIE2E(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	s := startUIServer(t)
	b := newBrowser(t, ctx)

	// Sign in with the link caravan server printed.
	b.do(chromedp.Navigate(s.loginURL))
	b.axe("sign-in link")
	b.do(chromedp.Click(chromedp.CSS(`form[action^="/login/link/"] button`)))
	b.wait("the projects page", `location.pathname === "/projects" && !!document.querySelector('a[href="/projects/demo"]')`, 30*time.Second)
	// The link works once.
	if st := getStatus(t, s.loginURL); st != http.StatusGone {
		t.Errorf("second use of the link: %d, want 410", st)
	}

	// The pipeline: dev, staging and prod with their freight, live.
	b.do(chromedp.Navigate(s.url + "/projects/demo"))
	b.wait("the live stream", `document.querySelector('#live')?.dataset.state === 'live'`, 30*time.Second)
	b.wait("freight in dev and staging", `!!document.querySelector('#card-dev .fref .alias') && !!document.querySelector('#card-staging .fref .alias')`, 4*time.Minute)
	for _, st := range []string{"dev", "staging", "prod"} {
		if !eval[bool](b, fmt.Sprintf(`!!document.querySelector('#card-%s')`, st)) {
			t.Fatalf("no card for %s", st)
		}
	}
	b.shot("projects-demo")
	b.do(chromedp.Navigate(s.url + "/projects"))
	b.shot("projects")
	b.axe("projects")
	b.do(chromedp.Navigate(s.url + "/projects/demo"))
	b.wait("the live stream", `document.querySelector('#live')?.dataset.state === 'live'`, 30*time.Second)
	b.shot("pipeline")
	b.axe("pipeline")

	// Promote prod from its menu; the card follows without a reload.
	b.do(chromedp.Evaluate[chromedp.Void](`window.__noReload = true`))
	b.do(chromedp.Click(chromedp.CSS(`#card-prod [data-action=promote-menu]`)))
	b.wait("the promote menu", `!!document.querySelector('#dialog[open] button.choice')`, 20*time.Second)
	b.shot("promote-menu")
	alias := eval[string](b, `document.querySelector('#dialog button.choice').dataset.alias`)
	b.do(chromedp.Click(chromedp.CSS(`#dialog button.choice`)))
	b.wait("the confirmation", `!!document.querySelector('#dialog[open] [data-answer=yes]')`, 10*time.Second)
	b.do(chromedp.Click(chromedp.CSS(`#dialog [data-answer=yes]`)))
	b.wait("prod running "+alias+" (live, no reload)", fmt.Sprintf(`window.__noReload && document.querySelector('#card-prod .fref .alias')?.textContent === %q && /last promotion succeeded/.test(document.querySelector('#card-prod')?.textContent)`, alias), 2*time.Minute)
	b.shot("promoted-by-menu")

	// Promote prod by dragging newer freight onto it, once staging has
	// verified some.
	b.wait("newer freight available to prod", fmt.Sprintf(`[...document.querySelectorAll('.fcard')].some(c => c.dataset.eligible.split(' ').includes('prod') && c.dataset.alias !== %q)`, alias), 4*time.Minute)
	drag := eval[string](b, fmt.Sprintf(`[...document.querySelectorAll('.fcard')].find(c => c.dataset.eligible.split(' ').includes('prod') && c.dataset.alias !== %q).dataset.freight`, alias))
	alias2 := eval[string](b, fmt.Sprintf(`document.querySelector('.fcard[data-freight=%q]').dataset.alias`, drag))
	b.do(chromedp.Evaluate[chromedp.Void](`document.querySelector('[data-zoom=fit]').click()`))
	b.do(chromedp.DragAndDrop(chromedp.CSS(fmt.Sprintf(`.fcard[data-freight=%q] .fcard-head`, drag)), chromedp.CSS(`#card-prod header`)))
	b.wait("the confirmation after the drop", `!!document.querySelector('#dialog[open] [data-answer=yes]')`, 10*time.Second)
	b.do(chromedp.Click(chromedp.CSS(`#dialog [data-answer=yes]`)))
	b.wait("prod running "+alias2+" (live, no reload)", fmt.Sprintf(`window.__noReload && document.querySelector('#card-prod .fref .alias')?.textContent === %q && /last promotion succeeded/.test(document.querySelector('#card-prod')?.textContent)`, alias2), 2*time.Minute)

	// The promotion's page: its steps and the diff it pushed.
	var proms struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     struct{ Freight string }
			Status   struct{ Phase string }
		} `json:"items"`
	}
	s.call(t, "GET", "/v1/projects/demo/promotions?stage=prod", "", nil, &proms)
	var promName string
	for _, p := range proms.Items {
		if p.Spec.Freight == drag && p.Status.Phase == "Succeeded" {
			promName = p.Metadata.Name
		}
	}
	if promName == "" {
		t.Fatalf("no succeeded promotion of %s to prod: %+v", drag, proms.Items)
	}
	b.do(chromedp.Navigate(s.url + "/projects/demo/promotions/" + promName))
	b.wait("the steps and the diff", `document.querySelectorAll('.step').length >= 4 && /overlays\/prod/.test(document.querySelector('pre.diff')?.textContent || '')`, 30*time.Second)
	b.shot("promotion")
	b.axe("promotion")

	// Re-verify staging (the demo verifies dev and staging) from its
	// card's menu.
	var vl struct{ Items []json.RawMessage }
	s.call(t, "GET", "/v1/projects/demo/stages/staging/verifications", "", nil, &vl)
	before := len(vl.Items)
	b.do(chromedp.Navigate(s.url + "/projects/demo"))
	b.do(chromedp.Click(chromedp.CSS(`#card-staging [data-action=stage-menu]`)))
	b.do(chromedp.Click(chromedp.CSS(`#dialog[open] [data-action=reverify]`)))
	b.wait("the re-verification toast", `/Verifying staging again/.test(document.querySelector('#toasts').textContent)`, 20*time.Second)
	waitUntil(t, "a new verification of staging", 90*time.Second, func() bool {
		s.call(t, "GET", "/v1/projects/demo/stages/staging/verifications", "", nil, &vl)
		return len(vl.Items) > before
	})

	// Approve freight for prod on its page.
	var fl struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Status   struct {
				ApprovedFor map[string]any `json:"approvedFor"`
			} `json:"status"`
		} `json:"items"`
	}
	s.call(t, "GET", "/v1/projects/demo/freight", "", nil, &fl)
	var toApprove string
	for _, f := range fl.Items {
		if _, ok := f.Status.ApprovedFor["prod"]; !ok {
			toApprove = f.Metadata.Name
		}
	}
	if toApprove == "" {
		t.Fatal("no freight left to approve for prod")
	}
	b.do(chromedp.Navigate(s.url + "/projects/demo/freight/" + toApprove))
	b.do(chromedp.SetValue(chromedp.CSS(`[data-action-form=approve] select`), "prod"))
	b.do(chromedp.Click(chromedp.CSS(`[data-action-form=approve] button`)))
	b.wait("the approval toast", `/Approved for prod/.test(document.querySelector('#toasts').textContent)`, 20*time.Second)
	waitUntil(t, "the approval stored", 30*time.Second, func() bool {
		var f struct {
			Status struct {
				ApprovedFor map[string]any `json:"approvedFor"`
			} `json:"status"`
		}
		s.call(t, "GET", "/v1/projects/demo/freight/"+toApprove, "", nil, &f)
		_, ok := f.Status.ApprovedFor["prod"]
		return ok
	})
	b.wait("the page shows the approval live", `/Approved for\s*prod/.test(document.querySelector('#freight-detail').textContent.replace(/\s+/g, ' '))`, 30*time.Second)
	b.shot("freight")
	b.axe("freight")

	// Abort: a verification that takes minutes, and a promotion whose step
	// waits for ever. The graph gains the two stages live.
	manifests := fmt.Sprintf(extraStages, s.url)
	if st := s.call(t, "POST", "/v1/resources", "application/yaml", []byte(manifests), nil); st != http.StatusOK {
		t.Fatalf("apply the extra stages: %d", st)
	}
	b.do(chromedp.Navigate(s.url + "/projects/demo"))
	b.wait("the soak and hold stages", `!!document.querySelector('#card-soak') && !!document.querySelector('#card-hold')`, 30*time.Second)
	for _, st := range []string{"soak", "hold"} {
		if code := s.call(t, "POST", "/v1/projects/demo/stages/"+st+"/promotions", "application/json", []byte(`{"warehouse":"app"}`), nil); code != http.StatusCreated {
			t.Fatalf("promote %s: %d", st, code)
		}
	}
	b.wait("the verification of soak running", `/verification\s*Running/.test(document.querySelector('#card-soak')?.textContent || '')`, 2*time.Minute)
	b.wait("the promotion of hold running", `/promoting/.test(document.querySelector('#card-hold')?.textContent || '')`, 2*time.Minute)
	b.shot("pipeline-busy")
	b.do(chromedp.Click(chromedp.CSS(`#card-soak [data-action=stage-menu]`)))
	b.do(chromedp.Click(chromedp.CSS(`#dialog[open] [data-action=abort-verification]`)))
	b.wait("the confirmation", `!!document.querySelector('#dialog[open] [data-answer=yes]')`, 10*time.Second)
	b.do(chromedp.Click(chromedp.CSS(`#dialog [data-answer=yes]`)))
	b.wait("the verification of soak aborted (live)", `/verification\s*Aborted/.test(document.querySelector('#card-soak')?.textContent || '')`, 2*time.Minute)
	b.do(chromedp.Click(chromedp.CSS(`#card-hold [data-action=stage-menu]`)))
	b.do(chromedp.Click(chromedp.CSS(`#dialog[open] [data-action=abort-promotion]`)))
	b.wait("the confirmation", `!!document.querySelector('#dialog[open] [data-answer=yes]')`, 10*time.Second)
	b.do(chromedp.Click(chromedp.CSS(`#dialog [data-answer=yes]`)))
	b.wait("the promotion of hold aborted (live)", `/last promotion aborted/.test(document.querySelector('#card-hold')?.textContent || '')`, 2*time.Minute)

	// The other views.
	b.do(chromedp.Navigate(s.url + "/projects/demo/stages/staging"))
	b.wait("the stage page", `!!document.querySelector('#h-history')`, 10*time.Second)
	b.shot("stage")
	b.axe("stage")
	vid := eval[string](b, `(document.querySelector('a[href*="/verifications/"]')?.getAttribute('href') || '')`)
	if vid == "" {
		t.Fatal("the stage page links no verification")
	}
	b.do(chromedp.Navigate(s.url + vid))
	b.wait("the verification's chart", `!!document.querySelector('.chart svg circle')`, 10*time.Second)
	b.shot("verification")
	b.axe("verification")
	b.do(chromedp.Navigate(s.url + "/projects/demo/warehouses/app"))
	b.wait("the warehouse page", `!!document.querySelector('#h-disc')`, 10*time.Second)
	b.shot("warehouse")
	b.axe("warehouse")
	b.do(chromedp.Navigate(s.url + "/projects/demo/compare?kind=stage&a=staging&b=prod"))
	b.wait("the comparison", `!!document.querySelector('.comparison')`, 10*time.Second)
	b.shot("compare")
	b.axe("compare")
	b.do(chromedp.Navigate(s.url + "/deadletters"))
	b.wait("the dead letters page", `!!document.querySelector('h1')`, 10*time.Second)
	b.axe("dead letters")
	at := time.Now().UTC().Add(-2 * time.Minute).Format("2006-01-02T15:04")
	b.do(chromedp.Navigate(s.url + "/projects/demo?at=" + at))
	b.wait("the pipeline in the past", `/Showing what ran where/.test(document.body.textContent) && !document.querySelector('#graph [data-action=promote-menu]')`, 10*time.Second)
	b.shot("time-slider")

	// A lost connection shows itself, and the stream resumes.
	b.do(chromedp.Navigate(s.url + "/projects/demo"))
	b.wait("the live stream", `document.querySelector('#live')?.dataset.state === 'live'`, 30*time.Second)

	// A lost connection shows itself; the page resumes once the server is
	// back (from the last event id) and catches up without a reload.
	b.do(chromedp.Evaluate[chromedp.Void](`window.__noReload = true`))
	s.kill()
	b.wait("the lost connection shown", `document.querySelector('#live')?.dataset.state === 'lost' && /lost/.test(document.querySelector('#live').textContent)`, 30*time.Second)
	b.shot("connection-lost")
	s.start(t)
	b.wait("the stream back", `window.__noReload && document.querySelector('#live')?.dataset.state === 'live'`, 90*time.Second)

	// A phone.
	b.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
	b.do(chromedp.Navigate(s.url + "/projects/demo"))
	b.wait("the stage list", `!!document.querySelector('#card-prod')`, 10*time.Second)
	b.shot("phone")
	b.do(chromedp.EmulateViewport(1280, 860))

	// A viewer sees state, not actions.
	var tok struct {
		Token string `json:"token"`
	}
	if st := s.call(t, "POST", "/v1/projects/demo/tokens", "application/json", []byte(`{"name":"ui-viewer","role":"viewer"}`), &tok); st != http.StatusCreated {
		t.Fatalf("create a viewer token: %d", st)
	}
	b.do(chromedp.Click(chromedp.CSS(`form.logout button`)))
	b.wait("the sign-in page", `location.pathname === "/login"`, 10*time.Second)
	b.axe("sign in")
	b.shot("login")
	b.do(chromedp.SendKeys(chromedp.ID("token"), tok.Token), chromedp.Click(chromedp.CSS(`form[action="/login"] button[type=submit]`)))
	b.wait("the projects page as viewer", `location.pathname === "/projects"`, 20*time.Second)
	b.do(chromedp.Navigate(s.url + "/projects/demo"))
	b.wait("the pipeline as viewer", `!!document.querySelector('#card-prod .fref .alias')`, 20*time.Second)
	if n := eval[int](b, `document.querySelectorAll('[data-action], [data-action-form], .fcard[draggable=true]').length`); n != 0 {
		t.Errorf("a viewer sees %d action controls on the pipeline", n)
	}
	b.do(chromedp.Navigate(s.url + "/projects/demo/freight/" + drag))
	if n := eval[int](b, `document.querySelectorAll('[data-action], [data-action-form]').length`); n != 0 {
		t.Errorf("a viewer sees %d action controls on a freight page", n)
	}
	// And the API refuses a viewer's promotion made with the session.
	code := eval[int](b, `fetch('/v1/projects/demo/stages/prod/promotions', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}, body: '{"warehouse":"app"}'}).then(r => r.status)`)
	if code != http.StatusForbidden {
		t.Errorf("a viewer's promotion: %d, want 403", code)
	}
	// Without the CSRF token the session may not act at all.
	code = eval[int](b, `fetch('/v1/projects/demo/warehouses/app/refresh', {method: 'POST'}).then(r => r.status)`)
	if code != http.StatusForbidden {
		t.Errorf("a session request without the CSRF token: %d, want 403", code)
	}
}

func getStatus(t testing.TB, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func waitUntil(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after %s", what, timeout)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
