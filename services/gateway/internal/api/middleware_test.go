package api

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestObservePanic(t *testing.T) {
	t.Parallel()
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("kaboom") })
	h := observe(mux, m, logger)

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/boom", nil)
	req.Header.Set("Authorization", "Bearer do-not-log")
	h.ServeHTTP(rec, req)
	var e apiError
	if rec.Code != http.StatusInternalServerError || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Code != codeInternal {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if n := strings.Count(logs.String(), "kaboom"); n != 1 {
		t.Errorf("panic logged %d times: %s", n, logs.String())
	}
	if strings.Contains(logs.String(), "do-not-log") {
		t.Errorf("log holds the token: %s", logs.String())
	}
	if !strings.Contains(logs.String(), `route="GET /boom"`) || !strings.Contains(logs.String(), "status=500") {
		t.Errorf("request line missing: %s", logs.String())
	}
}
