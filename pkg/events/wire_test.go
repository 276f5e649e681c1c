package events

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
)

// An event's subject, headers and payload give back the envelope it was
// published from, whatever its names hold; only names a subject token
// cannot give back cost a header.
func TestWireRoundTrip(t *testing.T) {
	t.Parallel()
	ev := FreightDiscovered{Freight: "abc", Alias: "calm-otter"}
	stored := time.Date(2026, 12, 3, 12, 0, 0, 123, time.UTC)
	tests := []struct {
		name      string
		project   string
		ref       Ref
		extraKeys []string
	}{
		{"plain names", "demo", Ref{Kind: "Freight", Name: "abc"}, nil},
		{"dotted names", "team.a", Ref{Kind: "Stage", Name: "eu.prod"}, nil},
		{"cluster-scoped", "", Ref{Kind: "Project", Name: "demo"}, nil},
		{"empty name", "demo", Ref{Kind: "Warehouse"}, nil},
		{"underscores", "my_proj", Ref{Kind: "Freight", Name: "a_b"}, []string{HeaderProject, HeaderSubjectName}},
		{"a lone dot", ".", Ref{Kind: "Freight", Name: "x"}, []string{HeaderProject}},
		{"wildcards and spaces", "demo", Ref{Kind: "K*", Name: "a >b"}, []string{HeaderSubjectKind, HeaderSubjectName}},
		{"a lone underscore", "_", Ref{Kind: "Freight", Name: "_"}, []string{HeaderProject, HeaderSubjectName}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := Seal("", "discovery", tt.project, tt.ref, ev)
			if err != nil {
				t.Fatal(err)
			}
			h := newHeaders(context.Background(), propagation.TraceContext{}, &env)
			for _, k := range []string{HeaderProject, HeaderSubjectKind, HeaderSubjectName} {
				_, has := h[k]
				if want := strings.Contains(strings.Join(tt.extraKeys, ","), k); has != want {
					t.Errorf("header %s present = %v, want %v (headers %v)", k, has, want, h)
				}
			}
			got, err := open(Subject(env.Project, env.Type, env.Subject), h, env.Payload, stored)
			if err != nil {
				t.Fatal(err)
			}
			want := env
			want.Time = stored
			if !reflect.DeepEqual(got, want) {
				t.Errorf("open:\n got %+v\nwant %+v", got, want)
			}
			typed, err := decodeTyped[FreightDiscovered](message{subject: Subject(env.Project, env.Type, env.Subject), header: h, data: env.Payload, stored: stored})
			if err != nil {
				t.Fatal(err)
			}
			if typed.Payload != ev || typed.envelopeHead != (envelopeHead{want.ID, want.Type, want.Version, want.Time, want.Source, want.Project, want.Subject}) {
				t.Errorf("decodeTyped = %+v", typed)
			}
		})
	}
}

// A message without Caravan-Version is an envelope as JSON, as every
// event was written before the payload went alone: it is still read.
func TestWireReadsEnvelopesWrittenBefore(t *testing.T) {
	t.Parallel()
	env, err := Seal("old-1", "promoter", "demo", Ref{Kind: "Freight", Name: "abc"}, FreightDiscovered{Freight: "abc"})
	if err != nil {
		t.Fatal(err)
	}
	env.Time = env.Time.Truncate(time.Microsecond)
	data, err := env.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{jetstream.MsgIDHeader: {"old-1"}}
	subject := Subject(env.Project, env.Type, env.Subject)
	got, err := open(subject, h, data, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != env.ID || !got.Time.Equal(env.Time) || got.Source != "promoter" || string(got.Payload) != string(env.Payload) {
		t.Errorf("open = %+v, want %+v", got, env)
	}
	typed, err := decodeTyped[FreightDiscovered](message{subject: subject, header: h, data: data})
	if err != nil || typed.Payload.Freight != "abc" || typed.ID != "old-1" {
		t.Errorf("decodeTyped = %+v, %v", typed, err)
	}
}

// What cannot be an event is refused with the field at fault.
func TestWireRefuses(t *testing.T) {
	t.Parallel()
	good := Subject("demo", TypeFreightDiscovered, Ref{Kind: "Freight", Name: "abc"})
	tests := []struct {
		name, subject, version, data, want string
	}{
		{"version not a number", good, "one", `{}`, HeaderVersion},
		{"short subject", "caravan.events.demo.FreightDiscovered", "1", `{}`, "is not caravan.events"},
		{"long subject", good + ".more", "1", `{}`, "is not caravan.events"},
		{"another root", "other.events.demo.T.K.n", "1", `{}`, "is not caravan.events"},
		{"payload not JSON", good, "1", `{"freight":`, "payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := nats.Header{HeaderVersion: {tt.version}, jetstream.MsgIDHeader: {"x"}}
			_, err := open(tt.subject, h, []byte(tt.data), time.Time{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("open: %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

// The wire form is smaller than the envelope it carries: the payload and
// a few short headers (the figure BenchmarkEventHop depends on).
func TestWireIsSmall(t *testing.T) {
	t.Parallel()
	ev := FreightDiscovered{Freight: "0123456789abcdef0123456789abcdef01234567", Alias: "calm-otter", Origin: FreightOrigin{Kind: "Warehouse", Name: "demo"}}
	env, err := Seal("", "discovery", "demo", Ref{Kind: "Freight", Name: ev.Freight}, ev)
	if err != nil {
		t.Fatal(err)
	}
	h := newHeaders(context.Background(), propagation.TraceContext{}, &env)
	headerBytes := 0
	for k, v := range h {
		if k != jetstream.MsgIDHeader { // the raw hop sends one too
			headerBytes += len(k) + len(v[0]) + 4
		}
	}
	full, _ := json.Marshal(env)
	if extra := headerBytes; extra > 64 || len(env.Payload)+extra >= len(full)/2 {
		t.Errorf("wire form: payload %d + headers %d bytes, against %d for the envelope", len(env.Payload), extra, len(full))
	}
}
