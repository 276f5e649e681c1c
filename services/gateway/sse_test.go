package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/telemetry"
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

// TestEventStreamShutdown: when the gateway stops, an open stream gets a
// last "shutdown" event and is closed, so Run returns without waiting for
// the client (with a shutdown timeout far longer than the test waits, an
// open stream would make Run fail with a deadline error).
func TestEventStreamShutdown(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- gateway.Run(ctx, gateway.Deps{
			Config: gateway.Config{
				Common:     service.Common{DataDir: t.TempDir(), StreamConfig: events.DefaultStreamConfig(), LogConfig: telemetry.LogConfig{Level: "info", Format: "text"}},
				HTTPAddr:   ln.Addr().String(),
				AdminToken: token, MaxBodyBytes: 1 << 20, ShutdownTimeout: 10 * time.Minute, SSEHeartbeat: time.Hour,
			},
			Env:      h.env,
			Listener: ln,
		})
	}()
	var resp *http.Response
	for i := 0; ; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/projects/demo/events", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err = http.DefaultClient.Do(req)
		if err == nil && resp.StatusCode == http.StatusOK {
			break
		}
		if i > 500 {
			t.Fatalf("open stream: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), ": stream of project demo") {
		t.Fatalf("first line: %q", sc.Text())
	}
	cancel()
	read := make(chan []string, 1)
	go func() {
		var lines []string
		for sc.Scan() { // until the server closes the stream
			if sc.Text() != "" {
				lines = append(lines, sc.Text())
			}
		}
		read <- lines
	}()
	var lines []string
	select {
	case lines = <-read:
	case <-time.After(time.Minute):
		_ = resp.Body.Close()
		t.Fatal("the stream was not closed at shutdown")
	}
	if len(lines) != 3 || lines[0] != "event: shutdown" || lines[1] != "retry: 2000" || !strings.Contains(lines[2], `"type":"shutdown"`) {
		t.Errorf("last event: %q", lines)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return")
	}
}
