package notify

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

// sink is a real HTTP receiver counting the CloudEvents it is sent.
type sink struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.bodies = append(s.bodies, b)
	s.mu.Unlock()
}

func (s *sink) got() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.bodies...)
}

func setup(t *testing.T, recvURL string) (*service.Env, *clock, func() *Notifier) {
	t.Helper()
	ns := testenv.NATS(t)
	ctx := t.Context()
	common := service.Common{
		DataDir:      t.TempDir(),
		SecretKey:    base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
		StreamConfig: events.DefaultStreamConfig(),
		LogConfig:    telemetry.LogConfig{Level: "info", Format: "text"},
	}
	env, err := service.Provision(ctx, ns.Conn(t), "gateway", common, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := env.Egress.Allow("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	meta := func(kind, name, ns string) (model.TypeMeta, model.ObjectMeta) {
		return model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: kind}, model.ObjectMeta{Name: name, Namespace: ns}
	}
	var objs []model.Object
	p := &model.Project{}
	p.TypeMeta, p.ObjectMeta = meta(model.KindProject, "shop", "")
	pc := &model.ProjectConfig{}
	pc.TypeMeta, pc.ObjectMeta = meta(model.KindProjectConfig, "shop", "shop")
	pc.Spec.PromotionWindows = []model.PromotionWindow{{Name: "freeze", Kind: model.PromotionWindowDeny, DTStart: "20260301T100000Z", DTEnd: "20260301T120000Z"}}
	pc.Spec.Notifications = []model.NotificationSubscription{{Name: "ce",
		Events: []model.NotificationEvent{model.NotifyWindowOpened, model.NotifyPromotionSucceeded}, CloudEvents: &model.CloudEventsTarget{URL: recvURL}}}
	st := &model.Stage{}
	st.TypeMeta, st.ObjectMeta = meta(model.KindStage, "prod", "shop")
	objs = append(objs, p, pc, st)
	for _, o := range objs {
		if _, err := env.Store.PutObject(ctx, o, 0); err != nil {
			t.Fatal(err)
		}
	}
	clk := &clock{}
	return env, clk, func() *Notifier {
		return New(Options{Store: env.Store, Bus: env.Bus, Egress: pol, Backoff: time.Minute, Now: clk.Now})
	}
}

func TestWindowOpened(t *testing.T) {
	t.Parallel()
	recv := &sink{}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	_, clk, newNotifier := setup(t, srv.URL)
	ctx := t.Context()
	n := newNotifier()
	pending := func() []Delivery {
		ds, err := n.List(ctx, "shop", StatusPending)
		if err != nil {
			t.Fatal(err)
		}
		return ds
	}
	clk.Set(time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)) // inside the freeze
	for range 2 {
		if err := n.windows(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if ds := pending(); len(ds) != 0 {
		t.Fatalf("closed: %+v", ds)
	}
	clk.Set(time.Date(2026, 3, 1, 12, 0, 5, 0, time.UTC)) // opened
	if err := n.windows(ctx); err != nil {
		t.Fatal(err)
	}
	// Another replica (or a restart) looking at the same state records nothing more.
	if err := newNotifier().windows(ctx); err != nil {
		t.Fatal(err)
	}
	if ds := pending(); len(ds) != 1 || ds[0].Event != model.NotifyWindowOpened || ds[0].Subject.Name != "prod" {
		t.Fatalf("opened: %+v", ds)
	}
	n.pass(ctx)
	got := recv.got()
	if len(got) != 1 {
		t.Fatalf("received %d", len(got))
	}
	var ce struct {
		Type string
		Data struct{ Message string }
	}
	if err := json.Unmarshal(got[0], &ce); err != nil || ce.Type != EventTypePrefix+"WindowOpened" || ce.Data.Message != `[shop] promotion windows of prod opened (was closed: deny window "freeze" is in force)` {
		t.Errorf("CloudEvent %s (%v)", got[0], err)
	}
}

// TestRestart: a delivery recorded before a stop is sent after it; one a
// stopped replica had claimed is sent once its claim expires; an event
// delivered again records nothing new.
func TestRestart(t *testing.T) {
	t.Parallel()
	recv := &sink{}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	_, clk, newNotifier := setup(t, srv.URL)
	ctx := t.Context()
	clk.Set(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	// An id as the promoter makes them, dots and all.
	ev, err := events.Seal("PromotionSucceeded.shop.prod.01J", "test", "shop", events.Ref{Kind: "Promotion", Name: "prod.p1"}, events.PromotionSucceeded{Promotion: "prod.p1", Stage: "prod", Freight: "f1"})
	if err != nil {
		t.Fatal(err)
	}
	first := newNotifier()
	if err := first.handle(ctx, ev); err != nil {
		t.Fatal(err)
	}
	// The first replica claims it and stops before it answers.
	k := key(StatusPending, Delivery{Project: "shop", Subscription: "ce", EventID: ev.ID})
	if _, _, err := state.Update(ctx, first.kv, k, func(d Delivery, _ bool) (Delivery, error) {
		until := clk.Now().Add(time.Minute)
		d.Claim, d.ClaimedUntil = "stopped-replica", &until
		return d, nil
	}); err != nil {
		t.Fatal(err)
	}
	second := newNotifier()
	second.pass(ctx)
	if n := len(recv.got()); n != 0 {
		t.Fatalf("sent %d while claimed", n)
	}
	clk.Set(clk.Now().Add(2 * time.Minute))
	second.pass(ctx)
	second.pass(ctx)
	if err := second.handle(ctx, ev); err != nil { // JetStream delivers the event again
		t.Fatal(err)
	}
	second.pass(ctx)
	if n := len(recv.got()); n != 1 {
		t.Fatalf("sent %d times, want 1", n)
	}
	sent, err := second.List(ctx, "shop", "")
	if err != nil || len(sent) != 1 || sent[0].Status != StatusDelivered || sent[0].Attempts != 1 {
		t.Fatalf("deliveries %+v (%v)", sent, err)
	}
}

func TestCloudEventModes(t *testing.T) {
	t.Parallel()
	n := &Notifier{o: Options{Source: "caravan"}}
	env, err := events.Seal("01JTEST", "promoter", "shop", events.Ref{Kind: "Promotion", Name: "prod.p1"}, events.PromotionSucceeded{Promotion: "prod.p1", Stage: "prod", Freight: "f1"})
	if err != nil {
		t.Fatal(err)
	}
	d := Delivery{ID: "ce.01JTEST", Event: model.NotifyPromotionSucceeded, Envelope: &env}
	for _, mode := range []string{"", "binary"} {
		sub := &model.NotificationSubscription{Name: "ce", CloudEvents: &model.CloudEventsTarget{URL: "http://x.example/ce", Mode: mode}}
		req, err := n.request(t.Context(), sub, target{url: "http://x.example/ce", secret: "k3y-k3y-k3y"}, d, "hello")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(req.Body)
		if req.Header.Get(HeaderSignature) != Sign([]byte("k3y-k3y-k3y"), body) || req.Header.Get(HeaderDelivery) != "ce.01JTEST" {
			t.Errorf("mode %q: headers %v", mode, req.Header)
		}
		var data struct{ ID, Message, Project string }
		if mode == "binary" {
			for h, want := range map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "ce.01JTEST", "Ce-Type": "dev.caravan.PromotionSucceeded", "Ce-Source": "caravan/projects/shop", "Ce-Subject": "Promotion/prod.p1", "Content-Type": "application/json"} {
				if got := req.Header.Get(h); got != want {
					t.Errorf("binary %s: %q, want %q", h, got, want)
				}
			}
			_ = json.Unmarshal(body, &data)
		} else {
			var ce struct {
				SpecVersion, ID, Type, DataContentType string
				Data                                   json.RawMessage
			}
			_ = json.Unmarshal(body, &ce)
			if ce.SpecVersion != "1.0" || ce.ID != "ce.01JTEST" || ce.Type != "dev.caravan.PromotionSucceeded" || ce.DataContentType != "application/json" || req.Header.Get("Content-Type") != "application/cloudevents+json; charset=utf-8" {
				t.Errorf("structured: %s", body)
			}
			_ = json.Unmarshal(ce.Data, &data)
		}
		if data.ID != "01JTEST" || data.Message != "hello" || data.Project != "shop" {
			t.Errorf("mode %q: data %s", mode, body)
		}
	}
}

// TestSlackURLRedacted: a Slack webhook URL is a credential; an attempt's
// error (stored, logged, shown by the API) never holds it.
func TestSlackURLRedacted(t *testing.T) {
	t.Parallel()
	env, _, newNotifier := setup(t, "http://127.0.0.1:1/ce")
	ctx := t.Context()
	const hook = "http://127.0.0.1:1/services/T000/B000/sekrit-slack-token"
	pc, rev, err := state.GetAs[*model.ProjectConfig](ctx, env.Store, "shop", model.KindProjectConfig, "shop")
	if err != nil {
		t.Fatal(err)
	}
	pc.Spec.Notifications = append(pc.Spec.Notifications, model.NotificationSubscription{Name: "chat",
		Events: []model.NotificationEvent{model.NotifyPromotionSucceeded}, Slack: &model.SlackTarget{URL: hook}})
	if _, err := env.Store.PutObject(ctx, pc, rev); err != nil {
		t.Fatal(err)
	}
	ev, err := events.Seal("", "test", "shop", events.Ref{Kind: "Promotion", Name: "prod.p1"}, events.PromotionSucceeded{Promotion: "prod.p1", Stage: "prod", Freight: "f1"})
	if err != nil {
		t.Fatal(err)
	}
	res := newNotifier().send(ctx, Delivery{ID: "chat." + ev.ID, Project: "shop", Subscription: "chat", Event: model.NotifyPromotionSucceeded, Envelope: &ev})
	if res.errText == "" || strings.Contains(res.errText, "sekrit") || strings.Contains(res.errText, "T000/B000") {
		t.Fatalf("error %q", res.errText)
	}
	t.Logf("error: %s", res.errText)
}
