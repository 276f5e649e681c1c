package discovery_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery"
)

const project = "demo"

// waitTimeout is generous: CI has two shared cores.
const waitTimeout = 30 * time.Second

func common(t testing.TB) service.Common {
	return service.Common{
		DataDir:      t.TempDir(),
		SecretKey:    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", // shared by the test's "gateway" and replicas
		StreamConfig: events.DefaultStreamConfig(),
		LogConfig:    telemetry.LogConfig{Level: "info", Format: "text"},
	}
}

// replica is one running discovery service.
type replica struct {
	env    *service.Env
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with its error in err
	err    error
}

// stop stops the replica gracefully (it releases its leases).
func (r *replica) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("discovery stopped with %v", r.err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("discovery did not stop")
	}
}

// kill cuts the replica off NATS first, so it cannot release its leases,
// as a crashed process would leave them.
func (r *replica) kill(t testing.TB) {
	t.Helper()
	r.nc.Close()
	r.cancel()
	<-r.done
}

func startReplica(t testing.TB, srv *testenv.Server, id string, tune func(*discovery.Config)) *replica {
	t.Helper()
	nc := srv.Conn(t)
	c := common(t)
	c.ReplicaID = id
	env, err := service.Provision(t.Context(), nc, "discovery", c, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := discovery.Config{Common: c, LeaseTTL: 900 * time.Millisecond, RetryBase: 200 * time.Millisecond, MinInterval: time.Hour, RegistryRPS: -1}
	if tune != nil {
		tune(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{env: env, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = discovery.Run(ctx, discovery.Deps{Config: cfg, Logger: slog.New(slog.DiscardHandler), Env: env})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitTimeout):
		}
	})
	return r
}

// gateway plays the gateway's part: it stores specs and publishes events.
type gateway struct {
	env *service.Env
	bus *events.Bus
}

func newGateway(t testing.TB, srv *testenv.Server) *gateway {
	t.Helper()
	env, err := service.Provision(t.Context(), srv.Conn(t), "gateway", common(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &gateway{env: env, bus: env.Bus}
}

// apply stores obj and announces it, as the gateway does.
func (g *gateway) apply(t testing.TB, obj model.Object) {
	t.Helper()
	g.put(t, obj)
	tm, meta := obj.GetTypeMeta(), obj.GetObjectMeta()
	if tm.Kind == model.KindSecret {
		return
	}
	if _, err := g.bus.Publish(t.Context(), project, events.Ref{Kind: tm.Kind, Name: meta.Name}, events.ResourceApplied{Kind: tm.Kind, Name: meta.Name, Action: "created"}); err != nil {
		t.Fatal(err)
	}
}

// put stores obj without an event: discovery finds it on its next scan.
func (g *gateway) put(t testing.TB, obj model.Object) {
	t.Helper()
	meta := obj.GetObjectMeta()
	meta.Namespace = project
	tm := obj.GetTypeMeta()
	tm.APIVersion = model.APIVersionOf(tm.Kind)
	var rev uint64
	if cur, r, err := g.env.Store.GetObject(t.Context(), project, tm.Kind, meta.Name); err == nil && cur != nil {
		rev = r
	}
	if _, err := g.env.Store.PutObject(t.Context(), obj, rev); err != nil {
		t.Fatal(err)
	}
}

func (g *gateway) refresh(t testing.TB, warehouse string, hint *events.ArtifactHint) {
	t.Helper()
	if _, err := g.bus.Publish(t.Context(), project, events.Ref{Kind: model.KindWarehouse, Name: warehouse}, events.WarehouseRefreshRequested{Warehouse: warehouse, Hint: hint}); err != nil {
		t.Fatal(err)
	}
}

func (g *gateway) status(t testing.TB, warehouse string) model.WarehouseStatus {
	t.Helper()
	st, _, err := state.Get[model.WarehouseStatus](t.Context(), g.env.Store.KV(state.Warehouses), state.Key(project, warehouse))
	if err != nil && !errorsIsNotFound(err) {
		t.Fatal(err)
	}
	return st
}

// statusRev is the revision of the warehouse's status entry (0: none):
// every full discovery writes it.
func (g *gateway) statusRev(t testing.TB, warehouse string) uint64 {
	t.Helper()
	_, rev, err := state.Get[model.WarehouseStatus](t.Context(), g.env.Store.KV(state.Warehouses), state.Key(project, warehouse))
	if err != nil && !errorsIsNotFound(err) {
		t.Fatal(err)
	}
	return rev
}

func (g *gateway) freight(t testing.TB, id string) model.Freight {
	t.Helper()
	f, _, err := state.Get[model.Freight](t.Context(), g.env.Store.KV(state.Freight), state.Key(project, id))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// watcher collects every FreightDiscovered event in the stream, with its
// envelope ID, in order.
type watcher struct {
	mu   sync.Mutex
	evs  []discoveredEvent
	cons jetstream.ConsumeContext
}

func watchFreight(t testing.TB, js jetstream.JetStream) *watcher {
	t.Helper()
	cons, err := js.OrderedConsumer(t.Context(), events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.Filter(events.Any, events.TypeFreightDiscovered, events.Any)},
	})
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var ev events.FreightDiscovered
		env, err := events.Open(msg)
		if err != nil || env.Decode(&ev) != nil {
			return
		}
		w.mu.Lock()
		w.evs = append(w.evs, discoveredEvent{ID: env.ID, Event: ev})
		w.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	w.cons = cc
	t.Cleanup(cc.Stop)
	return w
}

func (w *watcher) events() []discoveredEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]discoveredEvent(nil), w.evs...)
}

func (w *watcher) count() int { return len(w.events()) }

type discoveredEvent struct {
	ID    string
	Event events.FreightDiscovered
}

// eventually polls cond until it holds or the wait times out.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func imageWarehouse(name string, subs ...model.ImageSubscription) *model.Warehouse {
	w := &model.Warehouse{TypeMeta: model.TypeMeta{Kind: model.KindWarehouse}, ObjectMeta: model.ObjectMeta{Name: name}}
	for i := range subs {
		w.Spec.Subscriptions = append(w.Spec.Subscriptions, model.RepoSubscription{Image: &subs[i]})
	}
	return w
}
