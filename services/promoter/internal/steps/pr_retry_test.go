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
	"strings"
	"sync"
	"testing"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/services/promoter/internal/gitmirror"
)

// retryTransport sends again what is rate limited (whatever the method)
// and what failed on the host's side (idempotent methods only), at most
// retryAttempts times, after the Retry-After asked for; a wait beyond
// retryMaxWait is left to the engine, and a canceled context ends a wait.
// The answers are those of RFC 9110 (503 and Retry-After), RFC 6585 (429)
// and GitHub's rate limit (403 with X-RateLimit-Remaining: 0,
// https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api).
func TestRetryTransport(t *testing.T) {
	t.Parallel()
	type answer struct {
		status int
		header map[string]string
	}
	ok := answer{status: http.StatusOK}
	now := func(status int) answer { return answer{status, map[string]string{"Retry-After": "0"}} }
	for _, tc := range []struct {
		name     string
		method   string
		answers  []answer
		wantHits int
		want     int
	}{
		{"GET after two 500s", http.MethodGet, []answer{now(500), now(500), ok}, 3, 200},
		{"GET 502 with backoff", http.MethodGet, []answer{{status: 502}, ok}, 2, 200},
		{"GET gives up after retryAttempts", http.MethodGet, []answer{now(503), now(503), now(503), ok}, 3, 503},
		{"GitHub rate limit", http.MethodGet, []answer{{403, map[string]string{"X-RateLimit-Remaining": "0", "Retry-After": "0"}}, ok}, 2, 200},
		{"a plain 403 is an answer", http.MethodGet, []answer{{status: 403}, ok}, 1, 403},
		{"POST rate limited", http.MethodPost, []answer{now(429), ok}, 2, 200},
		{"POST 503 may have been done", http.MethodPost, []answer{now(503), ok}, 1, 503},
		{"PATCH 500 may have been done", http.MethodPatch, []answer{now(500), ok}, 1, 500},
		{"a wait too long for the step", http.MethodGet, []answer{{503, map[string]string{"Retry-After": "3600"}}, ok}, 1, 503},
		{"404 is an answer", http.MethodGet, []answer{{status: 404}, ok}, 1, 404},
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
				for k, v := range a.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(a.status)
			}))
			t.Cleanup(srv.Close)
			c := retrying(allowLoopback(t, egress.Config{}).Client(false))
			req, err := http.NewRequestWithContext(context.Background(), tc.method, srv.URL, strings.NewReader(`{"a":1}`))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
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
		if _, err := retrying(allowLoopback(t, egress.Config{}).Client(false)).Do(req); !errors.Is(err, context.Canceled) {
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
		if _, err := retrying(p.Client(false)).Do(req); !errors.Is(err, egress.ErrRefused) {
			t.Fatalf("err %v, want the egress refusal", err)
		}
	})
}

// A Bitbucket or Azure DevOps answer refusing the credential fails the
// step for good, and one failing on the host's side after the retries
// fails it for the engine to retry later; neither error carries the token
// or the Authorization header, even when the host echoes them back (the
// error bodies are Bitbucket's {"error": {"message"}},
// https://developer.atlassian.com/cloud/bitbucket/rest/intro/#standardized-error-responses,
// and Azure DevOps' {"message", "typeKey"} as the SDK decodes them). An
// address the egress policy refuses fails the step for good.
func TestPullRequestHostErrors(t *testing.T) {
	t.Parallel()
	const token = "s3cr3t-t0ken"
	for _, provider := range []string{"bitbucket", "azure"} {
		for _, status := range []int{http.StatusUnauthorized, http.StatusInternalServerError} {
			t.Run(fmt.Sprintf("%s %d", provider, status), func(t *testing.T) {
				t.Parallel()
				var mu sync.Mutex
				var hits int
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Method == http.MethodOptions && r.URL.Path == "/acme/_apis" {
						azureLocations(w)
						return
					}
					mu.Lock()
					hits++
					mu.Unlock()
					echo := "rejected " + r.Header.Get("Authorization") + " (" + token + ")"
					w.Header().Set("Content-Type", "application/json")
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(status)
					if provider == "bitbucket" {
						_ = json.NewEncoder(w).Encode(map[string]any{"type": "error", "error": map[string]any{"message": echo}})
						return
					}
					_ = json.NewEncoder(w).Encode(map[string]any{"$id": "1", "message": echo, "typeKey": "UnauthorizedRequestException", "errorCode": 0})
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
				for _, secret := range []string{token, base64.StdEncoding.EncodeToString([]byte("me:" + token)), base64.StdEncoding.EncodeToString([]byte(":" + token))} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("the error carries a secret: %v", err)
					}
				}
				if !strings.Contains(err.Error(), fmt.Sprint(status)) || !strings.Contains(err.Error(), "[redacted]") {
					t.Fatalf("the error names neither the status nor the host's message: %v", err)
				}
				wantHits := map[int]int{401: 1, 500: retryAttempts}[status]
				if IsTerminal(err) != (status == 401) || hits != wantHits {
					t.Fatalf("status %d: terminal %v after %d requests (%v), want terminal %v after %d", status, IsTerminal(err), hits, err, status == 401, wantHits)
				}
			})
		}
		t.Run(provider+" egress", func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.NotFoundHandler())
			t.Cleanup(srv.Close)
			sc := newContext(t, map[string]any{"repoURL": fakeRepoURL(srv, provider), "provider": provider, "prNumber": 1.0})
			p, err := egress.New(egress.Config{})
			if err != nil {
				t.Fatal(err)
			}
			sc.Egress = p
			if _, err := run(t, "git-wait-for-pr", sc); !IsTerminal(err) || !errors.Is(err, egress.ErrRefused) {
				t.Fatalf("err %v, want a terminal egress refusal", err)
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
	var mu sync.Mutex
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"values": []any{map[string]any{"id": 1, "state": "OPEN",
			"source": map[string]any{"branch": map[string]any{"name": "other"}}, "destination": map[string]any{"branch": map[string]any{"name": "main"}}}},
			"next": "http://127.0.0.2:1/2.0/repositories/acme/app/pullrequests?page=2"})
	}))
	t.Cleanup(srv.Close)
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
	if _, err := p.get(ctx, 1); !errors.Is(err, context.Canceled) || hits != 0 {
		t.Fatalf("a canceled step: %v after %d requests", err, hits)
	}
	_, err = p.open(context.Background(), "caravan/promotion/p1", "main", nil, nil)
	if err == nil || !IsTerminal(err) || !strings.Contains(err.Error(), "not on the API's host") || hits != 1 {
		t.Fatalf("a next page elsewhere: %v after %d requests", err, hits)
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
