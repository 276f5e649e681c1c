package queue

import (
	"testing"
	"time"
)

func TestRecord(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var r Record
	if !r.Add(Entry{Name: "b", Freight: "f2", Created: t0.Add(time.Second)}) || !r.Add(Entry{Name: "a", Freight: "f1", Created: t0.Add(time.Second)}) || !r.Add(Entry{Name: "z", Created: t0}) {
		t.Fatal("Add refused a new entry")
	}
	if r.Add(Entry{Name: "a"}) {
		t.Fatal("Add took a duplicate")
	}
	var names []string
	for _, e := range r.Pending {
		names = append(names, e.Name)
	}
	if got := names; len(got) != 3 || got[0] != "z" || got[1] != "a" || got[2] != "b" {
		t.Fatalf("order = %v, want [z a b]", got)
	}
	if !r.HasFreight("f2") || r.HasFreight("f9") {
		t.Fatal("HasFreight")
	}
	r.Running = &Entry{Name: "z"}
	r.Pending = r.Pending[1:]
	r.Abort = []string{"z"}
	if !r.AbortRequested("z") || !r.Remove("z") || r.Running != nil || len(r.Abort) != 0 || r.Remove("z") {
		t.Fatalf("Remove: %+v", r)
	}
	p, s, ok := Parse(Key("proj", "stage.one"))
	if !ok || p != "proj" || s != "stage.one" {
		t.Fatalf("Parse = %q %q %v", p, s, ok)
	}
}
