package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// OAuth2's client-credentials grant as RFC 6749 §4.4 defines it: the
// token endpoint (a test server standing in for an identity provider,
// which cannot run here) takes grant_type=client_credentials with the
// client's credentials and scope; the API then sees the bearer token. One
// token serves the client's requests until it expires.
func TestOAuth2(t *testing.T) {
	t.Parallel()
	var issued atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		user, pass, ok := r.BasicAuth()
		if !ok {
			user, pass = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if r.PostForm.Get("grant_type") != "client_credentials" || user != "caravan" || pass != "s3cret" || r.PostForm.Get("scope") != "metrics.read" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		issued.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}`)
	}))
	t.Cleanup(idp.Close)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-1" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(api.Close)
	for _, tc := range []struct {
		secret string
		want   int
	}{{"s3cret", http.StatusOK}, {"wrong", 0}} {
		c, err := Decode(map[string]any{"oauth2": map[string]any{"tokenUrl": idp.URL, "clientId": "caravan", "clientSecret": tc.secret, "scopes": []any{"metrics.read"}}})
		if err != nil {
			t.Fatal(err)
		}
		client, err := c.Client(context.Background(), http.DefaultClient, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			resp, err := client.Get(api.URL)
			if tc.want == 0 {
				if err == nil || !strings.Contains(err.Error(), "invalid_client") {
					t.Fatalf("wrong secret: %v", err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	if issued.Load() != 1 {
		t.Fatalf("%d tokens issued for two requests", issued.Load())
	}
}

// SigV4 as AWS documents it ("Signature Version 4 signing process"): the
// stand-in for Amazon Managed Prometheus (which cannot run here)
// recomputes the signature of what it received with the same secret key
// and compares.
func TestSigv4(t *testing.T) {
	t.Parallel()
	creds := aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG"}
	now := time.Date(2026, 12, 3, 1, 0, 0, 0, time.UTC)
	amp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got := r.Header.Get("Authorization")
		if !strings.HasPrefix(got, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261203/eu-west-1/aps/aws4_request") {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		again, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), strings.NewReader(string(body)))
		for k, v := range r.Header {
			if k != "Authorization" && k != "X-Amz-Date" && k != "Accept-Encoding" && k != "User-Agent" {
				again.Header[k] = v
			}
		}
		again.ContentLength = int64(len(body))
		sum := sha256Hex(body)
		if err := v4.NewSigner().SignHTTP(context.Background(), creds, again, sum, "aps", "eu-west-1", now); err != nil || again.Header.Get("Authorization") != got {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(amp.Close)
	c, err := Decode(map[string]any{"sigv4": map[string]any{"region": "eu-west-1"}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := c.Client(context.Background(), http.DefaultClient, Options{Service: "aps", AWS: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil }), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.PostForm(amp.URL+"/workspaces/ws-1/api/v1/query", url.Values{"query": {"up"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: signature not accepted", resp.StatusCode)
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   map[string]any
		want string
	}{
		{map[string]any{"oauth2": map[string]any{"tokenUrl": "http://x"}}, "clientId"},
		{map[string]any{"basicAuth": map[string]any{}, "sigv4": map[string]any{}}, "exactly one"},
		{map[string]any{"oauth": map[string]any{}}, `unknown field "oauth"`},
	} {
		if _, err := Decode(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.in, err, tc.want)
		}
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
