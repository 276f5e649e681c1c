package promoter

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

const project = "demo"

var errTestAborted = errors.New("test: promotion aborted")

// fakeRunner is a hand-written step runner: each promotion has Steps
// steps; each step calls Before (which may block), sleeps Delay, marks the
// step Succeeded and saves.
type fakeRunner struct {
	Steps    int
	Delay    time.Duration
	Before   func(ctx context.Context, p *model.Promotion, step int)
	HealthOf func(checks []model.HealthCheckStep) model.Health
	// Checks are the health checks each promotion registers.
	Checks []model.HealthCheckStep

	mu        sync.Mutex
	active    map[string]int
	maxActive map[string]int
	order     []string
	ran       map[string][]int // promotion → steps run, in order
}

func newFakeRunner(steps int) *fakeRunner {
	return &fakeRunner{Steps: steps, active: map[string]int{}, maxActive: map[string]int{}, ran: map[string][]int{}}
}

func (f *fakeRunner) Run(ctx context.Context, p *model.Promotion, save func(context.Context, *model.Promotion) error) (Result, error) {
	f.mu.Lock()
	f.active[p.Spec.Stage]++
	f.maxActive[p.Spec.Stage] = max(f.maxActive[p.Spec.Stage], f.active[p.Spec.Stage])
	if p.Status.CurrentStep == 0 {
		f.order = append(f.order, p.Name)
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.active[p.Spec.Stage]--
		f.mu.Unlock()
	}()
	for i := int(p.Status.CurrentStep); i < f.Steps; i++ {
		if f.Before != nil {
			f.Before(ctx, p, i)
		}
		if ctx.Err() == nil && f.Delay > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(f.Delay):
			}
		}
		if ctx.Err() != nil {
			if errors.Is(context.Cause(ctx), errTestAborted) {
				return Result{Phase: model.PromotionPhaseAborted, Message: "aborted"}, nil
			}
			return Result{}, context.Cause(ctx)
		}
		f.mu.Lock()
		f.ran[p.Name] = append(f.ran[p.Name], i)
		f.mu.Unlock()
		for len(p.Status.StepExecutionMetadata) <= i {
			p.Status.StepExecutionMetadata = append(p.Status.StepExecutionMetadata, model.StepExecutionMetadata{})
		}
		now := model.NewTime(time.Now())
		p.Status.StepExecutionMetadata[i] = model.StepExecutionMetadata{Alias: "step-" + string(rune('0'+i)), StartedAt: now, FinishedAt: now, Status: model.PromotionStepStatusSucceeded}
		p.Status.CurrentStep = int64(i + 1)
		if err := save(ctx, p); err != nil {
			return Result{}, err
		}
	}
	if len(f.Checks) > 0 {
		p.Status.HealthChecks = f.Checks
		if err := save(ctx, p); err != nil {
			return Result{}, err
		}
	}
	return Result{Phase: model.PromotionPhaseSucceeded}, nil
}

func (f *fakeRunner) Health(_ context.Context, _ string, checks []model.HealthCheckStep) model.Health {
	if f.HealthOf != nil {
		return f.HealthOf(checks)
	}
	return model.Health{Status: model.HealthStateHealthy}
}

func (f *fakeRunner) maxActiveOf(stage string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxActive[stage]
}

func (f *fakeRunner) ranSteps(p string) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ran[p])
}

// harness is one NATS server with the promoter's state, and helpers to
// seed it and start replicas.
type harness struct {
	t      testing.TB
	srv    *testenv.Server
	common service.Common
	env    *service.Env
	events *eventLog
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	srv := testenv.NATS(t)
	// The tests' http servers listen on loopback, which the egress policy
	// refuses by default.
	common := service.Common{DataDir: t.TempDir(), StreamConfig: events.DefaultStreamConfig(), Egress: egress.Config{Allow: "127.0.0.0/8"}}
	h := &harness{t: t, srv: srv, common: common}
	h.env = h.connect("seed")
	h.events = &eventLog{}
	nc := srv.Conn(t)
	sub, err := nc.Subscribe(events.SubjectRoot+".>", h.events.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return h
}

func (h *harness) connect(name string) *service.Env {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env, err := service.Provision(ctx, h.srv.Conn(h.t), name, h.common, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return env
}

// replica is a running promoter.
type replica struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (r *replica) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("replica: %v", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Error("replica did not stop")
	}
}

func (h *harness) start(id string, runner Runner, mod func(*Config)) *replica {
	h.t.Helper()
	c := h.common
	c.ReplicaID = id
	cfg := Config{Common: c, LeaseTTL: 5 * time.Second, MaxConcurrent: 100, HealthInterval: time.Hour, GCInterval: time.Hour}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{cancel: cancel, done: make(chan struct{})}
	env := h.connect("promoter")
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	deps := Deps{Config: cfg, Logger: log.With("r", id), Env: env}
	if runner != nil {
		deps.Runner, deps.AbortCause = runner, errTestAborted
	}
	go func() {
		defer close(r.done)
		r.err = Run(ctx, deps)
	}()
	h.t.Cleanup(func() {
		cancel()
		<-r.done
	})
	// Wait for the durable consumers: a new durable starts at new events.
	eventually(h.t, 30*time.Second, func() bool {
		for _, c := range []events.ConsumerSpec{events.PromoterPromotionRequested, events.PromoterPromotionAbort, events.PromoterAutoPromotion} {
			if _, err := env.JS.Consumer(context.Background(), events.StreamEvents, c.Durable); err != nil {
				return false
			}
		}
		return true
	}, func() string { return "promoter consumers declared" })
	return r
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

func (h *harness) put(obj model.Object) {
	h.t.Helper()
	if _, err := h.env.Store.PutObject(context.Background(), obj, 0); err != nil {
		h.t.Fatalf("put %s %s: %v", obj.GetTypeMeta().Kind, obj.GetObjectMeta().Name, err)
	}
}

func origin(w string) model.FreightOrigin {
	return model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: w}
}

func (h *harness) stage(name string, mod func(*model.Stage)) *model.Stage {
	h.t.Helper()
	s := &model.Stage{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindStage},
		ObjectMeta: model.ObjectMeta{Name: name, Namespace: project},
		Spec: model.StageSpec{
			RequestedFreight:  []model.FreightRequest{{Origin: origin("app"), Sources: model.FreightSources{Direct: true}}},
			PromotionTemplate: &model.PromotionTemplate{Spec: model.PromotionTemplateSpec{Steps: []model.PromotionStep{{Uses: "fake"}}}},
		},
	}
	if mod != nil {
		mod(s)
	}
	h.put(s)
	return s
}

func (h *harness) freight(tag string, created time.Time) *model.Freight {
	h.t.Helper()
	f := &model.Freight{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
		ObjectMeta: model.ObjectMeta{Namespace: project, CreationTimestamp: model.NewTime(created.UTC().Truncate(time.Second))},
		Origin:     origin("app"),
		Images:     []model.Image{{RepoURL: "example.com/app", Tag: tag}},
	}
	f.Name = f.GenerateID()
	h.put(f)
	return f
}

// promote stores a Pending promotion and publishes PromotionRequested, as
// the gateway does.
func (h *harness) promote(stage *model.Stage, f *model.Freight, by string) *model.Promotion {
	h.t.Helper()
	p := h.newPromotion(stage, f, by)
	h.put(p)
	h.request(p)
	return p
}

func (h *harness) newPromotion(stage *model.Stage, f *model.Freight, by string) *model.Promotion {
	return model.NewPromotion(stage, f, ulid.Make().String(), by, time.Now())
}

func (h *harness) request(p *model.Promotion) {
	h.t.Helper()
	if _, err := h.env.Bus.Publish(context.Background(), project, events.Ref{Kind: model.KindPromotion, Name: p.Name},
		events.PromotionRequested{Promotion: p.Name, Stage: p.Spec.Stage, Freight: p.Spec.Freight}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) publish(ref events.Ref, ev events.Event) {
	h.t.Helper()
	if _, err := h.env.Bus.Publish(context.Background(), project, ref, ev); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) promotion(name string) model.Promotion {
	h.t.Helper()
	p, _, err := state.Get[model.Promotion](context.Background(), h.env.Store.KV(state.Promotions), state.Key(project, name))
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *harness) stageStatus(name string) model.StageStatus {
	h.t.Helper()
	s, _, err := state.Get[model.StageStatus](context.Background(), h.env.Store.KV(state.Stages), state.Key(project, name))
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) getFreight(name string) model.Freight {
	h.t.Helper()
	f, _, err := state.Get[model.Freight](context.Background(), h.env.Store.KV(state.Freight), state.Key(project, name))
	if err != nil {
		h.t.Fatal(err)
	}
	return f
}

func (h *harness) promotions(stage string) []model.Promotion {
	h.t.Helper()
	items, _, err := state.List[model.Promotion](context.Background(), h.env.Store.KV(state.Promotions), state.Prefix(project), 0, "")
	if err != nil {
		h.t.Fatal(err)
	}
	var out []model.Promotion
	for _, it := range items {
		if it.Value.Spec.Stage == stage {
			out = append(out, it.Value)
		}
	}
	return out
}

func (h *harness) waitPhase(name string, want model.PromotionPhase) model.Promotion {
	h.t.Helper()
	var p model.Promotion
	eventually(h.t, 30*time.Second, func() bool {
		p = h.promotion(name)
		return p.Status.Phase == want
	}, func() string {
		return "promotion " + name + " phase " + string(p.Status.Phase) + ", want " + string(want)
	})
	return p
}

func eventually(t testing.TB, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", msg())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventLog records the events published, once per event ID: it listens on
// core NATS, so it also sees a publish retried after a lost ack, which the
// stream itself de-duplicates by ID.
type eventLog struct {
	mu   sync.Mutex
	envs []events.Envelope
	seen map[string]bool
}

func (l *eventLog) add(m *nats.Msg) {
	env, err := events.OpenNATS(m)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[env.ID] {
		return
	}
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	l.seen[env.ID] = true
	l.envs = append(l.envs, env)
}

// of returns the events of type typ about subject name ("" for any).
func (l *eventLog) of(typ events.Type, name string) []events.Envelope {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []events.Envelope
	for _, e := range l.envs {
		if e.Type == typ && (name == "" || e.Subject.Name == name) {
			out = append(out, e)
		}
	}
	return out
}
