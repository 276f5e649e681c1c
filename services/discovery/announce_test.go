package discovery

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

func announced(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	cons, err := js.OrderedConsumer(t.Context(), events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.Filter(events.Any, events.TypeFreightDiscovered, events.Any)},
	})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending
}

// FreightDiscovered goes out once per Freight whatever step a previous run
// stopped after: create, publish or mark.
func TestAnnounceExactlyOnce(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	env := provision(t, srv)
	d := &discoverer{store: env.Store, bus: env.Bus, now: time.Now}
	kv := env.Store.KV(state.Freight)
	f := &model.Freight{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
		ObjectMeta: model.ObjectMeta{Namespace: "demo"},
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "w"},
		Images:     []model.Image{{RepoURL: "example/app", Tag: "v1", Digest: "sha256:1"}},
	}
	f.Name = f.GenerateID()
	key := state.Key("demo", f.Name)

	// A run stopped after Create: the next one announces with the stored
	// alias.
	stored := *f
	stored.Alias = "brave-otter"
	if _, err := state.Create(t.Context(), kv, key, stored); err != nil {
		t.Fatal(err)
	}
	copyOf := *f
	if ok, err := d.announce(t.Context(), &copyOf); err != nil || !ok {
		t.Fatalf("announce after a crash: %t, %v", ok, err)
	}
	got, _, _ := state.Get[model.Freight](t.Context(), kv, key)
	if got.Annotations[AnnouncedAnnotation] == "" || got.Alias != "brave-otter" {
		t.Fatalf("stored %+v", got)
	}
	// Announced: nothing more.
	copyOf = *f
	if ok, err := d.announce(t.Context(), &copyOf); err != nil || ok {
		t.Fatalf("second announce: %t, %v", ok, err)
	}
	// A run stopped after publishing, before marking: the republish uses the
	// same ID and JetStream drops it.
	if _, _, err := state.Update(t.Context(), kv, key, func(cur model.Freight, _ bool) (model.Freight, error) {
		delete(cur.Annotations, AnnouncedAnnotation)
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	copyOf = *f
	if _, err := d.announce(t.Context(), &copyOf); err != nil {
		t.Fatal(err)
	}
	if n := announced(t, env.JS); n != 1 {
		t.Fatalf("%d FreightDiscovered in the stream, want 1", n)
	}
}

// Requests forwarded to the lease holder keep their hints.
func TestForwardRoundTrip(t *testing.T) {
	t.Parallel()
	in := forward{Project: "demo", Name: "w", Request: request{hints: []events.ArtifactHint{{RepoURL: "r", Tag: "v1", Digest: "sha256:1"}, {RepoURL: "g", Commit: "abc"}}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out forward
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Project != "demo" || out.Name != "w" || out.Request.full || len(out.Request.hints) != 2 || out.Request.hints[1].Commit != "abc" || out.Request.hints[0].Digest != "sha256:1" {
		t.Fatalf("round trip: %+v", out)
	}
	var merged request
	merged.merge(request{hints: in.Request.hints})
	merged.merge(request{full: true})
	if !merged.full || merged.hints != nil {
		t.Fatalf("a full request absorbs hints: %+v", merged)
	}
}

// A run that stopped after creating a Freight and before announcing it
// leaves a marker; the reconcile pass's sweep announces that Freight even
// though it is no longer the Warehouse's newest, once, and clears markers
// of Freight never created.
func TestSweepUnannounced(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	env := provision(t, srv)
	d := &discoverer{store: env.Store, bus: env.Bus, now: time.Now}
	freight := func(tag string) *model.Freight {
		f := &model.Freight{
			TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
			ObjectMeta: model.ObjectMeta{Namespace: "demo"},
			Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "w"},
			Images:     []model.Image{{RepoURL: "example/app", Tag: tag, Digest: "sha256:" + tag}},
		}
		f.Name = f.GenerateID()
		return f
	}
	stopped := freight("v1")
	if _, publish, err := d.createFreight(t.Context(), stopped); err != nil || !publish {
		t.Fatalf("create: %t %v", publish, err)
	}
	never := freight("v2")
	if err := d.markUnannounced(t.Context(), never); err != nil {
		t.Fatal(err)
	}
	// Within the grace period the sweep leaves both alone.
	if err := d.sweepUnannounced(t.Context(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := announced(t, env.JS); n != 0 {
		t.Fatalf("%d FreightDiscovered within the grace period, want 0", n)
	}
	for range 2 {
		if err := d.sweepUnannounced(t.Context(), 0); err != nil {
			t.Fatal(err)
		}
	}
	if n := announced(t, env.JS); n != 1 {
		t.Fatalf("%d FreightDiscovered after the sweep, want 1", n)
	}
	got, _, _ := state.Get[model.Freight](t.Context(), env.Store.KV(state.Freight), state.Key("demo", stopped.Name))
	if got.Annotations[AnnouncedAnnotation] == "" {
		t.Fatalf("swept freight not marked announced: %+v", got.Annotations)
	}
	lister, err := env.Store.KV(state.DiscoveryLeases).ListKeysFiltered(t.Context(), unannouncedToken+".>")
	if err != nil {
		t.Fatal(err)
	}
	for k := range lister.Keys() {
		t.Errorf("marker %s left after the sweep", k)
	}
}
