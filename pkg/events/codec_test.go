package events

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
)

// The envelope codec must write and read exactly what encoding/json does:
// the API, the event stream's SSE and events written before the payload
// went alone on the wire (wire.go) are these bytes.

func TestMarshalMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 3, 1, 2, 3, 4000, time.UTC)
	cases := map[string]Envelope{
		"usual":          {ID: NewID(), Type: TypeFreightDiscovered, Version: 1, Time: at, Source: "discovery", Project: "demo", Subject: Ref{"Freight", "abc"}, Payload: json.RawMessage(`{"freight":"abc"}`)},
		"no project":     {ID: "x", Type: TypeFreightApproved, Version: 2, Time: at, Source: "gateway", Subject: Ref{"Freight", "abc"}, Payload: json.RawMessage(`{}`)},
		"no payload":     {ID: "x", Type: "T", Time: at},
		"zero":           {},
		"escapes":        {ID: "a\"b\\c", Type: "<T>&", Source: "s\n\t\u2028", Project: "ünïcode", Subject: Ref{"K\x01", "n/é"}, Time: at},
		"offset time":    {ID: "x", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", -5*3600))},
		"negative":       {ID: "x", Version: -7, Time: at},
		"invalid utf8":   {ID: "\xff\xfe", Time: at},
		"whole seconds":  {ID: "x", Time: at.Truncate(time.Second)},
		"local timezone": {ID: "x", Time: at.In(time.FixedZone("y", 3600+1800))},
	}
	for name, env := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := env.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			type plain Envelope
			p := plain(env)
			if len(p.Payload) == 0 {
				p.Payload = json.RawMessage("null")
			}
			want, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("MarshalJSON:\n got %s\nwant %s", got, want)
			}
		})
	}
	_, err := Envelope{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}.MarshalJSON()
	if err == nil {
		t.Fatal("year 10000: no error, encoding/json refuses it")
	}
}

var decodeCases = []string{
	`{"id":"01J","type":"FreightDiscovered","version":1,"time":"2026-12-03T01:02:03.000004Z","source":"discovery","project":"demo","subject":{"kind":"Freight","name":"abc"},"payload":{"freight":"abc","alias":"calm-otter","origin":{"kind":"Warehouse","name":"w"}}}`,
	` { "payload" : { "freight" : "x" } , "subject" : { "name" : "n" , "kind" : "k" } , "id" : "i" } `,
	`{"id":"i","payload":null}`,
	`{"id":"i"}`,
	`{}`,
	`null`,
	`{"ID":"upper case key"}`,
	`{"id":"esc\"aped","type":"FreightDiscovered"}`,
	`{"id":"\u00e9"}`,
	`{"id":"é"}`,
	`{"version":1.5}`,
	`{"version":01}`,
	`{"version":-0}`,
	`{"version":99999999999999999999999}`,
	`{"version":"1"}`,
	`{"time":"2026-12-03T01:02:03+01:00"}`,
	`{"time":"2026-12-03 01:02:03Z"}`,
	`{"time":"not a time"}`,
	`{"time":null}`,
	`{"subject":{"kind":"k","other":"x"}}`,
	`{"subject":null}`,
	`{"subject":{}}`,
	`{"extra":1,"id":"i"}`,
	`{"payload":{"freight":"a\"b","origin":{"kind":"k","name":"n"},"alias":"x"}}`,
	`{"payload":{"freight":tru}}`,
	`{"payload":[1,2]}`,
	`{"payload":"string"}`,
	`{"payload":{"freight":"x"}`,
	`{"payload":{"freight":"x"}}}`,
	`{"id":"i",}`,
	`{"id":"i"} x`,
	`{"id" "i"}`,
	`{"id":"i","id":"j"}`,
	`{"payload":{"freight":"x"},"payload":{"alias":"y"}}`,
	``,
	`[`,
	`{"payload":{"a":[{"b":"}"}]},"id":"i"}`,
}

func TestDecodeMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, in := range decodeCases {
		checkDecode(t, []byte(in))
	}
}

func FuzzEnvelopeDecode(f *testing.F) {
	for _, in := range decodeCases {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data) })
}

// checkDecode compares both of the package's decoders with encoding/json:
// the same error or none, and the same values.
func checkDecode(t *testing.T, data []byte) {
	t.Helper()
	type plain Envelope
	var want, got plain
	wantErr := json.Unmarshal(data, &want)
	gotErr := (*Envelope)(&got).UnmarshalJSON(data)
	if (gotErr == nil) != (wantErr == nil) || gotErr == nil && !reflect.DeepEqual(got, want) {
		t.Errorf("Envelope.UnmarshalJSON(%q):\n got %+v, %v\nwant %+v, %v", data, got, gotErr, want, wantErr)
	}

	var wantT typed[FreightDiscovered]
	wantTErr := json.Unmarshal(data, &wantT)
	gotT, gotTErr := decodeTyped[FreightDiscovered](message{data: data}) // an envelope as JSON: no Caravan-Version
	if (gotTErr == nil) != (wantTErr == nil) || gotTErr == nil && !reflect.DeepEqual(gotT, wantT) {
		t.Errorf("decodeTyped(%q):\n got %+v, %v\nwant %+v, %v", data, gotT, gotTErr, wantT, wantTErr)
	}
}

// BenchmarkEventCodec is the CPU side of BenchmarkEventHop without the
// network: what a raw JetStream user does to one event (json.Marshal,
// json.Unmarshal, a message ID) beside what pkg/events does (seal, encode
// the headers that carry the envelope, decode them and the payload). Run with -benchmem: allocs/op
// is the allocation count per hop of each.
func BenchmarkEventCodec(b *testing.B) {
	ev := FreightDiscovered{Freight: "0123456789abcdef0123456789abcdef01234567", Alias: "calm-otter", Origin: FreightOrigin{Kind: "Warehouse", Name: "demo"}}
	ref := Ref{Kind: "Freight", Name: ev.Freight}
	b.Run("raw", func(b *testing.B) {
		for b.Loop() {
			data, err := json.Marshal(ev)
			if err != nil {
				b.Fatal(err)
			}
			_ = NewID()
			var got FreightDiscovered
			if err := json.Unmarshal(data, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("events", func(b *testing.B) {
		ctx, propagator := context.Background(), propagation.TraceContext{}
		for b.Loop() {
			env, err := Seal("", "bench", "demo", ref, ev)
			if err != nil {
				b.Fatal(err)
			}
			h := newHeaders(ctx, propagator, &env)
			if _, err := decodeTyped[FreightDiscovered](message{subject: Subject(env.Project, env.Type, env.Subject), header: h, data: env.Payload}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
