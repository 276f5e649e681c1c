package audit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/testenv"
)

func TestAppendListImmutable(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	log, err := Setup(ctx, js, time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	recs := []Record{
		{ID: "a", Time: base, Actor: "alice", Project: "shop", Action: "apply", Object: "Stage/prod"},
		{ID: "b", Time: base.Add(time.Minute), Actor: "bob", Project: "shop", Action: "promote", Object: "Promotion/prod.x"},
		{ID: "b", Time: base.Add(time.Minute), Actor: "bob", Project: "shop", Action: "promote", Object: "Promotion/prod.x"}, // a repeat
		{ID: "c", Time: base.Add(2 * time.Minute), Actor: "system:promoter", Project: "shop", Action: ActionRollback, Automatic: true},
		{ID: "d", Time: base, Actor: "alice", Project: "other", Action: "apply"},
	}
	for _, r := range recs {
		if err := log.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{name: "all, newest first", want: []string{"c", "b", "a"}},
		{name: "actor", f: Filter{Actor: "alice"}, want: []string{"a"}},
		{name: "action", f: Filter{Action: ActionRollback}, want: []string{"c"}},
		{name: "object prefix", f: Filter{Object: "Promotion/"}, want: []string{"b"}},
		{name: "until", f: Filter{Until: base.Add(time.Minute)}, want: []string{"b", "a"}},
		{name: "limit", f: Filter{Limit: 1}, want: []string{"c"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := log.List(ctx, "shop", tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range got {
				ids = append(ids, r.ID)
			}
			if len(ids) != len(tc.want) {
				t.Fatalf("ids %v, want %v", ids, tc.want)
			}
			for i := range ids {
				if ids[i] != tc.want[i] {
					t.Fatalf("ids %v, want %v", ids, tc.want)
				}
			}
		})
	}
	// Nothing can be taken out.
	s, err := js.Stream(ctx, Stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, 1); err == nil {
		t.Error("a record was deleted")
	}
	if err := s.Purge(ctx); err == nil {
		t.Error("the log was purged")
	}
	if got, _ := log.List(ctx, "empty", Filter{}); len(got) != 0 {
		t.Errorf("empty project: %v", got)
	}
}

func TestCanonical(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{`{"b":1,"a":{"d":[1,2],"c":"x"}}`, `{"a":{"c":"x","d":[1,2]},"b":1}`},
		{"{\n  \"a\": \"<&>\"\n}\n", `{"a":"<&>"}`},
		{`{"n":12345678901234567890,"f":1.50}`, `{"f":1.50,"n":12345678901234567890}`},
	} {
		got, err := Canonical([]byte(c.in))
		if err != nil || string(got) != c.want {
			t.Errorf("Canonical(%s) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	if _, err := Canonical([]byte(`{`)); err == nil {
		t.Error("Canonical of broken JSON: no error")
	}
	h, err := CanonicalHash(map[string]int{"b": 2, "a": 1})
	if err != nil || h != Hash([]byte(`{"a":1,"b":2}`)) {
		t.Errorf("CanonicalHash: %s %v", h, err)
	}
}
