package freightindex_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Two indexes of one bucket with a Shared cache hold the same freight
// objects, and what each holds is what an index without the cache holds.
func TestSharedIndexesHoldOneCopy(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	kv := freightBucket(t)
	put := func(key string, v any) {
		t.Helper()
		b, _ := json.Marshal(v)
		if _, err := kv.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	put(state.Key("demo", "a"), freight("a", 2, "dev"))
	// No namespace: each index decodes its own (and defaults it).
	bare := freight("b", 1)
	bare.Namespace = ""
	put(state.Key("demo", "b"), bare)

	shared := freightindex.NewShared()
	run := func(shared *freightindex.Shared) *freightindex.Index {
		ix := freightindex.New(kv, shared)
		ready := make(chan struct{})
		go ix.Run(ctx, ready, 10*time.Millisecond)
		<-ready
		return ix
	}
	one, two, alone := run(shared), run(shared), run(nil)
	put(state.Key("demo", "c"), freight("c", 0, "dev"))
	put(state.Key("demo", "a"), freight("a", 2, "dev", "test")) // a new revision
	sync := func(ix *freightindex.Index) *freightindex.Sets {
		t.Helper()
		sets, err := ix.Sync(ctx, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return sets
	}
	s1, s2, s3 := sync(one), sync(two), sync(alone)
	for _, name := range []string{"a", "b", "c"} {
		f1, ok1 := s1.Get("demo", name)
		f2, ok2 := s2.Get("demo", name)
		f3, ok3 := s3.Get("demo", name)
		if !ok1 || !ok2 || !ok3 {
			t.Fatalf("%s: indexed %v %v %v", name, ok1, ok2, ok3)
		}
		if name == "b" {
			if f1 == f2 {
				t.Errorf("%s (no namespace) was shared", name)
			}
		} else if f1 != f2 {
			t.Errorf("%s: two copies", name)
		}
		j1, _ := json.Marshal(f1)
		j3, _ := json.Marshal(f3)
		if string(j1) != string(j3) {
			t.Errorf("%s: shared\n%s\nalone\n%s", name, j1, j3)
		}
	}
	if f, _ := s1.Get("demo", "a"); !f.IsVerifiedIn("test") {
		t.Errorf("a: the older revision is held: %+v", f.Status)
	}
}

// Get shares a key's latest revision only; Forget drops it; values that
// are not freight with a name and a namespace are not shared.
func TestSharedGet(t *testing.T) {
	t.Parallel()
	s := freightindex.NewShared()
	raw := func(f *model.Freight) []byte { b, _ := json.Marshal(f); return b }
	a := raw(freight("a", 0))
	f := s.Get("demo.a", 3, a)
	if f == nil || f.Name != "a" || f.ResourceVersion != "3" {
		t.Fatalf("get: %+v", f)
	}
	if g := s.Get("demo.a", 3, a); g != f {
		t.Error("same revision, another object")
	}
	if g := s.Get("demo.a", 4, a); g == f || g.ResourceVersion != "4" {
		t.Errorf("new revision: %+v", g)
	}
	if g := s.Get("demo.a", 3, a); g == nil || g.ResourceVersion != "3" {
		t.Errorf("older revision: %+v", g)
	}
	s.Forget("demo.a", 5)
	g := s.Get("demo.a", 4, a)
	if g2 := s.Get("demo.a", 4, a); g2 != g {
		t.Error("after Forget, a put is cached again")
	}
	noKind := freight("x", 0)
	noKind.TypeMeta = model.TypeMeta{}
	for name, v := range map[string][]byte{"no kind": raw(noKind), "not JSON": []byte("{"), "no name": raw(freight("", 0))} {
		if got := s.Get("demo.x", 1, v); got != nil {
			t.Errorf("%s: shared %+v", name, got)
		}
	}
	var none *freightindex.Shared
	if none.Get("demo.a", 1, a) != nil {
		t.Error("nil Shared shared")
	}
	none.Forget("demo.a", 1)
}
