package promoter

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// TestKubeConfigReachesArgoCD: CARAVAN_KUBECONFIG gives the step engine
// its Kubernetes client, so argocd health checks read Applications. The
// API server is an httptest stand-in answering the Kubernetes REST paths
// of argoproj.io/v1alpha1 applications (the real kube-apiserver with the
// Application CRD runs in the e2e suite of internal/steps).
func TestKubeConfigReachesArgoCD(t *testing.T) {
	t.Parallel()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/guestbook" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"apiVersion":"argoproj.io/v1alpha1","kind":"Application","metadata":{"name":"guestbook","namespace":"argocd"},
			"status":{"health":{"status":"Healthy"},"sync":{"status":"Synced"}}}`)
	}))
	t.Cleanup(api.Close)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kubeconfig := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: " + api.URL + "}\nusers:\n- name: u\n  user: {token: kube-token}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n"
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	cfg := Config{Common: h.common, KubeConfig: path}
	kube, err := kubeClient(cfg.KubeConfig, "")
	if err != nil || kube == nil {
		t.Fatalf("kube client: %v", err)
	}
	e, err := newEngine(cfg.withDefaults(), h.env, slog.New(slog.DiscardHandler), kube, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := func(name string) model.Health {
		return e.Health(ctx, "demo", []model.HealthCheckStep{{Uses: "argocd-update", Config: map[string]any{"apps": []any{map[string]any{"name": name}}}}})
	}
	if got := check("guestbook"); got.Status != model.HealthStateHealthy {
		t.Fatalf("health %+v", got)
	}
	if got := check("absent"); got.Status != model.HealthStateUnknown || !strings.Contains(strings.Join(got.Issues, " "), "argocd/absent") {
		t.Fatalf("missing app: %+v", got)
	}
}

func TestKubeConfigErrors(t *testing.T) {
	t.Parallel()
	if _, err := kubeClient(filepath.Join(t.TempDir(), "missing"), ""); err == nil || !strings.Contains(err.Error(), "CARAVAN_KUBECONFIG") {
		t.Fatalf("missing CARAVAN_KUBECONFIG file: %v", err)
	}
	if _, err := kubeClient("", filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "KUBECONFIG") {
		t.Fatalf("missing KUBECONFIG file: %v", err)
	}
	// Outside a cluster and without a kubeconfig there is no client, and
	// the promoter still runs (argocd steps then fail saying so).
	if os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		if kube, err := kubeClient("", ""); kube != nil || err != nil {
			t.Fatalf("no cluster: %v %v", kube, err)
		}
	}
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Run(ctx, Deps{Config: Config{Common: h.common, KubeConfig: "/nonexistent/kubeconfig"}, Logger: slog.New(slog.DiscardHandler), Env: h.env})
	if err == nil || !strings.Contains(err.Error(), "CARAVAN_KUBECONFIG /nonexistent/kubeconfig") {
		t.Fatalf("Run with a bad kubeconfig: %v", err)
	}
}
