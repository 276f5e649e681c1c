package gateway_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
)

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	var calls atomic.Int32
	c, err := events.ConsumeEnvelopes(t.Context(), h.env.Bus, events.ConsumerSpec{
		Durable:    "test-deadletters",
		Filters:    []string{events.Filter("demo", events.TypeWarehouseRefreshRequested, "")},
		MaxDeliver: 1,
		DeliverAll: true,
	}, func(context.Context, events.Envelope) error {
		if calls.Add(1) <= 2 {
			return events.Permanent(errors.New("boom"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	for range 2 {
		if st, _ := h.call("POST", "/v1/projects/demo/warehouses/app/refresh", nil, nil); st != http.StatusAccepted {
			t.Fatalf("refresh: %d", st)
		}
		time.Sleep(20 * time.Millisecond) // two distinct times
	}
	type list struct {
		Items []events.DeadLetter `json:"items"`
	}
	var l list
	deadline := time.Now().Add(10 * time.Second)
	for len(l.Items) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if st := h.get("/v1/deadletters", &l); st != http.StatusOK {
			t.Fatalf("list: %d", st)
		}
	}
	if len(l.Items) != 2 {
		t.Fatalf("dead letters: %+v", l.Items)
	}
	// Newest first, like every list; ?sort=oldest reverses it.
	if !l.Items[0].Time.After(l.Items[1].Time) {
		t.Errorf("not newest first: %s, %s", l.Items[0].Time, l.Items[1].Time)
	}
	var oldest list
	if h.get("/v1/deadletters?sort=oldest", &oldest); len(oldest.Items) != 2 || oldest.Items[0].ID != l.Items[1].ID {
		t.Errorf("oldest first: %+v", oldest.Items)
	}
	var page list
	if h.get("/v1/deadletters?limit=1", &page); len(page.Items) != 1 || page.Items[0].ID != l.Items[0].ID {
		t.Errorf("first page: %+v", page.Items)
	}
	dl := l.Items[1]
	if dl.Type != events.TypeWarehouseRefreshRequested || dl.Error == "" || dl.Deliveries != 1 || dl.Project != "demo" {
		t.Errorf("dead letter: %+v", dl)
	}
	if h.get("/v1/deadletters?project=other", &l); len(l.Items) != 0 {
		t.Errorf("dead letters of another project: %d", len(l.Items))
	}
	if st, _ := h.call("POST", "/v1/deadletters/nope.1/replay", nil, nil); st != http.StatusNotFound {
		t.Errorf("replay unknown: %d", st)
	}
	if st, e := h.call("POST", "/v1/deadletters/"+dl.ID+"/replay", nil, nil); st != http.StatusAccepted {
		t.Fatalf("replay: %d %+v", st, e)
	}
	for calls.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if calls.Load() != 3 {
		t.Errorf("handler calls after replay: %d, want 3", calls.Load())
	}
	if h.get("/v1/deadletters", &l); len(l.Items) != 1 || l.Items[0].ID == dl.ID {
		t.Errorf("dead letters after replay: %+v", l.Items)
	}
}
