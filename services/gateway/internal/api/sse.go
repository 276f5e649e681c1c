package api

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// ShutdownEvent is the SSE event type of the last event a stream sends
// when the gateway shuts down; its data is {"type":"shutdown","message"}.
const ShutdownEvent = "shutdown"

// shutdownRetry is the reconnection delay a shutting-down stream suggests.
const shutdownRetry = 2 * time.Second

const shutdownData = `{"type":"shutdown","message":"the server is shutting down; reconnect and resume with Last-Event-ID"}`

// events streams the project's events as Server-Sent Events: `id:` is the
// event's stream sequence, `event:` its type, `data:` the envelope. A
// client resumes after a disconnect by sending the last id it saw as
// Last-Event-ID (or ?lastEventID=); without one the stream starts with new
// events. A comment line keeps idle connections open.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.project(w, r); !ok {
		return
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("lastEventID")
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.ProjectFilter(r.PathValue("project"))},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	}
	if last = strings.TrimSpace(last); last != "" {
		seq, err := strconv.ParseUint(last, 10, 64)
		if err != nil {
			invalid(w, "Last-Event-ID", "not an id this stream sent")
			return
		}
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = seq + 1
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	cons, err := s.js.OrderedConsumer(ctx, events.StreamEvents, cfg)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	it, err := cons.Messages()
	if err != nil {
		s.internal(w, r, err)
		return
	}
	defer it.Stop()
	msgs := make(chan jetstream.Msg)
	go func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": stream of project "+r.PathValue("project")+"\n\n"); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(s.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.stopping:
			// No id: the client resumes after the last event it had.
			_, _ = fmt.Fprintf(w, "event: %s\nretry: %d\ndata: %s\n\n", ShutdownEvent, shutdownRetry.Milliseconds(), shutdownData)
			_ = rc.Flush()
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case m, ok := <-msgs:
			if !ok {
				return
			}
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			// The stream holds the payload; clients get the whole
			// envelope (pkg/events wire.go).
			env, err := events.Open(m)
			if err != nil || env.Type == "" {
				continue
			}
			data, err := env.MarshalJSON()
			if err != nil || bytes.ContainsAny(data, "\r\n") {
				continue
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", meta.Sequence.Stream, env.Type, data); err != nil || rc.Flush() != nil {
				return
			}
			if projectDeleted(m.Subject()) {
				return // the stream ends with its project; one of the same name is another
			}
		}
	}
}

// projectDeleted reports whether subject is that of the project's own
// ResourceDeleted.
func projectDeleted(subject string) bool {
	return strings.Contains(subject, "."+string(events.TypeResourceDeleted)+"."+model.KindProject+".")
}
