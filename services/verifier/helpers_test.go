package verifier

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/verifier/internal/verification"
)

const project = "demo"

// wait is how long a test waits for something the verifier does.
const wait = 30 * time.Second

// harness is a real NATS server with the backbone declared, an event log
// of every event published and helpers to seed specs and status.
type harness struct {
	t      testing.TB
	srv    *testenv.Server
	common service.Common
	env    *service.Env
	events *eventLog
	// logs, when set, receives the replicas' logs (JSON, debug level).
	logs io.Writer
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	srv := testenv.NATS(t)
	// The tests' metric servers listen on loopback, which the egress
	// policy refuses by default.
	h := &harness{t: t, srv: srv, common: service.Common{DataDir: t.TempDir(), StreamConfig: events.DefaultStreamConfig(),
		Egress: egress.Config{Allow: "127.0.0.0/8"}}}
	h.env = h.connect("seed")
	h.events = &eventLog{changed: make(chan struct{})}
	sub, err := srv.Conn(t).Subscribe(events.SubjectRoot+".>", h.events.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return h
}

func (h *harness) connect(name string) *service.Env {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	env, err := service.Provision(ctx, h.srv.Conn(h.t), name, h.common, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return env
}

// replica is a running verifier.
type replica struct {
	id     string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start runs a verifier replica with short leases and polls, stopped at
// cleanup.
func (h *harness) start(id string) *replica {
	h.t.Helper()
	return h.startWith(id, nil)
}

// startWith is start with a changed configuration.
func (h *harness) startWith(id string, mod func(*Config)) *replica {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{id: id, cancel: cancel, done: make(chan error, 1)}
	c := h.common
	c.ReplicaID = id
	cfg := Config{
		Common:   c,
		LeaseTTL: time.Second, ScanInterval: 200 * time.Millisecond, HealthPoll: 100 * time.Millisecond,
		ErrorRetryInterval: 50 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	env := h.connect(id)
	logger := slog.New(slog.DiscardHandler)
	if h.logs != nil {
		logger = slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	go func() {
		r.done <- Run(ctx, Deps{Config: cfg, Logger: logger, Env: env})
	}()
	h.t.Cleanup(func() { r.stop(h.t) })
	// The durables start at new events: wait until they exist.
	for _, spec := range []events.ConsumerSpec{events.VerifierPromotionSucceeded, events.VerifierVerificationRequested, events.VerifierVerificationAbort, events.VerifierStageHealthChanged} {
		deadline := time.Now().Add(wait)
		for {
			if _, err := h.env.JS.Consumer(context.Background(), events.StreamEvents, spec.Durable); err == nil {
				break
			}
			if time.Now().After(deadline) {
				h.t.Fatalf("consumer %s not declared", spec.Durable)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return r
}

func (r *replica) stop(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("replica %s: %v", r.id, err)
			}
		case <-time.After(wait):
			t.Errorf("replica %s did not stop", r.id)
		}
	})
}

// apply stores spec objects as the gateway would.
func (h *harness) apply(objs ...model.Object) {
	h.t.Helper()
	for _, o := range objs {
		meta := o.GetObjectMeta()
		if meta.Namespace == "" && !model.ClusterScoped(o.GetTypeMeta().Kind) {
			meta.Namespace = project
		}
		if _, err := h.env.Store.PutObject(context.Background(), o, 0); err != nil {
			h.t.Fatal(err)
		}
	}
}

// freight creates a piece of freight from warehouse app.
func (h *harness) freight(name string) *model.Freight {
	h.t.Helper()
	f := &model.Freight{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
		ObjectMeta: model.ObjectMeta{Name: name, Namespace: project},
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images:     []model.Image{{RepoURL: "nginx", Tag: name}},
	}
	if _, err := state.Create(context.Background(), h.env.Store.KV(state.Freight), state.Key(project, name), f); err != nil {
		h.t.Fatal(err)
	}
	return f
}

// promoted records, as the promoter does, that stage now uses freight and
// has the given health.
func (h *harness) promoted(stage, freight string, health model.HealthState) {
	h.t.Helper()
	_, _, err := state.Update(context.Background(), h.env.Store.KV(state.Stages), state.Key(project, stage), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
		s.FreightHistory = s.PushFreight(model.FreightReference{Name: freight, Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}})
		s.Health = &model.Health{Status: health}
		s.LastPromotion = &model.PromotionReference{Name: "p-" + stage + "-" + freight}
		return s, nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) setHealth(stage string, health model.HealthState) {
	h.t.Helper()
	_, _, err := state.Update(context.Background(), h.env.Store.KV(state.Stages), state.Key(project, stage), func(s model.StageStatus, _ bool) (model.StageStatus, error) {
		s.Health = &model.Health{Status: health}
		return s, nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.publish(stage, events.StageHealthChanged{Stage: stage, Health: string(health)})
}

func (h *harness) publish(stage string, ev events.Event) events.Envelope {
	h.t.Helper()
	env, err := h.env.Bus.Publish(context.Background(), project, events.Ref{Kind: model.KindStage, Name: stage}, ev)
	if err != nil {
		h.t.Fatal(err)
	}
	return env
}

// promote publishes PromotionSucceeded for stage and freight, as the
// promoter does after recording it.
func (h *harness) promote(stage, freight string) string {
	h.t.Helper()
	name := "p-" + stage + "-" + freight
	h.publish(stage, events.PromotionSucceeded{Promotion: name, Stage: stage, Freight: freight})
	return name
}

func (h *harness) getFreight(name string) *model.Freight {
	h.t.Helper()
	f, _, err := state.Get[model.Freight](context.Background(), h.env.Store.KV(state.Freight), state.Key(project, name))
	if err != nil {
		h.t.Fatal(err)
	}
	return &f
}

func (h *harness) stageStatus(stage string) model.StageStatus {
	h.t.Helper()
	s, _, err := state.Get[model.StageStatus](context.Background(), h.env.Store.KV(state.Stages), state.Key(project, stage))
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) record(stage, id string) verification.Record {
	h.t.Helper()
	r, _, err := state.Get[verification.Record](context.Background(), h.env.Store.KV(state.Verifications), verification.Key(project, stage, id))
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// waitRecord waits until the verification's record satisfies ok.
func (h *harness) waitRecord(stage, id string, ok func(verification.Record) bool) verification.Record {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		r, _, err := state.Get[verification.Record](context.Background(), h.env.Store.KV(state.Verifications), verification.Key(project, stage, id))
		if err == nil && ok(r) {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("verification %s/%s: condition not met in %s", stage, id, wait)
	return verification.Record{}
}

// verified waits for StageVerified of the stage's verification id.
func (h *harness) verified(stage, id string) events.StageVerified {
	h.t.Helper()
	var out events.StageVerified
	h.events.waitFor(h.t, func(env events.Envelope) bool {
		if env.Type != events.TypeStageVerified {
			return false
		}
		var ev events.StageVerified
		if err := env.Decode(&ev); err != nil || ev.Stage != stage || ev.Verification != id {
			return false
		}
		out = ev
		return true
	})
	return out
}

// eventLog keeps every event published, in order.
type eventLog struct {
	mu      sync.Mutex
	all     []events.Envelope
	changed chan struct{}
}

func (l *eventLog) add(msg *nats.Msg) {
	env, err := events.OpenNATS(msg)
	if err != nil {
		return
	}
	l.mu.Lock()
	l.all = append(l.all, env)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *eventLog) count(match func(events.Envelope) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.all {
		if match(e) {
			n++
		}
	}
	return n
}

func (l *eventLog) waitFor(t testing.TB, match func(events.Envelope) bool) events.Envelope {
	t.Helper()
	deadline := time.After(wait)
	seen := 0
	for {
		l.mu.Lock()
		for ; seen < len(l.all); seen++ {
			if match(l.all[seen]) {
				e := l.all[seen]
				l.mu.Unlock()
				return e
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("event not seen in %s", wait)
			return events.Envelope{}
		}
	}
}

// metricServer is the application a web metric measures: it answers
// {"status": <status>} and can hold requests until released.
type metricServer struct {
	*httptest.Server
	mu       sync.Mutex
	status   string
	hold     bool
	requests int
	paths    []string
	arrived  chan struct{}
}

func newMetricServer(t testing.TB, status string) *metricServer {
	t.Helper()
	s := &metricServer{status: status, arrived: make(chan struct{}, 100)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests++
		status, hold := s.status, s.hold
		s.mu.Unlock()
		select {
		case s.arrived <- struct{}{}:
		default:
		}
		if hold {
			<-r.Context().Done()
			return
		}
		if r.Header.Get("Authorization") != "Bearer t0ken" {
			status = "unauthorized"
		}
		s.mu.Lock()
		s.paths = append(s.paths, r.URL.Path)
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"status": status})
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *metricServer) set(status string, hold bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.hold = status, hold
}

// Spec builders.

func stage(name string, upstream []string, strategy model.AvailabilityStrategy, v *model.Verification) *model.Stage {
	src := model.FreightSources{Direct: len(upstream) == 0, Stages: upstream, AvailabilityStrategy: strategy}
	return &model.Stage{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindStage},
		ObjectMeta: model.ObjectMeta{Name: name, Namespace: project},
		Spec: model.StageSpec{
			RequestedFreight: []model.FreightRequest{{Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}, Sources: src}},
			Verification:     v,
		},
	}
}

// smokeTemplate checks {{args.url}}/{{args.path}} answers status ok,
// with a bearer token from a Secret.
func smokeTemplate(count int, interval string) *model.AnalysisTemplate {
	str := func(s string) *string { return &s }
	m := model.Metric{
		Name: "health", SuccessCondition: `result == "ok"`, Interval: interval,
		Provider: model.MetricProvider{Web: &model.WebMetric{
			URL:      "{{args.url}}/{{args.path}}",
			Headers:  []model.WebMetricHeader{{Key: "Authorization", Value: "Bearer {{args.token}}"}},
			JSONPath: "{$.status}",
		}},
	}
	if count > 0 {
		m.Count = &model.IntOrString{IntVal: int64(count)}
	}
	return &model.AnalysisTemplate{
		TypeMeta:   model.TypeMeta{APIVersion: model.ArgoAPIVersion, Kind: model.KindAnalysisTemplate},
		ObjectMeta: model.ObjectMeta{Name: "smoke", Namespace: project},
		Spec: model.AnalysisTemplateSpec{
			Args: []model.Argument{
				{Name: "url"}, {Name: "path", Value: str("healthz")},
				{Name: "token", ValueFrom: &model.ValueFrom{SecretKeyRef: &model.SecretKeyRef{Name: "smoke-creds", Key: "token"}}},
			},
			Metrics: []model.Metric{m},
		},
	}
}

func smokeSecret() *model.Secret {
	return &model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "smoke-creds", Namespace: project},
		StringData: map[string]string{"token": "t0ken"},
	}
}

func smokeVerification(url string) *model.Verification {
	return &model.Verification{
		AnalysisTemplates: []model.AnalysisTemplateReference{{Name: "smoke"}},
		Args: []model.AnalysisRunArgument{
			{Name: "url", Value: url},
			{Name: "path", Value: "${{ ctx.stage }}/healthz"},
		},
	}
}
