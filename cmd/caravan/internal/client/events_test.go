package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caravan-cd/caravan/pkg/events"
)

// TestStream reads a stream written as the SSE specification allows:
// comments, CRLF line ends, data split over lines, events without data.
func TestStream(t *testing.T) {
	t.Parallel()
	var lastEventID string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastEventID = r.Header.Get("Last-Event-ID")
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"code":"unauthorized","message":"missing or invalid bearer token"}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, ": heartbeat\n\n"+
			"event: PromotionStarted\r\nid: 7\r\ndata: {\"id\":\"a\",\"type\":\"PromotionStarted\",\r\ndata: \"subject\":{\"kind\":\"Promotion\",\"name\":\"p\"},\"payload\":{\"promotion\":\"p\"}}\r\n\r\n"+
			"id: 8\n\n"+
			"data: {\"id\":\"b\",\"type\":\"FreightDiscovered\",\"subject\":{\"kind\":\"Freight\",\"name\":\"f\"},\"payload\":{}}\n\n"+
			"event: shutdown\nretry: 2000\ndata: {\"type\":\"shutdown\",\"message\":\"bye\"}\n\n")
	}))
	defer srv.Close()

	c, err := New(srv.URL, "tok")
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Events(context.Background(), "demo", "6")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if lastEventID != "6" {
		t.Errorf("Last-Event-ID %q", lastEventID)
	}
	ev, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	var ps events.PromotionStarted
	if err := ev.Decode(&ps); err != nil || ps.Promotion != "p" {
		t.Errorf("payload: %+v, %v", ps, err)
	}
	if ev.Type != "PromotionStarted" || ev.ID != "7" || ev.Envelope.Subject.Name != "p" {
		t.Errorf("event 1: %+v", ev)
	}
	ev, err = s.Next()
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "FreightDiscovered" || s.LastID() != "8" {
		t.Errorf("event 2: %+v, last id %q", ev, s.LastID())
	}
	// The gateway's last event when it shuts down.
	if _, err := s.Next(); !errors.Is(err, ErrShutdown) || s.LastID() != "8" {
		t.Errorf("shutdown: %v, last id %q", err, s.LastID())
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("end: %v", err)
	}

	bad, _ := New(srv.URL, "wrong")
	_, err = bad.Events(context.Background(), "demo", "")
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized || apiErr.Code != "unauthorized" {
		t.Errorf("unauthorized: %v", err)
	}
}
