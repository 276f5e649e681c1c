package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// doKey sends a JSON action as the admin with an Idempotency-Key.
func (h *harness) doKey(method, path, key string, body any) (int, []byte, http.Header) {
	h.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		h.t.Fatal(err)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, bytes.NewReader(b))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, out, resp.Header
}

// The same Idempotency-Key twice makes one promotion and answers the same;
// the key with another body is refused; without a key every request acts.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.discovered("1.0.0")
	var f model.Freight
	if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": map[string]string{"kind": "Warehouse", "name": "app"}, "images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": "1.0.0"}}}, &f); st != http.StatusCreated {
		t.Fatalf("create freight: %d %+v", st, e)
	}
	wait := collectEvents(t, h.nc)
	const path = "/v1/projects/demo/stages/dev/promotions"
	body := map[string]string{"freight": f.Name}
	st1, b1, _ := h.doKey("POST", path, "retry-1", body)
	st2, b2, hdr2 := h.doKey("POST", path, "retry-1", body)
	if st1 != http.StatusCreated || st2 != http.StatusCreated || !bytes.Equal(b1, b2) || hdr2.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("first %d %s, repeat %d %s (replayed %q)", st1, b1, st2, b2, hdr2.Get("Idempotent-Replayed"))
	}
	items, _, err := state.List[model.Promotion](context.Background(), h.env.Store.KV(state.Promotions), state.Prefix("demo"), 0, "")
	if err != nil || len(items) != 1 {
		t.Fatalf("%d promotions stored, want 1 (%v)", len(items), err)
	}
	if evs := wait(1); evs[0].Type != events.TypePromotionRequested {
		t.Fatalf("event %s", evs[0].Type)
	}
	// The key with another body is refused; another key acts.
	if st, b, _ := h.doKey("POST", path, "retry-1", map[string]string{"warehouse": "app"}); st != http.StatusUnprocessableEntity {
		t.Fatalf("reused key: %d %s", st, b)
	}
	if st, b, _ := h.doKey("POST", path, "retry-2", body); st != http.StatusCreated || bytes.Equal(b, b1) {
		t.Fatalf("another key: %d %s", st, b)
	}
	wait(1)

	// Refresh and verify: one event per key.
	for range 2 {
		if st, b, _ := h.doKey("POST", "/v1/projects/demo/warehouses/app/refresh", "refresh-1", nil); st != http.StatusAccepted {
			t.Fatalf("refresh: %d %s", st, b)
		}
	}
	if evs := wait(1); evs[0].Type != events.TypeWarehouseRefreshRequested {
		t.Fatalf("event %s", evs[0].Type)
	}
	// A key is per route: the same key elsewhere acts.
	if st, b, _ := h.doKey("POST", "/v1/projects/demo/freight/"+f.Name+"/approve", "refresh-1", map[string]string{"stage": "dev"}); st != http.StatusOK {
		t.Fatalf("approve: %d %s", st, b)
	}
	wait(1)
}

// A request whose gateway died before it kept its answer is repeated
// safely: the promotion's name comes from the key, so the repeat finds
// the promotion the first attempt stored instead of making a second.
func TestIdempotencyKeyAfterLostAnswer(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.discovered("1.0.0")
	var f model.Freight
	if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": map[string]string{"kind": "Warehouse", "name": "app"}, "images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": "1.0.0"}}}, &f); st != http.StatusCreated {
		t.Fatalf("create freight: %d %+v", st, e)
	}
	const path = "/v1/projects/demo/stages/dev/promotions"
	st, b1, _ := h.doKey("POST", path, "k", map[string]string{"freight": f.Name})
	if st != http.StatusCreated {
		t.Fatalf("%d %s", st, b1)
	}
	// The answer was never kept (the gateway died): the record says the
	// request is pending, and it is older than a request may run.
	kv := h.env.Store.KV(state.Idempotency)
	keys, err := state.Keys(context.Background(), kv, ">")
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v %v", keys, err)
	}
	if _, _, err := state.Update(context.Background(), kv, keys[0], func(rec map[string]any, _ bool) (map[string]any, error) {
		delete(rec, "done")
		delete(rec, "body")
		delete(rec, "status")
		rec["started"] = "2000-01-01T00:00:00Z"
		return rec, nil
	}); err != nil {
		t.Fatal(err)
	}
	st, b2, _ := h.doKey("POST", path, "k", map[string]string{"freight": f.Name})
	if st != http.StatusCreated {
		t.Fatalf("repeat: %d %s", st, b2)
	}
	var p1, p2 model.Promotion
	_ = json.Unmarshal(b1, &p1)
	_ = json.Unmarshal(b2, &p2)
	items, _, _ := state.List[model.Promotion](context.Background(), h.env.Store.KV(state.Promotions), state.Prefix("demo"), 0, "")
	if len(items) != 1 {
		t.Fatalf("%d promotions after the repeat, want 1: first %s, repeat %s", len(items), p1.Name, p2.Name)
	}
}
