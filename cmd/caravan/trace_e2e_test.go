//go:build e2e

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/gateway"
)

// jaegerConfig is Jaeger v2 with only what the test needs: memory storage,
// the OTLP receiver, the query HTTP API and a health check, all on
// loopback (its default config binds all interfaces and stops slowly).
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    enable_tracing: false
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  healthcheckv2:
    use_v2: true
    http:
      endpoint: %s
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// tracePipeline has one stage with no verification whose promotion runs
// one step that always succeeds.
const tracePipeline = `apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: traced
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: app
  namespace: traced
spec:
  subscriptions:
  - image:
      repoURL: %s
      constraint: ^1.0.0
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: dev
  namespace: traced
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
      - uses: compose-output
        as: out
        config:
          freight: ${{ ctx.targetFreight.name }}
`

// jaegerTrace is a trace as GET /api/traces returns it.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		References    []struct {
			RefType string `json:"refType"`
			TraceID string `json:"traceID"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
	} `json:"spans"`
}

func startJaeger(t *testing.T) (otlpHTTP, query string) {
	t.Helper()
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(repoRoot, "scripts", "tool.sh"), "jaeger").Output()
	if err != nil {
		t.Fatalf("scripts/tool.sh jaeger: %v", err)
	}
	bin := strings.TrimSpace(string(out))
	queryHTTP, queryGRPC, health, otlpGRPC := freePort(t), freePort(t), freePort(t), freePort(t)
	otlpHTTP = freePort(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, queryHTTP, queryGRPC, health, otlpGRPC, otlpHTTP), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if err := <-done; t.Failed() {
			t.Logf("jaeger (%v) log:\n%s", err, logs.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + health + "/status")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("jaeger exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("jaeger not healthy after 30 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return otlpHTTP, "http://" + queryHTTP
}

// tracedCaravan is Caravan running in-process, exporting its traces to a
// real Jaeger.
type tracedCaravan struct {
	t        *testing.T
	info     server.Info
	query    string // Jaeger's query API
	registry *testenv.OCIRegistry
	verified *nats.Subscription
	stop     func()
}

func startTraced(t *testing.T) *tracedCaravan {
	t.Helper()
	otlpHTTP, query := startJaeger(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+otlpHTTP)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_SERVICE_NAME", "caravan")
	t.Setenv("OTEL_SDK_DISABLED", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		Config: gateway.Config{
			Common: service.Common{
				DataDir:      t.TempDir(),
				StreamConfig: events.DefaultStreamConfig(),
				LogConfig:    telemetry.LogConfig{Level: "info", Format: "text"},
			},
			HTTPAddr:        ln.Addr().String(),
			MaxBodyBytes:    10 << 20,
			ShutdownTimeout: 5 * time.Second,
		},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var logs testenv.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan server.Info, 1)
	go func() {
		done <- server.Run(ctx, cfg, server.Options{
			Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
			Listener: ln,
			Started:  func(i server.Info) { started <- i },
		})
	}()
	c := &tracedCaravan{t: t, query: query, registry: testenv.Registry(t)}
	stopped := false
	c.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server stopped with: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("server did not stop")
		}
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("caravan log:\n%s", logs.String())
		}
	})
	select {
	case c.info = <-started:
	case err := <-done:
		stopped = true
		t.Fatalf("server stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server did not start")
	}
	nc, err := c.info.ConnectNATS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if c.verified, err = nc.SubscribeSync(events.SubjectRoot + ".traced." + string(events.TypeStageVerified) + ".>"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := c.api(http.MethodGet, "/readyz", "")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

func (c *tracedCaravan) api(method, path, body string) (int, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.info.APIURL+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.info.AdminToken)
	if strings.HasPrefix(body, "{") {
		req.Header.Set("Content-Type", "application/json")
	} else if body != "" {
		req.Header.Set("Content-Type", "application/yaml")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, b
}

func (c *tracedCaravan) apply(manifests string) {
	c.t.Helper()
	if code, body := c.api(http.MethodPost, "/v1/resources", manifests); code != http.StatusOK {
		c.t.Fatalf("apply: %d %s", code, body)
	}
}

// verifiedThenTrace waits for StageVerified, stops the server (which
// flushes the exporter) and waits for Jaeger to hold one trace with chain.
func (c *tracedCaravan) verifiedThenTrace(chain []string) {
	t := c.t
	t.Helper()
	if _, err := c.verified.NextMsg(60 * time.Second); err != nil {
		t.Fatalf("no StageVerified: %v", err)
	}
	c.drained()
	c.stop()
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for {
		missing, err := checkTrace(c.query, chain)
		if err == nil && missing == "" {
			t.Logf("one trace: %s", strings.Join(chain, " → "))
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = missing
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trace holds the chain: %s", last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// drained waits until every durable consumer of the events stream has
// processed and acknowledged what was published: the last hop's span
// ("process StageVerified") exists only once a consumer took the event.
func (c *tracedCaravan) drained() {
	t := c.t
	t.Helper()
	nc, err := c.info.ConnectNATS()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for {
		stream, err := js.Stream(ctx, events.StreamEvents)
		if err != nil {
			t.Fatalf("events stream: %v", err)
		}
		busy := ""
		for info := range stream.ListConsumers(ctx).Info() {
			if info.NumPending > 0 || info.NumAckPending > 0 {
				busy = info.Name
			}
		}
		if busy == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer %s still has events to process after 60 s", busy)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// promotionChain is how a requested promotion continues down to its
// stage's verification.
var promotionChain = []string{
	"publish PromotionRequested", "process PromotionRequested", "run promotion",
	"publish PromotionSucceeded", "process PromotionSucceeded", "run verification",
	"publish StageVerified", "process StageVerified",
}

// TestTraceE2E promotes freight through the API and checks that the
// promotion reads as one trace in Jaeger: the request, the promotion's run
// and the verification, each hop the child of the one before.
func TestTraceE2E(t *testing.T) {
	c := startTraced(t)
	c.registry.PushImage(t, "traced/app", "1.0.0")
	c.apply(fmt.Sprintf(tracePipeline, c.registry.Repo("traced/app")))

	// Promote once the warehouse has discovered the image.
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := c.api(http.MethodPost, "/v1/projects/traced/stages/dev/promotions", `{"warehouse":"app"}`)
		if code == http.StatusCreated {
			break
		}
		if code != http.StatusConflict || time.Now().After(deadline) {
			t.Fatalf("promote: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.verifiedThenTrace(append([]string{"POST /v1/projects/{project}/stages/{stage}/promotions"}, promotionChain...))
}

// TestTraceRefreshE2E refreshes a warehouse through the API after a new
// image was pushed and checks that the refresh, the discovery, the
// auto-promotion it causes and that promotion's run and verification read
// as one trace.
func TestTraceRefreshE2E(t *testing.T) {
	c := startTraced(t)
	// Nothing the warehouse takes yet: the discovery on apply finds nothing.
	c.registry.PushImage(t, "traced/app", "0.9.0")
	c.registry.ResetRequests()
	c.apply(fmt.Sprintf(tracePipeline, c.registry.Repo("traced/app")) + autoPromotion)
	// Push the image the warehouse takes once that discovery listed the
	// tags, so that only the refresh finds it.
	deadline := time.Now().Add(60 * time.Second)
	for c.registry.Count(http.MethodGet, "/v2/traced/app/tags/list") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the warehouse's discovery never listed the tags")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.registry.PushImage(t, "traced/app", "1.0.0")
	if code, body := c.api(http.MethodPost, "/v1/projects/traced/warehouses/app/refresh", ""); code != http.StatusAccepted {
		t.Fatalf("refresh: %d %s", code, body)
	}
	c.verifiedThenTrace(append([]string{
		"POST /v1/projects/{project}/warehouses/{name}/refresh",
		"publish WarehouseRefreshRequested", "process WarehouseRefreshRequested", "discover warehouse",
		"publish FreightDiscovered", "process FreightDiscovered",
	}, promotionChain...))
}

// autoPromotion lets dev promote itself.
const autoPromotion = `---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata:
  name: traced
  namespace: traced
spec:
  promotionPolicies:
  - stage: dev
    autoPromotionEnabled: true
`

// checkTrace looks for a trace of service caravan in which the spans named
// in chain each exist and are each a CHILD_OF the one before (a span with
// several of one name, e.g. two consumers of one event, needs one of them
// to fit). It returns what is missing from the closest trace.
func checkTrace(query string, chain []string) (string, error) {
	resp, err := http.Get(query + "/api/traces?service=caravan&limit=1000&lookback=1h")
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /api/traces: %s", resp.Status)
	}
	var out struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	if len(out.Data) == 0 {
		return "no traces yet", nil
	}
	best, bestLen := "", -1
	for _, tr := range out.Data {
		names := map[string]string{}  // span ID → name
		parent := map[string]string{} // span ID → CHILD_OF span ID
		for _, s := range tr.Spans {
			names[s.SpanID] = s.OperationName
			for _, r := range s.References {
				if r.RefType == "CHILD_OF" && r.TraceID == tr.TraceID {
					parent[s.SpanID] = r.SpanID
				}
			}
		}
		// Spans at the current link of the chain.
		var at []string
		for id, n := range names {
			if n == chain[0] {
				at = append(at, id)
			}
		}
		got := 0
		if len(at) > 0 {
			got = 1
		}
		for i := 1; i < len(chain) && len(at) > 0; i++ {
			var next []string
			for id, n := range names {
				if n != chain[i] {
					continue
				}
				for _, p := range at {
					if parent[id] == p {
						next = append(next, id)
						break
					}
				}
			}
			at = next
			if len(at) > 0 {
				got = i + 1
			}
		}
		if got == len(chain) {
			return "", nil
		}
		if got > bestLen {
			bestLen = got
			if got == 0 {
				best = fmt.Sprintf("no trace has %q (of %d traces)", chain[0], len(out.Data))
			} else {
				best = fmt.Sprintf("trace %s has %s but no %q CHILD_OF it", tr.TraceID, strings.Join(chain[:got], " → "), chain[got])
			}
		}
	}
	return best, nil
}
