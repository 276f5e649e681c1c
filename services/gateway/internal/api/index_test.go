package api

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// openStore declares the buckets on srv and binds them (no secrets).
func openStore(t *testing.T, srv *testenv.Server) (*state.Store, jetstream.JetStream) {
	t.Helper()
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Setup(t.Context(), js, 1); err != nil {
		t.Fatal(err)
	}
	store, err := state.Open(t.Context(), js, nil)
	if err != nil {
		t.Fatal(err)
	}
	return store, js
}

// TestIndexFollowsAcrossRestart: after the NATS server restarts, the
// index's watches (which would resume by themselves only once their
// heartbeats are missed) are found stalled by a list and started again:
// a list made after the restart shows the writes made after it, and not a
// key whose messages were purged, which only a new watch can tell; the
// promotions by stage follow too.
func TestIndexFollowsAcrossRestart(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testenv.NATS(t)
	store, js := openStore(t, srv)
	ix, err := NewIndex(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string) {
		t.Helper()
		p := &model.Promotion{
			TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion},
			ObjectMeta: model.ObjectMeta{Name: name, Namespace: "demo"},
			Spec:       model.PromotionSpec{Stage: "dev", Freight: "f"},
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, "put "+name, func() error {
			_, err := store.KV(state.Promotions).Put(ctx, state.Key("demo", name), b)
			return err
		})
	}
	names := func() (list, byStage []string) {
		t.Helper()
		testenv.Eventually(t, "sync the promotions", func() error { return ix.SyncBucket(ctx, state.Promotions) })
		objs, _, err := ix.ListObjects(ctx, "demo", model.KindPromotion, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			list = append(list, o.GetObjectMeta().Name)
		}
		of, err := ix.PromotionsOf(ctx, "demo", "dev")
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range of {
			byStage = append(byStage, o.GetObjectMeta().Name)
		}
		return list, byStage
	}
	want := func(w ...string) {
		t.Helper()
		list, byStage := names()
		if !slices.Equal(list, w) || !slices.Equal(byStage, w) {
			t.Fatalf("listed %v, by stage %v, want %v", list, byStage, w)
		}
	}
	put("a")
	put("b")
	want("a", "b")

	srv.Restart(t)
	put("c")
	// a's messages go without a trace (no delete marker): only a new
	// watch, whose values replace the index's, drops it.
	bucket := store.KV(state.Promotions).Bucket()
	stream, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+bucket+"."+state.Key("demo", "a"))); err != nil {
		t.Fatal(err)
	}
	want("b", "c")
}
