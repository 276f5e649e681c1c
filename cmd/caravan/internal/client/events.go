package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/caravan-cd/caravan/pkg/events"
)

// Event is one Server-Sent Event of a project's stream.
type Event struct {
	// ID is the resume token (Last-Event-ID).
	ID string
	// Type is the SSE event name: the envelope's type.
	Type     string
	Envelope events.Envelope
}

// ShutdownEvent is the type of the last event a shutting-down gateway
// sends on each stream.
const ShutdownEvent = "shutdown"

// ErrShutdown is what Next returns when the server said it shuts down (the
// stream ends; reconnect to resume).
var ErrShutdown = errors.New("the server is shutting down")

// Stream reads a project's event stream. Call Close when done; Next is not
// safe for concurrent use.
type Stream struct {
	body   io.ReadCloser
	r      *bufio.Reader
	lastID string
}

// Events opens GET /v1/projects/{project}/events, resuming after
// lastEventID when it is not empty. It returns once the server answered, so
// events published after it returns are not missed. Cancelling ctx ends
// the stream.
func (c *Client) Events(ctx context.Context, project, lastEventID string) (*Stream, error) {
	h := http.Header{}
	h.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		h.Set("Last-Event-ID", lastEventID)
	}
	req, err := c.newRequest(ctx, request{method: http.MethodGet, path: projectPath(project, "events"), header: h})
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("open event stream: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		return nil, decodeError(resp.StatusCode, b)
	}
	return &Stream{body: resp.Body, r: bufio.NewReaderSize(resp.Body, 64<<10), lastID: lastEventID}, nil
}

// LastID is the id of the last event read, to resume from.
func (s *Stream) LastID() string { return s.lastID }

// Close ends the stream.
func (s *Stream) Close() error { return s.body.Close() }

// Next returns the next event, skipping heartbeats. It returns io.EOF when
// the server ended the stream.
func (s *Stream) Next() (Event, error) {
	var ev Event
	var data strings.Builder
	hasData := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" {
				return Event{}, io.EOF
			}
			if err != io.EOF {
				return Event{}, err
			}
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if !hasData {
				ev = Event{ID: ev.ID}
				continue
			}
			if ev.Type == ShutdownEvent {
				return Event{}, ErrShutdown
			}
			if ev.ID != "" {
				s.lastID = ev.ID
			}
			if err := json.Unmarshal([]byte(data.String()), &ev.Envelope); err != nil {
				return Event{}, fmt.Errorf("event %q: decode data: %w", ev.Type, err)
			}
			if ev.Type == "" {
				ev.Type = string(ev.Envelope.Type)
			}
			return ev, nil
		case strings.HasPrefix(line, ":"):
			// comment (heartbeat)
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				ev.Type = value
			case "id":
				ev.ID = value
			case "data":
				if hasData {
					data.WriteByte('\n')
				}
				data.WriteString(value)
				hasData = true
			}
		}
	}
}

// Decode decodes the envelope's payload into the typed event v.
func (e Event) Decode(v events.Event) error {
	return json.Unmarshal(e.Envelope.Payload, v)
}
