package steps

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/model"
)

// An HTTP service answering as the tests need: /deploy echoes what it got,
// /status answers with the state it holds, /yaml and /text in other
// content types.
func httpService(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/deploy":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"method":"`+r.Method+`","body":`+quoteJSON(string(b))+`,"env":"`+r.URL.Query().Get("env")+`","auth":"`+r.Header.Get("Authorization")+`"}`)
		case "/status":
			w.Header().Set("Content-Type", "application/json")
			if r.URL.Query().Get("state") == "broken" {
				w.WriteHeader(http.StatusInternalServerError)
				_, _ = io.WriteString(w, `{"state":"broken","reason":"disk full"}`)
				return
			}
			_, _ = io.WriteString(w, `{"state":"`+r.URL.Query().Get("state")+`"}`)
		case "/yaml":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "release:\n  version: 1.2.3\n")
		case "/file":
			_, _ = io.WriteString(w, "artifact for "+r.URL.Query().Get("v"))
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func quoteJSON(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func TestHTTPStep(t *testing.T) {
	t.Parallel()
	srv := httpService(t)
	tests := []struct {
		name       string
		config     map[string]any
		wantStatus model.PromotionStepStatus
		wantOut    map[string]any
		wantMsg    string
		wantPoll   time.Duration
		wantErr    string
	}{
		{
			name: "a body from a file, query parameters and headers",
			config: map[string]any{"method": "POST", "url": srv.URL + "/deploy", "bodyFromFile": "payload.json",
				"queryParams": []any{map[string]any{"name": "env", "value": "prod"}},
				"headers":     []any{map[string]any{"name": "Authorization", "value": "Bearer t0k"}},
				"outputs": []any{map[string]any{"name": "body", "fromExpression": "response.body.body"},
					map[string]any{"name": "env", "fromExpression": "response.body.env"},
					map[string]any{"name": "auth", "fromExpression": "response.body.auth"}}},
			wantOut: map[string]any{"body": "{\"app\": \"web\"}\n", "env": "prod", "auth": "Bearer t0k"},
		},
		{
			name:    "body and bodyFromFile",
			config:  map[string]any{"url": srv.URL + "/deploy", "body": "x", "bodyFromFile": "payload.json"},
			wantErr: "mutually exclusive",
		},
		{
			name: "neither expression matches yet: polled again after pollInterval",
			config: map[string]any{"url": srv.URL + "/status?state=syncing", "pollInterval": "45s",
				"successExpression": "response.body.state == 'done'", "failureExpression": "response.status >= 500"},
			wantStatus: StatusRunning, wantPoll: 45 * time.Second,
		},
		{
			name: "the failure expression, its message from errorExpression",
			config: map[string]any{"url": srv.URL + "/status?state=broken",
				"successExpression": "response.body.state == 'done'", "failureExpression": "response.status >= 500",
				"errorExpression": "'service says: ' + response.body.reason"},
			wantStatus: model.PromotionStepStatusFailed, wantMsg: "service says: disk full",
		},
		{
			name: "responseContentType parses a body the server calls text",
			config: map[string]any{"url": srv.URL + "/yaml", "responseContentType": "application/yaml",
				"outputs": []any{map[string]any{"name": "v", "fromExpression": "response.body.release.version"}}},
			wantOut: map[string]any{"v": "1.2.3"},
		},
		{
			name: "text/plain keeps it text",
			config: map[string]any{"url": srv.URL + "/yaml", "responseContentType": "text/plain",
				"outputs": []any{map[string]any{"name": "v", "fromExpression": "response.body"}}},
			wantOut: map[string]any{"v": "release:\n  version: 1.2.3\n"},
		},
		{
			name:    "a proxy is a documented difference",
			config:  map[string]any{"url": srv.URL + "/deploy", "proxy": "http://proxy.example:3128"},
			wantErr: "not supported by Caravan",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newContext(t, tt.config)
			sc.Egress = allowLoopback(t, egress.Config{})
			write(t, sc, "payload.json", "{\"app\": \"web\"}\n")
			res, err := run(t, "http", sc)
			if tt.wantErr != "" {
				if err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tt.wantStatus || res.PollAfter != tt.wantPoll || (tt.wantMsg != "" && res.Message != tt.wantMsg) {
				t.Fatalf("result %+v", res)
			}
			for k, v := range tt.wantOut {
				if res.Output[k] != v {
					t.Errorf("output %s = %#v, want %#v", k, res.Output[k], v)
				}
			}
		})
	}
}

func TestHTTPDownload(t *testing.T) {
	t.Parallel()
	srv := httpService(t)
	sc := newContext(t, map[string]any{"url": srv.URL + "/file", "outPath": "dl/artifact.txt",
		"queryParams": []any{map[string]any{"name": "v", "value": "1.2"}}})
	sc.Egress = allowLoopback(t, egress.Config{})
	if _, err := run(t, "http-download", sc); err != nil {
		t.Fatal(err)
	}
	if got := files(t, sc, "dl")["artifact.txt"]; got != "artifact for 1.2" {
		t.Fatalf("downloaded %q", got)
	}
	if _, err := run(t, "http-download", sc); err == nil || !IsTerminal(err) {
		t.Fatalf("overwrote without allowOverwrite: %v", err)
	}
	sc.Config["allowOverwrite"] = true
	if _, err := run(t, "http-download", sc); err != nil {
		t.Fatal(err)
	}
	sc.Config = map[string]any{"url": srv.URL + "/slow", "outPath": "dl/slow.txt", "timeout": "100ms"}
	if _, err := run(t, "http-download", sc); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("timeout: %v", err)
	}
}
