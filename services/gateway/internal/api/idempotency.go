package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// HeaderIdempotencyKey makes a POST that creates something safe to retry:
// the same key (from the same caller, on the same route) within
// state.IdempotencyTTL returns the first answer instead of acting again.
const HeaderIdempotencyKey = "Idempotency-Key"

// headerReplayed marks an answer given again for a repeated key.
const headerReplayed = "Idempotent-Replayed"

// While a request with a key runs, its gateway moves the key's Started on
// every idempotencyBeat; a repeat takes over once Started is
// idempotencyPending old (the first request's gateway died mid-request),
// so a retry after a crash waits seconds, not minutes. A takeover while
// the first still runs (its beats failed) creates nothing twice: what a
// request creates is named from its key.
const (
	idempotencyBeat    = 3 * time.Second
	idempotencyPending = 10 * time.Second
)

// idempotencyRecord is what the caravan-idempotency bucket keeps per key.
type idempotencyRecord struct {
	// Request is the SHA-256 of the body: a repeat with another body is
	// refused.
	Request string `json:"request"`
	// Since is when the first attempt came: the IDs derive from it.
	Since time.Time `json:"since"`
	// Started is when the attempt that runs now started.
	Started time.Time `json:"started"`
	Done    bool      `json:"done,omitempty"`
	Status  int       `json:"status,omitempty"`
	Type    string    `json:"contentType,omitempty"`
	Body    []byte    `json:"body,omitempty"`
}

type idempotencyKey struct{}

// idempotent is the middleware of the routes that create something. A
// request without Idempotency-Key passes through. With one, the first
// request runs and its answer (any status below 500) is kept for 24 h; a
// repeat gets that answer again (Idempotent-Replayed: true), 409 while the
// first still runs, 422 when its body differs. A 5xx answer is not kept:
// the client may try again. Handlers derive deterministic IDs from the key
// (idempotencyID), so a repeat after a gateway died mid-request still
// creates nothing twice.
func (s *server) idempotent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(HeaderIdempotencyKey)
		if key == "" {
			next.ServeHTTP(w, r)
			return
		}
		if len(key) > 255 {
			invalid(w, HeaderIdempotencyKey, "must be at most 255 characters")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("the body is larger than %d bytes", tooLarge.Limit))
			return
		case err != nil:
			writeError(w, http.StatusBadRequest, codeInvalid, "cannot read the body")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		p, _ := auth.FromContext(r.Context())
		// The query is part of the request (?dryRun=true must never
		// answer for the real promotion, nor the other way round).
		target := r.URL.Path
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		id := sha256.Sum256([]byte(p.Name + "\x00" + r.Method + " " + target + "\x00" + key))
		k := hex.EncodeToString(id[:])
		sum := sha256.Sum256(body)
		digest := hex.EncodeToString(sum[:])
		ctx := r.Context()
		kv := s.store.KV(state.Idempotency)
		now := s.now().UTC()
		first := idempotencyRecord{Request: digest, Since: now, Started: now}
		rec, _, err := state.Update(ctx, kv, k, func(cur idempotencyRecord, exists bool) (idempotencyRecord, error) {
			switch {
			case !exists:
				return first, nil
			case cur.Request != digest:
				return cur, errKeyReused
			case cur.Done:
				return cur, errReplay
			case now.Sub(cur.Started) < s.idemPending:
				return cur, errInProgress
			}
			// The first request's gateway went away: take over, keeping
			// the time the IDs derive from.
			cur.Started = now
			return cur, nil
		})
		switch {
		case errors.Is(err, errKeyReused):
			writeError(w, http.StatusUnprocessableEntity, codeInvalid, "Idempotency-Key was used with another request body")
			return
		case errors.Is(err, errInProgress):
			writeError(w, http.StatusConflict, codeConflict, "a request with this Idempotency-Key is still running; try again shortly")
			return
		case errors.Is(err, errReplay):
			if rec.Type != "" {
				w.Header().Set("Content-Type", rec.Type)
			}
			w.Header().Set(headerReplayed, "true")
			w.WriteHeader(rec.Status)
			_, _ = w.Write(rec.Body)
			return
		case err != nil:
			s.internal(w, r, err)
			return
		}
		seed := sha256.Sum256([]byte(k + "\x00" + rec.Since.Truncate(time.Millisecond).Format(time.RFC3339Nano)))
		r = r.WithContext(context.WithValue(ctx, idempotencyKey{}, idempotency{key: k, since: rec.Since, seed: seed}))
		var answer bytes.Buffer
		cw := &capture{ResponseWriter: w, copy: &answer}
		beatCtx, stopBeats := context.WithCancel(context.WithoutCancel(ctx))
		beating := make(chan struct{})
		go func() {
			defer close(beating)
			s.beat(beatCtx, kv, k, rec.Started)
		}()
		next.ServeHTTP(cw, r)
		stopBeats()
		<-beating
		// Keep the answer even when the client went away meanwhile.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if cw.status >= 500 || cw.status == 0 {
			_ = state.Delete(sctx, kv, k, 0)
			return
		}
		if _, _, err := state.Update(sctx, kv, k, func(cur idempotencyRecord, _ bool) (idempotencyRecord, error) {
			cur.Request, cur.Done, cur.Status, cur.Type, cur.Body = digest, true, cw.status, cw.Header().Get("Content-Type"), answer.Bytes()
			if cur.Since.IsZero() {
				cur.Since = rec.Since
			}
			return cur, nil
		}); err != nil {
			s.logger.Warn("keep the answer of an Idempotency-Key", "route", r.Pattern, "err", err)
		}
	})
}

// beat moves the Started of key k on every idempotencyBeat while the
// attempt that started at started holds it, until ctx ends or another
// attempt took the key over.
func (s *server) beat(ctx context.Context, kv state.KV, k string, started time.Time) {
	t := time.NewTicker(s.idemBeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.now().UTC()
		_, _, err := state.Update(ctx, kv, k, func(cur idempotencyRecord, exists bool) (idempotencyRecord, error) {
			if !exists || cur.Done || !cur.Started.Equal(started) {
				return cur, errTakenOver
			}
			cur.Started = now
			return cur, nil
		})
		switch {
		case err == nil:
			started = now
		case errors.Is(err, errTakenOver):
			return
		case ctx.Err() == nil:
			s.logger.Warn("keep an Idempotency-Key held", "err", err)
		}
	}
}

var (
	errTakenOver  = errors.New("idempotency key taken over")
	errKeyReused  = errors.New("idempotency key reused with another body")
	errInProgress = errors.New("idempotency key in progress")
	errReplay     = errors.New("idempotency key answered")
)

// idempotency is what a handler may derive IDs from.
type idempotency struct {
	key   string
	since time.Time
	seed  [32]byte
}

// idempotencyID returns an ID for what the request creates: a new ULID
// without Idempotency-Key; with one, the same ULID on every repeat of the
// request (derived from the key and the time of its first attempt).
func idempotencyID(r *http.Request, newID func() string) string {
	v, ok := r.Context().Value(idempotencyKey{}).(idempotency)
	if !ok {
		return newID()
	}
	id, err := ulid.New(ulid.Timestamp(v.since), bytes.NewReader(v.seed[:]))
	if err != nil {
		return newID()
	}
	return id.String()
}

// idempotentEventID returns a deterministic event ID for the request's
// event (JetStream drops a repeat; the verifier names a re-verification
// after it), or "" without Idempotency-Key.
func idempotentEventID(r *http.Request) string {
	if _, ok := r.Context().Value(idempotencyKey{}).(idempotency); !ok {
		return ""
	}
	return idempotencyID(r, func() string { return "" })
}

// capture remembers the status of the answer it passes on and copies its
// body to copy: the stored answer of an idempotent call, the hash of an
// audited one.
type capture struct {
	http.ResponseWriter
	status int
	copy   io.Writer
}

func (c *capture) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	_, _ = c.copy.Write(b)
	return c.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (c *capture) Unwrap() http.ResponseWriter { return c.ResponseWriter }
