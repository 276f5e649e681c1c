package events

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
)

// On the wire an event is its payload: the message's data is the payload
// as json.Marshal wrote it, encoded once. The envelope's other fields
// travel where NATS and JetStream carry them already:
//
//	ID                     Nats-Msg-Id (Caravan-Id when a replay gave the message another)
//	Type, Project, Subject the subject's tokens; Caravan-Project, Caravan-Subject-Kind
//	                       and Caravan-Subject-Name only for a value its token does not give back
//	Version                Caravan-Version
//	Source                 Caravan-Source
//	Time                   when the stream stored the message
//
// A message without Caravan-Version is an envelope as JSON, as every event
// was written before: it is still read.
const (
	HeaderVersion     = "Caravan-Version"
	HeaderSource      = "Caravan-Source"
	HeaderID          = "Caravan-Id"
	HeaderProject     = "Caravan-Project"
	HeaderSubjectKind = "Caravan-Subject-Kind"
	HeaderSubjectName = "Caravan-Subject-Name"
)

// outHeaders are the headers of one published message, their values in
// one allocation with the carrier the propagator writes through.
type outHeaders struct {
	vals [8]string // ID, version, source, up to three names, trace context
	c    injector
}

// newHeaders returns the headers that carry env beside its payload, with
// ctx's trace context.
func newHeaders(ctx context.Context, p propagation.TextMapPropagator, env *Envelope) nats.Header {
	o := &outHeaders{}
	h := make(nats.Header, 5)
	n := 0
	set := func(key, value string) {
		o.vals[n] = value
		h[key] = o.vals[n : n+1 : n+1]
		n++
	}
	set(jetstream.MsgIDHeader, env.ID)
	set(HeaderVersion, strconv.Itoa(env.Version))
	set(HeaderSource, env.Source)
	if !tokenKeeps(env.Project) {
		set(HeaderProject, env.Project)
	}
	if !tokenKeeps(env.Subject.Kind) {
		set(HeaderSubjectKind, env.Subject.Kind)
	}
	if !tokenKeeps(env.Subject.Name) {
		set(HeaderSubjectName, env.Subject.Name)
	}
	o.c = injector{h: h, spare: o.vals[n:]}
	p.Inject(ctx, &o.c)
	return h
}

// tokenKeeps reports whether untoken(Token(s)) is s: whether the subject
// gives s back.
func tokenKeeps(s string) bool {
	return s != "." && !strings.ContainsAny(s, "_*> \t\r\n")
}

// untoken is the value a subject token stands for, as Token wrote it from
// a name that tokenKeeps.
func untoken(tok string) string {
	if tok == "_" {
		return ""
	}
	if strings.IndexByte(tok, '_') < 0 {
		return tok
	}
	return strings.ReplaceAll(tok, "_", ".")
}

// openHead reads the envelope's fields, all but its payload, from a
// message's subject and headers; ok is false for a message without
// Caravan-Version, an envelope as JSON.
func openHead(subject string, h nats.Header, stored time.Time) (head envelopeHead, ok bool, err error) {
	version := h.Get(HeaderVersion)
	if version == "" {
		return head, false, nil
	}
	if head.Version, err = strconv.Atoi(version); err != nil {
		return head, true, fmt.Errorf("header %s: %q is not a number", HeaderVersion, version)
	}
	// caravan.events.<project>.<type>.<kind>.<name>
	rest, found := strings.CutPrefix(subject, SubjectRoot+".")
	var tokens [4]string
	for i := range 3 {
		if !found {
			break
		}
		tokens[i], rest, found = strings.Cut(rest, ".")
	}
	if !found || rest == "" || strings.IndexByte(rest, '.') >= 0 {
		return head, true, fmt.Errorf("subject %q is not %s.<project>.<type>.<kind>.<name>", subject, SubjectRoot)
	}
	tokens[3] = rest
	head.ID = h.Get(HeaderID)
	if head.ID == "" {
		head.ID = h.Get(jetstream.MsgIDHeader)
	}
	head.Type = Type(tokens[1])
	head.Time = stored
	head.Source = h.Get(HeaderSource)
	head.Project = headerOr(h, HeaderProject, tokens[0])
	head.Subject = Ref{Kind: headerOr(h, HeaderSubjectKind, tokens[2]), Name: headerOr(h, HeaderSubjectName, tokens[3])}
	return head, true, nil
}

func headerOr(h nats.Header, key, token string) string {
	if v, ok := h[key]; ok && len(v) > 0 {
		return v[0]
	}
	return untoken(token)
}

// open returns the envelope of an event message.
func open(subject string, h nats.Header, data []byte, stored time.Time) (Envelope, error) {
	head, ok, err := openHead(subject, h, stored)
	if err != nil {
		return Envelope{}, err
	}
	if !ok {
		var env Envelope
		if err := json.Unmarshal(data, &env); err != nil {
			return Envelope{}, fmt.Errorf("decode envelope on %s: %w", subject, err)
		}
		return env, nil
	}
	if !json.Valid(data) {
		return Envelope{}, fmt.Errorf("%s payload on %s is not JSON", head.Type, subject)
	}
	return Envelope{
		ID: head.ID, Type: head.Type, Version: head.Version, Time: head.Time, Source: head.Source,
		Project: head.Project, Subject: head.Subject, Payload: json.RawMessage(data),
	}, nil
}

// Open returns the envelope of an event read from the stream: its payload
// and the fields its subject and headers carry; Time is when the stream
// stored it. The payload shares the message's data.
func Open(m jetstream.Msg) (Envelope, error) {
	var stored time.Time
	if meta, err := m.Metadata(); err == nil {
		stored = meta.Timestamp.UTC()
	}
	return open(m.Subject(), m.Headers(), m.Data(), stored)
}

// OpenNATS is Open for an event seen by a core NATS subscription. Time is
// when the stream stored it when the message says (a delivery of a
// consumer), zero otherwise (a subscriber on the subject sees the message
// before the stream has stored it).
func OpenNATS(m *nats.Msg) (Envelope, error) {
	var stored time.Time
	if meta, err := m.Metadata(); err == nil {
		stored = meta.Timestamp.UTC()
	}
	return open(m.Subject, m.Header, m.Data, stored)
}
