package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/gateway"
	"github.com/caravan-cd/caravan/services/gateway/internal/notify"
)

// receiver is a real HTTP server that records what it is sent; each path
// first answers 500 as many times as fails[path] says.
type receiver struct {
	mu    sync.Mutex
	fails map[string]int
	got   map[string][]received
}

type received struct {
	header http.Header
	body   []byte
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.got[r.URL.Path] = append(rc.got[r.URL.Path], received{r.Header.Clone(), b})
	if rc.fails[r.URL.Path] != 0 {
		rc.fails[r.URL.Path]--
		http.Error(w, "receiver down", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) requests(path string) []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got[path]...)
}

const hmacKey = "n0tify-hmac-k3y-value"

func TestNotifications(t *testing.T) {
	t.Parallel()
	rc := &receiver{fails: map[string]int{"/flaky": 2, "/dead": 1000}, got: map[string][]received{}}
	recv := httptest.NewServer(rc)
	t.Cleanup(recv.Close)
	h := newHarness(t, func(d *gateway.Deps) {
		var err error
		if d.Env.Egress, err = d.Env.Egress.Allow("127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		d.Config.NotifyBackoff = 20 * time.Millisecond
	})

	// Bad config: a 4xx naming the field, nothing stored.
	bad := []byte(`apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: shop}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: shop, namespace: shop}
spec:
  notifications:
  - {name: ce, events: [PromotionSucceded], cloudEvents: {url: "` + recv.URL + `/ce"}}
`)
	status, _, e := h.apply(http.MethodPost, bad)
	if status != http.StatusUnprocessableEntity && status != http.StatusBadRequest || !strings.Contains(fmt.Sprint(e), "spec.notifications[0].events[0]") {
		t.Fatalf("bad config: %d %+v", status, e)
	}

	h.mustApply([]byte(`apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: shop}
---
apiVersion: v1
kind: Secret
metadata: {name: hook, namespace: shop}
stringData: {secret: ` + hmacKey + `}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: shop, namespace: shop}
spec:
  notifications:
  - name: ce
    events: [PromotionSucceeded, FreightDiscovered, VerificationFailed, Rollback]
    cloudEvents: {url: "` + recv.URL + `/ce", secretRef: {name: hook}}
  - name: flaky
    events: [PromotionSucceeded]
    webhook: {url: "` + recv.URL + `/flaky", secretRef: {name: hook}}
    template: "{{.Stage}} now runs {{.Freight}}"
  - name: chat
    events: [PromotionFailed]
    slack: {url: "` + recv.URL + `/dead"}
    maxAttempts: 3
`))

	ctx := t.Context()
	rollback := &model.Promotion{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion},
		ObjectMeta: model.ObjectMeta{Name: "prod.rb1", Namespace: "shop", Annotations: map[string]string{model.AnnotationRollback: "verification v1 Failed"}}}
	if _, err := h.env.Store.PutObject(ctx, rollback, 0); err != nil {
		t.Fatal(err)
	}
	plain := &model.Promotion{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion},
		ObjectMeta: model.ObjectMeta{Name: "prod.p2", Namespace: "shop"}}
	if _, err := h.env.Store.PutObject(ctx, plain, 0); err != nil {
		t.Fatal(err)
	}
	publish := func(kind, name string, ev events.Event) events.Envelope {
		env, err := h.env.Bus.Publish(ctx, "shop", events.Ref{Kind: kind, Name: name}, ev)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	want := map[string]string{} // CloudEvent id -> type
	add := func(env events.Envelope, typ string) { want["ce."+env.ID] = notify.EventTypePrefix + typ }
	add(publish("Promotion", "prod.p1", events.PromotionSucceeded{Promotion: "prod.p1", Stage: "prod", Freight: "f1"}), "PromotionSucceeded")
	add(publish("Freight", "f2", events.FreightDiscovered{Freight: "f2", Origin: events.FreightOrigin{Kind: "Warehouse", Name: "app"}}), "FreightDiscovered")
	add(publish("Stage", "prod", events.StageVerified{Stage: "prod", Freight: "f1", Verification: "v1", Phase: "Failed"}), "VerificationFailed")
	add(publish("Promotion", "prod.rb1", events.PromotionRequested{Promotion: "prod.rb1", Stage: "prod", Freight: "f0"}), "Rollback")
	publish("Stage", "prod", events.StageVerified{Stage: "prod", Freight: "f1", Verification: "v2", Phase: "Successful"})
	publish("Promotion", "prod.p2", events.PromotionRequested{Promotion: "prod.p2", Stage: "prod", Freight: "f1"})
	publish("Promotion", "prod.p3", events.PromotionFailed{Promotion: "prod.p3", Stage: "prod", Freight: "f2", Phase: "Errored"})

	// Every delivery ends: sent, or dead after its attempts.
	var list struct{ Items []notify.Delivery }
	deadline := time.Now().Add(60 * time.Second)
	for {
		list.Items = nil
		if st := h.get("/v1/projects/shop/notifications", &list); st != http.StatusOK {
			t.Fatalf("list notifications: %d", st)
		}
		done := len(list.Items) == 6
		for _, d := range list.Items {
			done = done && d.Status != notify.StatusPending
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries did not end: %+v", list.Items)
		}
		time.Sleep(50 * time.Millisecond)
	}
	by := map[string]notify.Delivery{}
	for _, d := range list.Items {
		by[d.Subscription+"/"+string(d.Event)] = d
	}
	if d := by["flaky/PromotionSucceeded"]; d.Status != notify.StatusDelivered || d.Attempts != 3 {
		t.Errorf("flaky webhook: %+v, want sent after 3 attempts", d)
	}
	if d := by["chat/PromotionFailed"]; d.Status != notify.StatusDead || d.Attempts != 3 || d.LastStatus != 500 || d.LastError == "" {
		t.Errorf("slack: %+v, want dead after 3 attempts", d)
	}
	var dead struct{ Items []notify.Delivery }
	h.get("/v1/projects/shop/notifications?status=dead", &dead)
	if len(dead.Items) != 1 || dead.Items[0].Subscription != "chat" {
		t.Errorf("dead letters: %+v", dead.Items)
	}
	if st, _, _ := h.do(http.MethodGet, "/v1/projects/shop/notifications?status=lost", token, "", nil); st != http.StatusBadRequest {
		t.Errorf("bad status filter: %d", st)
	}

	// One signed CloudEvent per event, nothing for the others.
	ces := rc.requests("/ce")
	if len(ces) != len(want) {
		t.Fatalf("CloudEvents received: %d, want %d", len(ces), len(want))
	}
	for _, r := range ces {
		if got := r.header.Get(notify.HeaderSignature); got != notify.Sign([]byte(hmacKey), r.body) {
			t.Errorf("signature %q does not match the body", got)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/cloudevents+json") {
			t.Errorf("content type %q", ct)
		}
		var ce struct {
			SpecVersion, ID, Source, Type, Subject string
			Data                                   struct{ Project, Message string }
		}
		if err := json.Unmarshal(r.body, &ce); err != nil {
			t.Fatal(err)
		}
		if ce.SpecVersion != "1.0" || want[ce.ID] != ce.Type || ce.Source != "caravan/projects/shop" || ce.Data.Project != "shop" || ce.Data.Message == "" {
			t.Errorf("CloudEvent %s", r.body)
		}
		delete(want, ce.ID)
		if strings.Contains(string(r.body), hmacKey) {
			t.Errorf("the secret travels in the body")
		}
	}
	if len(want) != 0 {
		t.Errorf("no CloudEvent for %v", want)
	}
	flaky := rc.requests("/flaky")
	if len(flaky) != 3 {
		t.Fatalf("flaky got %d requests, want 3", len(flaky))
	}
	var wh struct{ Message string }
	_ = json.Unmarshal(flaky[2].body, &wh)
	if wh.Message != "prod now runs f1" || flaky[2].header.Get(notify.HeaderSignature) != notify.Sign([]byte(hmacKey), flaky[2].body) {
		t.Errorf("webhook: %s %v", flaky[2].body, flaky[2].header)
	}
	chat := rc.requests("/dead")
	var slack map[string]string
	_ = json.Unmarshal(chat[0].body, &slack)
	if len(chat) != 3 || len(slack) != 1 || !strings.Contains(slack["text"], "prod.p3 into prod ended Errored") {
		t.Errorf("slack: %d requests, %s", len(chat), chat[0].body)
	}
	_, body, _ := h.do(http.MethodGet, "/v1/projects/shop/notifications", token, "", nil)
	if strings.Contains(string(body), hmacKey) {
		t.Errorf("the API shows the secret")
	}
	_ = context.Background
}
