//go:build e2e

package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/services/gateway/internal/webhook"
)

// TestRegistryE2E runs Debian's docker-registry with notifications pointed
// at the gateway's registry receiver: pushing a tag publishes
// WarehouseRefreshRequested with the tag as hint for the subscribed
// Warehouse (whose interval is 1h, so only the webhook can have caused it).
func TestRegistryE2E(t *testing.T) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry not installed (apt-get install docker-registry)")
	}
	h := newHarness(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.mustApply([]byte(fmt.Sprintf(`apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: api, namespace: demo}
spec:
  interval: 1h
  subscriptions:
  - image: {repoURL: "%s/team/api"}
---
apiVersion: v1
kind: Secret
metadata: {name: reg, namespace: demo, labels: {kargo.akuity.io/cred-type: generic}}
stringData: {secret: e2e-secret}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: demo, namespace: demo}
spec:
  webhookReceivers:
  - {name: registry, registry: {secretRef: {name: reg}}}
`, addr)))
	dir := t.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: %s}
http:
  addr: %s
notifications:
  endpoints:
  - name: caravan
    url: %s%s
    headers: {Authorization: [Bearer e2e-secret]}
    timeout: 2s
    threshold: 3
    backoff: 200ms
    ignoredmediatypes: [application/octet-stream]
`, filepath.Join(dir, "data"), addr, h.srv.URL, webhook.Path("demo", "registry", "e2e-secret"))
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sub, err := h.nc.SubscribeSync(events.Filter("demo", events.TypeWarehouseRefreshRequested, ""))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("docker-registry did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}

	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(addr+"/team/api:1.2.3", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()
	msg, err := sub.NextMsg(15 * time.Second)
	if err != nil {
		t.Fatalf("no WarehouseRefreshRequested after the push: %v", err)
	}
	var env events.Envelope
	if err := json.Unmarshal(msg.Data, &env); err != nil {
		t.Fatal(err)
	}
	p := payload[events.WarehouseRefreshRequested](t, env)
	if p.Warehouse != "api" || p.Hint == nil || p.Hint.Tag != "1.2.3" || p.Hint.RepoURL != addr+"/team/api" || p.Hint.Digest != digest.String() {
		t.Errorf("refresh: %+v hint %+v, want api %s/team/api:1.2.3@%s", p, p.Hint, addr, digest)
	}
	// Pulls are notified too and publish nothing.
	if _, err := remote.Image(ref); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(time.Second); err == nil {
		t.Errorf("a pull published %s", m.Data)
	}
}
