package freightindex_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

var app = model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// freight returns freight name created age minutes before epoch.
func freight(name string, age int, verified ...string) *model.Freight {
	f := &model.Freight{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
		ObjectMeta: model.ObjectMeta{Name: name, Namespace: "demo", CreationTimestamp: model.NewTime(epoch.Add(-time.Duration(age) * time.Minute))},
		Origin:     app,
	}
	for _, s := range verified {
		if f.Status.VerifiedIn == nil {
			f.Status.VerifiedIn = map[string]model.VerifiedStage{}
		}
		f.Status.VerifiedIn[s] = model.VerifiedStage{}
	}
	return f
}

// freightBucket starts a nats-server and returns its freight bucket, as
// the services create it. The server and the connection go at cleanup.
func freightBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(testenv.NATS(t).Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: string(state.Freight)})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func names(s *freightindex.Sets, rel freightindex.Relation, stage string) []string {
	out := []string{}
	s.Walk("demo", app, rel, stage, func(f *model.Freight) bool {
		out = append(out, f.Name)
		return true
	})
	return out
}

func TestSets(t *testing.T) {
	t.Parallel()
	s := freightindex.NewSets()
	s.Put("demo", freight("b", 2, "dev"))
	s.Put("demo", freight("a", 3, "dev", "qa"))
	s.Put("demo", freight("c", 1))
	s.Put("other", freight("z", 0, "dev"))
	tests := []struct {
		name  string
		rel   freightindex.Relation
		stage string
		want  []string
	}{
		{"all, newest first", freightindex.All, "", []string{"c", "b", "a"}},
		{"verified in dev", freightindex.VerifiedIn, "dev", []string{"b", "a"}},
		{"verified in qa", freightindex.VerifiedIn, "qa", []string{"a"}},
		{"approved for nothing", freightindex.ApprovedFor, "dev", []string{}},
	}
	for _, tt := range tests {
		if got := names(s, tt.rel, tt.stage); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	// An update replaces the freight in every list; a delete removes it.
	s.Put("demo", freight("a", 3, "qa"))
	s.Delete("demo", "b")
	if got := names(s, freightindex.VerifiedIn, "dev"); len(got) != 0 {
		t.Errorf("verified in dev after the update: %v", got)
	}
	if got := names(s, freightindex.All, ""); !slices.Equal(got, []string{"c", "a"}) {
		t.Errorf("all after the delete: %v", got)
	}
	if f, ok := s.Get("demo", "a"); !ok || !f.IsVerifiedIn("qa") {
		t.Errorf("get a: %v %v", f, ok)
	}
	// Walk stops when asked.
	n := 0
	s.Walk("demo", app, freightindex.All, "", func(*model.Freight) bool { n++; return false })
	if n != 1 {
		t.Errorf("walk went on after false: %d", n)
	}
}

// The index follows the bucket through its watch, Sync answers once it
// has caught up, and a watch that ends is replaced: the index is rebuilt
// from the bucket, writes made meanwhile included.
func TestIndexFollowsBucket(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kv := freightBucket(t)
	put := func(f *model.Freight) {
		t.Helper()
		b, _ := json.Marshal(f)
		if _, err := kv.Put(ctx, state.Key("demo", f.Name), b); err != nil {
			t.Fatal(err)
		}
	}
	put(freight("a", 2))
	ix := freightindex.New(kv, nil)
	if _, err := ix.Sync(ctx, time.Second); !errors.Is(err, freightindex.ErrNotCurrent) {
		t.Fatalf("sync before loading: %v", err)
	}
	ready := make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); ix.Run(wctx, ready, 10*time.Millisecond) }()
	<-ready
	put(freight("b", 1, "dev"))
	sets, err := ix.Sync(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(sets, freightindex.All, ""); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("indexed: %v", got)
	}
	if err := kv.Delete(ctx, state.Key("demo", "a")); err != nil {
		t.Fatal(err)
	}
	if sets, err = ix.Sync(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := names(sets, freightindex.All, ""); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("after the delete: %v", got)
	}

	// The watch ends; writes go on; a new watch rebuilds the sets.
	stopWatch()
	<-done
	put(freight("c", 0, "dev"))
	if _, err := ix.Sync(ctx, time.Second); !errors.Is(err, freightindex.ErrNotCurrent) {
		t.Fatalf("sync without a watch, behind the bucket: %v", err)
	}
	ready = make(chan struct{})
	go ix.Run(ctx, ready, 10*time.Millisecond)
	<-ready
	if sets, err = ix.Sync(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := names(sets, freightindex.VerifiedIn, "dev"); !slices.Equal(got, []string{"c", "b"}) {
		t.Fatalf("after the resync: %v", got)
	}
}
