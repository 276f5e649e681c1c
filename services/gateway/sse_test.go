package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/gateway"
)

type sseEvent struct {
	id, event, data string
}

// stream opens the project's event stream and returns its events and
// heartbeats on channels; cancel closes it.
func (h *harness) stream(ctx context.Context, lastID string) (<-chan sseEvent, <-chan struct{}) {
	h.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+"/v1/projects/demo/events", nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := h.srv.Client().Do(req) //nolint:bodyclose // closed by the reading goroutine
	if err != nil {
		h.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		h.t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	evs := make(chan sseEvent, 100)
	beats := make(chan struct{}, 100)
	go func() {
		defer func() { _ = resp.Body.Close() }()
		defer close(evs)
		sc := bufio.NewScanner(resp.Body)
		var cur sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.data != "" {
					evs <- cur
				}
				cur = sseEvent{}
			case line == ": heartbeat":
				select {
				case beats <- struct{}{}:
				default:
				}
			case strings.HasPrefix(line, "id: "):
				cur.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				cur.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				cur.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return evs, beats
}

func next(t *testing.T, evs <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-evs:
		if !ok {
			t.Fatal("stream closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return sseEvent{}
}

func TestEventStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(d *gateway.Deps) { d.Config.SSEHeartbeat = 50 * time.Millisecond })
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	refresh := func() {
		t.Helper()
		if st, _ := h.call("POST", "/v1/projects/demo/warehouses/app/refresh", nil, nil); st != http.StatusAccepted {
			t.Fatalf("refresh: %d", st)
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	evs, beats := h.stream(ctx, "")
	select {
	case <-beats:
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat")
	}
	// Events of another project do not show.
	if _, err := h.env.Bus.Publish(t.Context(), "elsewhere", events.Ref{Kind: model.KindWarehouse, Name: "x"}, events.WarehouseRefreshRequested{Warehouse: "x"}); err != nil {
		t.Fatal(err)
	}
	refresh()
	refresh()
	first, second := next(t, evs), next(t, evs)
	for _, ev := range []sseEvent{first, second} {
		var env events.Envelope
		if err := json.Unmarshal([]byte(ev.data), &env); err != nil || ev.event != string(events.TypeWarehouseRefreshRequested) || env.Type != events.TypeWarehouseRefreshRequested || env.Project != "demo" || ev.id == "" {
			t.Fatalf("event: %+v (%v)", ev, err)
		}
	}
	if first.id >= second.id && len(first.id) == len(second.id) {
		t.Errorf("ids not increasing: %s, %s", first.id, second.id)
	}
	cancel()

	// While disconnected, two more; resuming after the first sees the
	// second and the two new ones, once each.
	refresh()
	refresh()
	evs, _ = h.stream(t.Context(), first.id)
	var ids []string
	for range 3 {
		ids = append(ids, next(t, evs).id)
	}
	if ids[0] != second.id {
		t.Errorf("resumed at %s, want %s", ids[0], second.id)
	}
	if ids[1] == ids[0] || ids[2] == ids[1] {
		t.Errorf("repeated events: %v", ids)
	}
	select {
	case ev := <-evs:
		t.Errorf("unexpected extra event %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
}
