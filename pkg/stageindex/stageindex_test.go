package stageindex_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/stageindex"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

var (
	app = model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}
	lib = model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "lib"}
)

// stage returns a Stage of project demo with steps, requesting app
// directly when upstream is empty, else from the upstream stages.
func stage(name string, o model.FreightOrigin, upstream ...string) *model.Stage {
	src := model.FreightSources{Direct: len(upstream) == 0, Stages: upstream}
	return &model.Stage{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindStage},
		ObjectMeta: model.ObjectMeta{Name: name, Namespace: "demo", Labels: map[string]string{"tier": "web"}},
		Spec: model.StageSpec{
			RequestedFreight:  []model.FreightRequest{{Origin: o, Sources: src}},
			PromotionTemplate: &model.PromotionTemplate{Spec: model.PromotionTemplateSpec{Steps: []model.PromotionStep{{Uses: "fake"}}}},
		},
	}
}

// view is what a test checks of the sets of project demo.
type view struct {
	all           []string
	requestingApp []string
	requestingLib []string
	afterDev      []string
	afterQA       []string
}

func viewOf(s *stageindex.Sets) view {
	v := view{
		requestingApp: s.Requesting("demo", app),
		requestingLib: s.Requesting("demo", lib),
		afterDev:      s.Downstream("demo", "dev"),
		afterQA:       s.Downstream("demo", "qa"),
	}
	for _, st := range s.Stages("demo") {
		v.all = append(v.all, st.Name)
	}
	return v
}

func (v view) equal(w view) bool {
	return slices.Equal(v.all, w.all) && slices.Equal(v.requestingApp, w.requestingApp) && slices.Equal(v.requestingLib, w.requestingLib) &&
		slices.Equal(v.afterDev, w.afterDev) && slices.Equal(v.afterQA, w.afterQA)
}

// Of keeps what matching needs, as model.Stage answers it.
func TestOf(t *testing.T) {
	t.Parallel()
	s := stage("staging", app, "dev", "qa")
	s.Spec.RequestedFreight = append(s.Spec.RequestedFreight, model.FreightRequest{Origin: lib, Sources: model.FreightSources{Stages: []string{"dev"}}})
	got := stageindex.Of(s)
	for _, o := range []model.FreightOrigin{app, lib, {Kind: model.FreightOriginKindWarehouse, Name: "other"}} {
		if got.Requests(o) != s.RequestsOrigin(o) {
			t.Errorf("requests %s: %v, model says %v", o, got.Requests(o), s.RequestsOrigin(o))
		}
	}
	if !slices.Equal(got.Upstream, s.UpstreamStages()) || !got.Downstream("qa") || got.Downstream("prod") {
		t.Errorf("upstream: %v, model says %v", got.Upstream, s.UpstreamStages())
	}
	if got.ControlFlow != s.IsControlFlow() || got.Selectable().Name != "staging" || got.Selectable().Labels["tier"] != "web" {
		t.Errorf("described as %+v", got)
	}
	s.Spec.PromotionTemplate = nil
	if !stageindex.Of(s).ControlFlow {
		t.Error("a stage without steps is not control-flow")
	}
}

func TestSets(t *testing.T) {
	t.Parallel()
	s := stageindex.NewSets()
	tests := []struct {
		name string
		do   func()
		want view
	}{
		{"empty", func() {}, view{}},
		{"dev requests app directly", func() { s.Put("demo", stageindex.Of(stage("dev", app))) },
			view{all: []string{"dev"}, requestingApp: []string{"dev"}}},
		{"staging and qa request app from dev", func() {
			s.Put("demo", stageindex.Of(stage("staging", app, "dev")))
			s.Put("demo", stageindex.Of(stage("qa", app, "dev")))
		}, view{all: []string{"dev", "qa", "staging"}, requestingApp: []string{"dev", "qa", "staging"}, afterDev: []string{"qa", "staging"}}},
		{"another project's stage changes nothing here", func() { s.Put("other", stageindex.Of(stage("x", app, "dev"))) },
			view{all: []string{"dev", "qa", "staging"}, requestingApp: []string{"dev", "qa", "staging"}, afterDev: []string{"qa", "staging"}}},
		{"staging updated: lib from qa", func() { s.Put("demo", stageindex.Of(stage("staging", lib, "qa"))) },
			view{all: []string{"dev", "qa", "staging"}, requestingApp: []string{"dev", "qa"}, requestingLib: []string{"staging"},
				afterDev: []string{"qa"}, afterQA: []string{"staging"}}},
		{"dev deleted", func() { s.Delete("demo", "dev") },
			view{all: []string{"qa", "staging"}, requestingApp: []string{"qa"}, requestingLib: []string{"staging"},
				afterDev: []string{"qa"}, afterQA: []string{"staging"}}},
		{"deleting what is not there", func() { s.Delete("demo", "nope"); s.Delete("nope", "qa") },
			view{all: []string{"qa", "staging"}, requestingApp: []string{"qa"}, requestingLib: []string{"staging"},
				afterDev: []string{"qa"}, afterQA: []string{"staging"}}},
		{"all deleted", func() { s.Delete("demo", "qa"); s.Delete("demo", "staging") }, view{}},
	}
	for _, tt := range tests {
		tt.do()
		if got := viewOf(s); !got.equal(tt.want) {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
	if got := s.Projects(); !slices.Equal(got, []string{"other"}) {
		t.Errorf("projects: %v", got)
	}
}

// The index follows Stage creates, updates and deletes in the resources
// bucket (other kinds are not indexed but Sync sees past them), and a
// watch that ends is replaced: the index is rebuilt from the bucket, with
// the writes it missed meanwhile (lost events) included.
func TestIndexFollowsBucket(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: string(state.Resources)})
	if err != nil {
		t.Fatal(err)
	}
	put := func(obj model.Object) {
		t.Helper()
		b, _ := json.Marshal(obj)
		if _, err := kv.Put(ctx, state.KeyOf(obj), b); err != nil {
			t.Fatal(err)
		}
	}
	del := func(name string) {
		t.Helper()
		if err := kv.Delete(ctx, state.ResourceKey("demo", model.KindStage, name)); err != nil {
			t.Fatal(err)
		}
	}
	put(stage("dev", app))
	ix := stageindex.New(kv)
	ready := make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); ix.Run(wctx, ready, 10*time.Millisecond) }()
	<-ready

	tests := []struct {
		name  string
		write func()
		want  view
	}{
		{"loaded", func() {}, view{all: []string{"dev"}, requestingApp: []string{"dev"}}},
		{"created", func() { put(stage("staging", app, "dev")) },
			view{all: []string{"dev", "staging"}, requestingApp: []string{"dev", "staging"}, afterDev: []string{"staging"}}},
		{"updated", func() { put(stage("staging", lib, "qa")) },
			view{all: []string{"dev", "staging"}, requestingApp: []string{"dev"}, requestingLib: []string{"staging"}, afterQA: []string{"staging"}}},
		{"another kind is not indexed", func() {
			put(&model.Warehouse{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindWarehouse}, ObjectMeta: model.ObjectMeta{Name: "app", Namespace: "demo"}})
		}, view{all: []string{"dev", "staging"}, requestingApp: []string{"dev"}, requestingLib: []string{"staging"}, afterQA: []string{"staging"}}},
		{"deleted", func() { del("dev") },
			view{all: []string{"staging"}, requestingLib: []string{"staging"}, afterQA: []string{"staging"}}},
		// The key spells blue_green as a token that reads back as
		// blue.green: the index goes by the key, not its spelling.
		{"a name the key does not spell", func() { put(stage("blue_green", app, "dev")) },
			view{all: []string{"blue_green", "staging"}, requestingApp: []string{"blue_green"}, requestingLib: []string{"staging"},
				afterDev: []string{"blue_green"}, afterQA: []string{"staging"}}},
		{"...deleted by its key", func() { del("blue_green") },
			view{all: []string{"staging"}, requestingLib: []string{"staging"}, afterQA: []string{"staging"}}},
		{"not a stage under a stage's key", func() {
			if _, err := kv.Put(ctx, state.ResourceKey("demo", model.KindStage, "staging"), []byte("{")); err != nil {
				t.Fatal(err)
			}
		}, view{}},
	}
	for _, tt := range tests {
		tt.write()
		sets, err := ix.Sync(ctx, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := viewOf(sets); !got.equal(tt.want) {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}

	// The watch ends; writes go on unseen (lost events); a new watch
	// rebuilds the index from the bucket.
	stopWatch()
	<-done
	put(stage("prod", app, "staging"))
	put(stage("qa", lib, "dev"))
	if _, err := ix.Sync(ctx, time.Second); !errors.Is(err, stageindex.ErrNotCurrent) {
		t.Fatalf("sync without a watch, behind the bucket: %v", err)
	}
	del("qa")
	ready = make(chan struct{})
	go ix.Run(ctx, ready, 10*time.Millisecond)
	<-ready
	sets, err := ix.Sync(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := viewOf(sets), (view{all: []string{"prod"}, requestingApp: []string{"prod"}}); !got.equal(want) {
		t.Errorf("after the resync: %+v, want %+v", got, want)
	}
	if got := sets.Downstream("demo", "staging"); !slices.Equal(got, []string{"prod"}) {
		t.Errorf("downstream of staging after the resync: %v", got)
	}
}
