package api

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// TestIdempotencyKeyHeldWhileRunning: a request with an Idempotency-Key
// that runs for many times idempotencyPending keeps its key (its beats
// move Started on), so a repeat meanwhile gets 409 and never runs the
// handler again; once the first answers, a repeat gets its answer. A key
// whose holder stopped beating (its gateway died) is taken over once
// idempotencyPending has passed. Short beats stand for the real ones.
func TestIdempotencyKeyHeldWhileRunning(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, _ := openStore(t, testenv.NATS(t))
	s := &server{store: store, logger: slog.New(slog.DiscardHandler), maxBody: 1 << 20, now: time.Now,
		idemBeat: 50 * time.Millisecond, idemPending: 300 * time.Millisecond}
	release := make(chan struct{})
	var runs atomic.Int32
	srv := httptest.NewServer(s.idempotent(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			<-release
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "made")
	})))
	defer srv.Close()
	post := func(key string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/things", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(HeaderIdempotencyKey, key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	type answer struct {
		status int
		body   string
	}
	first := make(chan answer, 1)
	go func() {
		st, b := post("k")
		first <- answer{st, b}
	}()
	for runs.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(4 * s.idemPending)
	if st, b := post("k"); st != http.StatusConflict {
		t.Errorf("repeat while the first runs: %d %s, want 409", st, b)
	}
	close(release)
	if a := <-first; a.status != http.StatusCreated || a.body != "made" {
		t.Errorf("first: %d %s", a.status, a.body)
	}
	if st, b := post("k"); st != http.StatusCreated || b != "made" {
		t.Errorf("repeat after the answer: %d %s", st, b)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}

	// A holder that no longer beats: its record stays pending.
	kv := store.KV(state.Idempotency)
	keys, err := state.Keys(ctx, kv, ">")
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %v %v", keys, err)
	}
	if _, _, err := state.Update(ctx, kv, keys[0], func(rec idempotencyRecord, _ bool) (idempotencyRecord, error) {
		rec.Done, rec.Status, rec.Body, rec.Started = false, 0, nil, time.Now().UTC()
		return rec, nil
	}); err != nil {
		t.Fatal(err)
	}
	if st, b := post("k"); st != http.StatusConflict {
		t.Errorf("repeat right after its holder stopped: %d %s, want 409", st, b)
	}
	time.Sleep(s.idemPending + 100*time.Millisecond)
	if st, b := post("k"); st != http.StatusCreated {
		t.Errorf("repeat once the holder's beats stopped: %d %s, want 201", st, b)
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2 (once more, taking over)", n)
	}
}
