//go:build e2e

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery"
	"github.com/caravan-cd/caravan/services/gateway"
	"github.com/caravan-cd/caravan/services/promoter"
	"github.com/caravan-cd/caravan/services/verifier"
)

// helmChart runs the pinned helm on deploy/helm/caravan.
type helmChart struct {
	t         *testing.T
	bin, path string
	env       []string
}

func newHelmChart(t *testing.T) *helmChart {
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	return &helmChart{t: t, bin: toolPath(t, repoRoot, "helm"), path: filepath.Join(repoRoot, "deploy", "helm", "caravan"),
		env: append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")}
}

func (h *helmChart) run(args ...string) (string, error) {
	cmd := exec.Command(h.bin, args...)
	cmd.Env = h.env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("helm %s: %w: %s%s", strings.Join(args, " "), err, errOut.String(), out.String())
	}
	return out.String(), nil
}

// template renders the chart with --set values into its documents.
func (h *helmChart) template(set ...string) ([]map[string]any, error) {
	args := []string{"template", "caravan", h.path, "--namespace", "caravan"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := h.run(args...)
	if err != nil {
		return nil, err
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var d map[string]any
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs, nil
}

// TestChartE2E checks deploy/helm/caravan with the real helm: lint
// --strict clean in its variants; every Caravan container probed on its
// admin port, non-root, read-only root filesystem; every CARAVAN_* variable
// it sets read by the service (one-to-one with the README's table); values
// it owns refused in config; and the rendered manifests accepted by a real
// kube-apiserver (server-side apply, dry run).
func TestChartE2E(t *testing.T) {
	h := newHelmChart(t)
	variants := [][]string{
		nil,
		{"nats.enabled=false", "nats.url=nats://nats.example:4222", "nats.credsSecret=caravan-nats"},
		{"ingress.enabled=true", "serviceMonitor.enabled=true", "admin.pprof=true"},
	}
	for _, set := range variants {
		args := []string{"lint", "--strict", h.path}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		if out, err := h.run(args...); err != nil {
			t.Errorf("lint %v: %v\n%s", set, err, out)
		}
	}

	// What the chart must refuse, with the value named.
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"nats.enabled=false"}, "nats.url: required"},
		{[]string{"config.CARAVAN_NATS_URL=nats://x:4222"}, "config.CARAVAN_NATS_URL: set by the chart"},
		{[]string{"promoter.config.CARAVAN_SECRET_KEY=abc"}, "config.CARAVAN_SECRET_KEY: set by the chart"},
		{[]string{"config.CARAVAN_REPLICA_ID=one"}, "config.CARAVAN_REPLICA_ID: set by the chart"},
		{[]string{"config.CARAVAN_NATS_PASSWORD=pw"}, "config.CARAVAN_NATS_PASSWORD: set by the chart"},
		{[]string{"nats.credsSecret=caravan-nats"}, "nats.credsSecret: only with nats.enabled=false"},
	} {
		if _, err := h.template(tc.set...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("template %v: err = %v, want one containing %q", tc.set, err, tc.want)
		}
	}

	docs, err := h.template("config.CARAVAN_RECONCILE_INTERVAL=20s", "promoter.config.CARAVAN_PROMOTION_CONCURRENCY=32")
	if err != nil {
		t.Fatal(err)
	}
	known := documentedVariables(t)
	kinds := map[string]int{}
	for _, d := range docs {
		kind := d["kind"].(string)
		kinds[kind]++
		if kind != "Deployment" && kind != "Job" {
			continue
		}
		name := dig[string](d, "metadata", "name")
		pod := dig[map[string]any](d, "spec", "template", "spec")
		if sc := dig[map[string]any](pod, "securityContext"); sc["runAsNonRoot"] != true {
			t.Errorf("%s: pod not runAsNonRoot", name)
		}
		for _, c := range dig[[]any](pod, "containers") {
			c := c.(map[string]any)
			if dig[bool](c, "securityContext", "readOnlyRootFilesystem") != true {
				t.Errorf("%s: root filesystem not read-only", name)
			}
			if kind == "Deployment" {
				for _, probe := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
					if dig[string](c, probe, "httpGet", "port") != "admin" {
						t.Errorf("%s: %s not on the admin port", name, probe)
					}
				}
				if dig[string](c, "readinessProbe", "httpGet", "path") != "/readyz" {
					t.Errorf("%s: readiness not /readyz", name)
				}
			}
			seen := map[string]bool{}
			for _, e := range dig[[]any](c, "env") {
				n := e.(map[string]any)["name"].(string)
				// The replica ID is the pod's name, from the downward API.
				if n == "POD_NAME" && kind == "Deployment" && dig[string](e.(map[string]any), "valueFrom", "fieldRef", "fieldPath") != "metadata.name" {
					t.Errorf("%s: POD_NAME is not the pod's name", name)
				}
				if seen[n] {
					t.Errorf("%s: %s set twice", name, n)
				}
				seen[n] = true
				if strings.HasPrefix(n, "CARAVAN_") && !known[n] {
					t.Errorf("%s: sets %s, which no service reads", name, n)
				}
			}
			for _, want := range []string{"CARAVAN_NATS_URL", "CARAVAN_SECRET_KEY", "CARAVAN_JS_REPLICAS", "CARAVAN_RECONCILE_INTERVAL"} {
				if !seen[want] {
					t.Errorf("%s: %s not set", name, want)
				}
			}
			// Each component authenticates as its own NATS user.
			if !seen["CARAVAN_NATS_USER"] || !seen["CARAVAN_NATS_PASSWORD"] {
				t.Errorf("%s: no NATS user of its own", name)
			}
			if kind == "Deployment" && !seen["POD_NAME"] {
				t.Errorf("%s: POD_NAME (the replica ID) not set", name)
			}
			if strings.HasSuffix(name, "-promoter") && !seen["CARAVAN_PROMOTION_CONCURRENCY"] {
				t.Errorf("%s: promoter.config not applied", name)
			}
		}
	}
	for kind, want := range map[string]int{"Deployment": 4, "StatefulSet": 1, "Job": 1, "PodDisruptionBudget": 5} {
		if kinds[kind] != want {
			t.Errorf("%d %s, want %d", kinds[kind], kind, want)
		}
	}

	// A real API server takes every manifest (server-side apply, dry run:
	// no controllers run here).
	kube := testenv.KubeAPIServer(t)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed test server
	call := func(method, path, contentType string, body []byte) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, kube.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+kube.Token)
		req.Header.Set("Content-Type", contentType)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, out := call("POST", "/api/v1/namespaces", "application/json", []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"caravan"}}`)); st != http.StatusCreated {
		t.Fatalf("create namespace: %d %s", st, out)
	}
	resources := map[string]struct {
		prefix, plural string
		namespaced     bool
	}{
		"ConfigMap":           {"/api/v1", "configmaps", true},
		"Secret":              {"/api/v1", "secrets", true},
		"Service":             {"/api/v1", "services", true},
		"ServiceAccount":      {"/api/v1", "serviceaccounts", true},
		"Deployment":          {"/apis/apps/v1", "deployments", true},
		"StatefulSet":         {"/apis/apps/v1", "statefulsets", true},
		"Job":                 {"/apis/batch/v1", "jobs", true},
		"PodDisruptionBudget": {"/apis/policy/v1", "poddisruptionbudgets", true},
		"ClusterRole":         {"/apis/rbac.authorization.k8s.io/v1", "clusterroles", false},
		"ClusterRoleBinding":  {"/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", false},
		"Ingress":             {"/apis/networking.k8s.io/v1", "ingresses", true},
	}
	withIngress, err := h.template("ingress.enabled=true")
	if err != nil {
		t.Fatal(err)
	}
	applied := 0
	for _, d := range withIngress {
		kind := d["kind"].(string)
		r, ok := resources[kind]
		if !ok {
			t.Errorf("no API path for %s in the test", kind)
			continue
		}
		name := dig[string](d, "metadata", "name")
		path := r.prefix
		if r.namespaced {
			path += "/namespaces/caravan"
		}
		path += "/" + r.plural + "/" + name + "?dryRun=All&fieldManager=caravan-chart-test&fieldValidation=Strict"
		body, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if st, out := call("PATCH", path, "application/apply-patch+yaml", body); st != http.StatusOK && st != http.StatusCreated {
			t.Errorf("apply %s %s: %d %s", kind, name, st, out)
			continue
		}
		applied++
	}
	t.Logf("%d manifests accepted by kube-apiserver (server-side apply, dry run)", applied)
}

// documentedVariables are the CARAVAN_* names the services read.
func documentedVariables(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	for _, cfg := range []any{&discovery.Config{}, &gateway.Config{}, &promoter.Config{}, &verifier.Config{}, &service.AdminConfig{}} {
		var b bytes.Buffer
		if err := envconfig.Usagef("CARAVAN", cfg, &b, "{{range .}}{{.Key}}\n{{end}}"); err != nil {
			t.Fatal(err)
		}
		for k := range strings.FieldsSeq(b.String()) {
			known[k] = true
		}
	}
	return known
}

// dig walks nested maps by keys; the zero T when a step is missing.
func dig[T any](m map[string]any, keys ...string) T {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			var zero T
			return zero
		}
		v = mm[k]
	}
	out, _ := v.(T)
	return out
}

// TestChartNATSUsersE2E runs the real nats-server with the NATS configuration
// the chart renders for its StatefulSet (one node: the cluster block and
// the in-pod paths replaced) and shows its users work as documented: the
// setup user declares the layout, each service's user passes the layout
// check and is refused creating a stream.
func TestChartNATSUsersE2E(t *testing.T) {
	h := newHelmChart(t)
	out, err := h.run("template", "caravan", h.path, "--namespace", "caravan", "--show-only", "templates/nats.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var conf string
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var d map[string]any
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if d["kind"] == "ConfigMap" {
			conf = dig[string](d, "data", "nats.conf")
		}
	}
	if !strings.Contains(conf, "authorization {") {
		t.Fatalf("no users in the rendered nats.conf:\n%s", conf)
	}
	dir := t.TempDir()
	addr := freePort(t)
	conf, _, ok := strings.Cut(conf, "cluster {")
	if !ok {
		t.Fatalf("no cluster block in the rendered nats.conf:\n%s", conf)
	}
	for _, r := range [][2]string{
		{"listen: 0.0.0.0:4222", "listen: " + addr},
		{"http: 0.0.0.0:8222\n", ""},
		{"/var/run/nats/nats.pid", filepath.Join(dir, "nats.pid")},
		{"store_dir: /data", "store_dir: " + filepath.Join(dir, "js")},
	} {
		if !strings.Contains(conf, r[0]) {
			t.Fatalf("rendered nats.conf lacks %q", r[0])
		}
		conf = strings.Replace(conf, r[0], r[1], 1)
	}
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	users := append(append([]string(nil), service.Services...), service.SetupUser)
	cmd := exec.Command(toolPath(t, repoRoot, "nats-server"), "--config", path)
	cmd.Env = append(os.Environ(), "POD_NAME=nats-0")
	for _, u := range users {
		cmd.Env = append(cmd.Env, "CARAVAN_"+strings.ToUpper(u)+"_PASSWORD="+u+"-secret")
	}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	connect := func(u string, errs chan<- error) *nats.Conn {
		t.Helper()
		nc, err := events.Connect(t.Context(), events.NATSConfig{URL: "nats://" + addr, User: "caravan-" + u, Password: u + "-secret", ConnectTimeout: time.Minute},
			"chart-test-"+u, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case errs <- err:
				default:
				}
			}))
		if err != nil {
			t.Fatalf("%s: %v\n%s", u, err, logs.String())
		}
		t.Cleanup(nc.Close)
		return nc
	}
	c := service.Common{StreamConfig: events.DefaultStreamConfig(), AuditMaxAge: time.Hour}
	setupJS, err := jetstream.New(connect(service.SetupUser, make(chan error, 1)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := service.Setup(ctx, setupJS, c); err != nil {
		t.Fatalf("setup as caravan-setup: %v", err)
	}
	for _, u := range service.Services {
		errs := make(chan error, 8)
		js, err := jetstream.New(connect(u, errs))
		if err != nil {
			t.Fatal(err)
		}
		if err := service.CheckLayout(ctx, js, c); err != nil {
			t.Errorf("%s: layout check: %v", u, err)
		}
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = js.CreateStream(sctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe"}})
		scancel()
		if err == nil {
			t.Errorf("%s created a stream", u)
			continue
		}
		select {
		case err := <-errs:
			if !strings.Contains(err.Error(), "$JS.API.STREAM.CREATE.PROBE") {
				t.Errorf("%s: %v, want a permissions violation for $JS.API.STREAM.CREATE.PROBE", u, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s: no permissions violation reported", u)
		}
	}
}
