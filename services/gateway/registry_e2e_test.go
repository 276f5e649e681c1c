//go:build e2e

package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/gateway/internal/webhook"
)

// TestRegistryE2E runs Debian's docker-registry (testenv.StartDockerRegistry)
// with notifications pointed at the gateway's registry receiver: pushing
// a tag publishes
// WarehouseRefreshRequested with the tag as hint for the subscribed
// Warehouse (whose interval is 1h, so only the webhook can have caused it).
func TestRegistryE2E(t *testing.T) {
	h := newHarness(t)
	reg := testenv.StartDockerRegistry(t, testenv.WithNotifications(h.srv.URL+webhook.Path("demo", "registry", "e2e-secret"), "e2e-secret"))
	addr := reg.Host()
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
	sub, err := h.nc.SubscribeSync(events.Filter("demo", events.TypeWarehouseRefreshRequested, ""))
	if err != nil {
		t.Fatal(err)
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
	env, err := events.OpenNATS(msg)
	if err != nil {
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
