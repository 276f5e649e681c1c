//go:build e2e

package promoter

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// e2eSecretKey is the secret key the standalone promoters of these tests
// share (a standalone service refuses to start without one).
const e2eSecretKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// A promoter process killed with SIGKILL in the middle of a promotion:
// another promoter process takes the stage over when the lease expires and
// resumes at the step that was running; the step before it is not run
// again.
func TestE2EPromoterSIGKILLResume(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "caravan-promoter")
	build := exec.Command("go", "build", "-o", bin, "./cmd/caravan-promoter")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build promoter: %v", err)
	}

	var firstHits, blockHits atomic.Int32
	blocked := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/first":
			firstHits.Add(1)
		case "/block":
			if blockHits.Add(1) == 1 {
				blocked <- struct{}{}
				select { // hang until the promoter dies
				case <-r.Context().Done():
				case <-time.After(time.Minute):
				}
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	h := newHarness(t)
	stage := h.stage("dev", func(s *model.Stage) {
		s.Spec.PromotionTemplate.Spec.Steps = []model.PromotionStep{
			{Uses: "http", As: "first", Config: map[string]any{"url": srv.URL + "/first"}},
			{Uses: "http", As: "block", Config: map[string]any{"url": srv.URL + "/block", "timeout": "2m"}},
		}
	})
	f := h.freight("v1", time.Now())

	start := func(id string) *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(),
			"CARAVAN_NATS_URL="+h.srv.URL(),
			"CARAVAN_DATA_DIR="+t.TempDir(),
			"CARAVAN_REPLICA_ID="+id,
			// Standalone replicas share one secret key.
			"CARAVAN_SECRET_KEY="+e2eSecretKey,
			// The test's http server listens on loopback, which the
			// egress policy refuses by default.
			"CARAVAN_EGRESS_ALLOW=127.0.0.0/8",
			"CARAVAN_PROMOTION_LEASE_TTL=2s",
			"CARAVAN_LOG_LEVEL=debug",
		)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		})
		return cmd
	}
	a := start("a")
	eventually(t, 60*time.Second, func() bool {
		_, err := h.env.JS.Consumer(t.Context(), events.StreamEvents, events.PromoterPromotionRequested.Durable)
		return err == nil
	}, func() string { return "promoter consumer declared" })

	p := h.promote(stage, f, "alice")
	select {
	case <-blocked:
	case <-time.After(60 * time.Second):
		t.Fatal("promotion never reached its second step")
	}
	if err := a.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_, _ = a.Process.Wait()
	start("b")

	got := h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	if n := firstHits.Load(); n != 1 {
		t.Fatalf("first step ran %d times, want 1", n)
	}
	if n := blockHits.Load(); n != 2 {
		t.Fatalf("second step ran %d times, want 2 (once before the kill, once resumed)", n)
	}
	if len(got.Status.StepExecutionMetadata) != 2 {
		t.Fatalf("steps %+v", got.Status.StepExecutionMetadata)
	}
	if st := h.stageStatus("dev"); st.LastPromotion == nil || st.LastPromotion.Name != p.Name {
		t.Fatalf("stage status %+v", st)
	}
}

// The shipped promoter under the default data dir, the relative
// ./.caravan of `make run`, renders a kustomize overlay and a chart from a
// cloned repo into a rendered branch (kustomize-build used to fail there
// with "outside the work dir" for a path inside it).
func TestE2EPromoterRelativeDataDir(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "caravan-promoter")
	build := exec.Command("go", "build", "-o", bin, "./cmd/caravan-promoter")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build promoter: %v", err)
	}
	git := testenv.GitServer(t)
	url := git.CreateRepo(t, "gitops")
	git.Seed(t, "gitops", map[string]string{
		"base/kustomization.yaml":      "resources:\n  - deployment.yaml\n",
		"base/deployment.yaml":         "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n",
		"env/dev/kustomization.yaml":   "resources:\n  - ../../base\nnamePrefix: dev-\n",
		"chart/Chart.yaml":             "apiVersion: v2\nname: app\nversion: 0.1.0\n",
		"chart/templates/service.yaml": "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\n",
	}, "init")

	h := newHarness(t)
	stage := h.stage("dev", func(s *model.Stage) {
		s.Spec.PromotionTemplate.Spec.Steps = []model.PromotionStep{
			{Uses: "git-clone", Config: map[string]any{"repoURL": url, "checkout": []any{
				map[string]any{"branch": "main", "path": "./src"},
				map[string]any{"branch": "env/dev", "create": true, "path": "./out"},
			}}},
			{Uses: "kustomize-build", Config: map[string]any{"path": "./src/env/dev", "outPath": "./out/manifests.yaml"}},
			{Uses: "helm-template", Config: map[string]any{"path": "./src/chart", "releaseName": "web", "outPath": "./out/chart.yaml"}},
			{Uses: "git-commit", Config: map[string]any{"path": "./out", "message": "render"}},
			{Uses: "git-push", Config: map[string]any{"path": "./out"}},
		}
	})
	f := h.freight("v1", time.Now())

	work := t.TempDir()
	cmd := exec.Command(bin)
	cmd.Dir = work
	cmd.Env = append(os.Environ(),
		"CARAVAN_NATS_URL="+h.srv.URL(),
		"CARAVAN_DATA_DIR=./.caravan",
		"CARAVAN_REPLICA_ID=relative",
		"CARAVAN_SECRET_KEY="+e2eSecretKey,
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	})
	eventually(t, 60*time.Second, func() bool {
		_, err := h.env.JS.Consumer(t.Context(), events.StreamEvents, events.PromoterPromotionRequested.Durable)
		return err == nil
	}, func() string { return "promoter consumer declared" })

	p := h.promote(stage, f, "alice")
	got := h.waitPhase(p.Name, model.PromotionPhaseSucceeded)
	if len(got.Status.StepExecutionMetadata) != 5 {
		t.Fatalf("steps %+v", got.Status.StepExecutionMetadata)
	}
	if m := git.Show(t, "gitops", "env/dev", "manifests.yaml"); !strings.Contains(m, "name: dev-app") {
		t.Fatalf("rendered overlay:\n%s", m)
	}
	if m := git.Show(t, "gitops", "env/dev", "chart.yaml"); !strings.Contains(m, "name: web") {
		t.Fatalf("rendered chart:\n%s", m)
	}
	if _, err := os.Stat(filepath.Join(work, ".caravan", "promoter")); err != nil {
		t.Fatalf("no data in ./.caravan of the working directory: %v", err)
	}
}
