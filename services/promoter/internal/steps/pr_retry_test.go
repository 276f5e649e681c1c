package steps

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
)

// retryTransport sends again what is rate limited (whatever the method)
// and what failed on the host's side or on the way (GET, HEAD, OPTIONS,
// DELETE only), at most apiAttempts times, after the wait the host asks
// for; a wait beyond maxRetryWait or the request's deadline is left to the
// engine, and a canceled context ends a wait. The answers are those of RFC
// 9110 (503 and Retry-After), RFC 6585 (429), GitHub's rate limits (403 or
// 429 with X-RateLimit-Remaining: 0 and X-RateLimit-Reset,
// https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api)
// and GitLab's (RateLimit-Reset,
// https://docs.gitlab.com/administration/settings/user_and_ip_rate_limits/#response-headers).
func TestRetryTransport(t *testing.T) {
	t.Parallel()
	type answer struct {
		status int // 0: the connection is dropped without an answer
		header map[string]string
	}
	ok := answer{status: http.StatusOK}
	now := func(status int) answer { return answer{status, map[string]string{"Retry-After": "0"}} }
	inAnHour := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	past := strconv.FormatInt(time.Now().Add(-time.Minute).Unix(), 10)
	httpDate := time.Now().Add(-time.Minute).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		name     string
		method   string
		answers  []answer
		wantHits int
		want     int
		deadline time.Duration // of the request's context; 0: none
	}{
		{"GET after two 500s", http.MethodGet, []answer{now(500), now(500), ok}, 3, 200, 0},
		{"GET 502 with backoff", http.MethodGet, []answer{{status: 502}, ok}, 2, 200, 0},
		{"GET gives up after apiAttempts", http.MethodGet, []answer{now(503), now(503), now(503), ok}, 3, 503, 0},
		{"GET after a dropped connection", http.MethodGet, []answer{{}, ok}, 2, 200, 0},
		{"a POST is not sent again after a dropped connection", http.MethodPost, []answer{{}, ok}, 1, 0, 0},
		{"DELETE is idempotent", http.MethodDelete, []answer{now(504), ok}, 2, 200, 0},
		{"a PUT (a merge) answered 5xx may have been done", http.MethodPut, []answer{now(502), ok}, 1, 502, 0},
		{"Retry-After as an HTTP date", http.MethodGet, []answer{{429, map[string]string{"Retry-After": httpDate}}, ok}, 2, 200, 0},
		{"GitLab's RateLimit-Reset", http.MethodGet, []answer{{429, map[string]string{"RateLimit-Reset": past}}, ok}, 2, 200, 0},
		{"a rate limit reset in an hour is left to the engine", http.MethodGet, []answer{{429, map[string]string{"X-RateLimit-Reset": inAnHour}}, ok}, 1, 429, 0},
		{"a reset time is read at a rate limit only", http.MethodGet, []answer{{503, map[string]string{"X-RateLimit-Reset": inAnHour}}, ok}, 2, 200, 0},
		{"a wait beyond the deadline", http.MethodGet, []answer{{503, map[string]string{"Retry-After": "5"}}, ok}, 1, 503, 2 * time.Second},
		{"GitHub rate limit", http.MethodGet, []answer{{403, map[string]string{"X-RateLimit-Remaining": "0", "Retry-After": "0"}}, ok}, 2, 200, 0},
		{"a plain 403 is an answer", http.MethodGet, []answer{{status: 403}, ok}, 1, 403, 0},
		{"POST rate limited", http.MethodPost, []answer{now(429), ok}, 2, 200, 0},
		{"POST 503 may have been done", http.MethodPost, []answer{now(503), ok}, 1, 503, 0},
		{"PATCH 500 may have been done", http.MethodPatch, []answer{now(500), ok}, 1, 500, 0},
		{"a wait too long for the step", http.MethodGet, []answer{{503, map[string]string{"Retry-After": "3600"}}, ok}, 1, 503, 0},
		{"404 is an answer", http.MethodGet, []answer{{status: 404}, ok}, 1, 404, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var hits int
			var bodies []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				b, _ := io.ReadAll(r.Body)
				bodies = append(bodies, string(b))
				a := tc.answers[hits]
				hits++
				if a.status == 0 {
					conn, _, err := w.(http.Hijacker).Hijack()
					if err == nil {
						_ = conn.Close()
					}
					return
				}
				for k, v := range a.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(a.status)
			}))
			t.Cleanup(srv.Close)
			c := retrying(allowLoopback(t, egress.Config{}).Client(false))
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			req, err := http.NewRequestWithContext(ctx, tc.method, srv.URL, strings.NewReader(`{"a":1}`))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if tc.want == 0 {
				if err == nil || hits != tc.wantHits {
					t.Fatalf("err %v after %d sends, want an error after %d", err, hits, tc.wantHits)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want || hits != tc.wantHits {
				t.Fatalf("status %d after %d sends, want %d after %d", resp.StatusCode, hits, tc.want, tc.wantHits)
			}
			for _, b := range bodies {
				if b != `{"a":1}` {
					t.Fatalf("a retry sent body %q", b)
				}
			}
		})
	}

	t.Run("a canceled context ends the wait", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "9")
			w.WriteHeader(http.StatusServiceUnavailable)
			cancel()
		}))
		t.Cleanup(srv.Close)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := retrying(allowLoopback(t, egress.Config{}).Client(false)).Do(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
	})

	t.Run("an address the egress policy refuses is not tried again", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		t.Cleanup(srv.Close)
		p, err := egress.New(egress.Config{})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		resp, err := retrying(p.Client(false)).Do(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		if !errors.Is(err, egress.ErrRefused) {
			t.Fatalf("err %v, want the egress refusal", err)
		}
	})
}

// On every host, an answer refusing the credential fails the step for
// good; one failing on the host's side after the retries, or a rate limit
// longer than a step waits, fails it for the engine to retry later. No
// error carries the token or the Authorization header, even when the host
// echoes them back (the error bodies are GitHub's, GitLab's and Gitea's
// {"message"}, https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api,
// Bitbucket's {"error": {"message"}},
// https://developer.atlassian.com/cloud/bitbucket/rest/intro/#standardized-error-responses,
// and Azure DevOps' {"message", "typeKey"} as its SDK decodes them). An
// address the egress policy refuses fails the step for good, and nothing
// reaches the host.
func TestPullRequestHostErrors(t *testing.T) {
	t.Parallel()
	const token = "s3cr3t-t0ken"
	for _, provider := range prProviders {
		for _, tc := range []struct {
			status     int
			retryAfter string
			terminal   bool
			hits       int
		}{
			{http.StatusUnauthorized, "0", true, 1},
			{http.StatusInternalServerError, "0", false, apiAttempts},
			{http.StatusTooManyRequests, "3600", false, 1},
		} {
			t.Run(fmt.Sprintf("%s %d", provider, tc.status), func(t *testing.T) {
				t.Parallel()
				var mu sync.Mutex
				var hits int
				var sent string
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Method == http.MethodOptions && r.URL.Path == "/acme/_apis" {
						azureLocations(w)
						return
					}
					mu.Lock()
					hits++
					sent = r.Header.Get("Authorization") + r.Header.Get("PRIVATE-TOKEN")
					mu.Unlock()
					echo := "rejected " + r.Header.Get("Authorization") + " (" + token + ")"
					w.Header().Set("Content-Type", "application/json")
					w.Header().Set("Retry-After", tc.retryAfter)
					w.WriteHeader(tc.status)
					switch provider {
					case "bitbucket":
						_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]any{"message": echo}})
					case "azure":
						_ = json.NewEncoder(w).Encode(map[string]any{"$id": "1", "message": echo, "typeKey": "UnauthorizedRequestException", "errorCode": 0})
					default:
						_ = json.NewEncoder(w).Encode(map[string]any{"message": echo})
					}
				}))
				t.Cleanup(srv.Close)
				sc := newContext(t, map[string]any{"repoURL": fakeRepoURL(srv, provider), "provider": provider, "prNumber": 1.0})
				sc.Egress = allowLoopback(t, egress.Config{})
				sc.Credentials = func(context.Context, string, string) (*gitmirror.Auth, error) {
					return &gitmirror.Auth{Username: "me", Password: token}, nil
				}
				_, err := run(t, "git-wait-for-pr", sc)
				if err == nil {
					t.Fatal("no error")
				}
				mu.Lock()
				defer mu.Unlock()
				if !strings.Contains(sent, token) && !strings.Contains(sent, base64.StdEncoding.EncodeToString([]byte(":"+token))) &&
					!strings.Contains(sent, base64.StdEncoding.EncodeToString([]byte("me:"+token))) {
					t.Fatalf("the token was not sent: %q", sent)
				}
				for _, secret := range []string{token, base64.StdEncoding.EncodeToString([]byte("me:" + token)), base64.StdEncoding.EncodeToString([]byte(":" + token))} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("the error carries a secret: %v", err)
					}
				}
				if !strings.Contains(err.Error(), fmt.Sprint(tc.status)) {
					t.Fatalf("the error does not name the status: %v", err)
				}
				if tc.status == http.StatusTooManyRequests && !strings.Contains(err.Error(), "rate limited") {
					t.Fatalf("the error does not say it is a rate limit: %v", err)
				}
				if IsTerminal(err) != tc.terminal || hits != tc.hits {
					t.Fatalf("terminal %v after %d requests (%v), want terminal %v after %d", IsTerminal(err), hits, err, tc.terminal, tc.hits)
				}
			})
		}
		t.Run(provider+" egress", func(t *testing.T) {
			t.Parallel()
			srv, hits := countingServer(t, http.NotFound)
			sc := newContext(t, map[string]any{"repoURL": fakeRepoURL(srv, provider), "provider": provider, "prNumber": 1.0})
			p, err := egress.New(egress.Config{})
			if err != nil {
				t.Fatal(err)
			}
			sc.Egress = p
			if _, err = run(t, "git-wait-for-pr", sc); !IsTerminal(err) || !errors.Is(err, egress.ErrRefused) || hits() != 0 {
				t.Fatalf("err %v after %d requests, want a terminal egress refusal and none", err, hits())
			}
		})
	}
}

// go-bitbucket drops the caller's context and follows a list's "next"
// link wherever it points: under it, a canceled step sends nothing and a
// next page on another host (Bitbucket's paging,
// https://developer.atlassian.com/cloud/bitbucket/rest/intro/#pagination)
// is refused before the credential goes there.
func TestBitbucketContextAndNextHost(t *testing.T) {
	t.Parallel()
	srv, hits := countingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"values": []any{map[string]any{"id": 1, "state": "OPEN",
			"source": map[string]any{"branch": map[string]any{"name": "other"}}, "destination": map[string]any{"branch": map[string]any{"name": "main"}}}},
			"next": "http://127.0.0.2:1/2.0/repositories/acme/app/pullrequests?page=2"})
	})
	sc := newContext(t, nil)
	sc.Egress = allowLoopback(t, egress.Config{})
	sc.Credentials = func(context.Context, string, string) (*gitmirror.Auth, error) {
		return &gitmirror.Auth{Password: "tok"}, nil
	}
	p, err := sc.prProvider(context.Background(), srv.URL+"/acme/app.git", "bitbucket")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.get(ctx, 1); !errors.Is(err, context.Canceled) || hits() != 0 {
		t.Fatalf("a canceled step: %v after %d requests", err, hits())
	}
	_, err = p.open(context.Background(), "caravan/promotion/p1", "main", nil, nil)
	if err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), "not on the API's host") || hits() != 1 {
		t.Fatalf("a next page elsewhere: %v after %d requests", err, hits())
	}
}

// A server whose resource locations (OPTIONS ORG/_apis) lack the Git pull
// requests resource is not an Azure DevOps organization the SDK can use:
// the step fails for good, saying so.
func TestAzureWithoutGitLocations(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			_ = json.NewEncoder(w).Encode(map[string]any{"count": 0, "value": []any{}})
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	sc := newContext(t, map[string]any{"repoURL": fakeRepoURL(srv, "azure"), "provider": "azure", "prNumber": 1.0})
	sc.Egress = allowLoopback(t, egress.Config{})
	if _, err := run(t, "git-wait-for-pr", sc); !IsTerminal(err) || !strings.Contains(err.Error(), "is repoURL an Azure DevOps repository") {
		t.Fatalf("err %v, want a terminal error about repoURL", err)
	}
}

// countingServer starts a test server running h and counts the requests
// it serves.
func countingServer(t *testing.T, h http.HandlerFunc) (srv *httptest.Server, hits func() int) {
	t.Helper()
	var n atomic.Int64
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() int { return int(n.Load()) }
}
