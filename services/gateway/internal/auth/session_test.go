package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSessions(t *testing.T) {
	t.Parallel()
	s, err := NewSessions("admin-token", time.Hour, true)
	if err != nil {
		t.Fatal(err)
	}
	// Long enough that the sealed cookie's random characters never spell
	// it by chance (a three-letter token did, once in about a thousand).
	const token = "caravan-session-test-token"
	w := httptest.NewRecorder()
	sess, err := s.Start(w, Session{Token: token, Name: "alice", Method: "token"}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	c := w.Result().Cookies()[0]
	if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || strings.Contains(c.Value, token) {
		t.Errorf("cookie %+v", c)
	}
	req := func(method string, cookie *http.Cookie, hdr map[string]string) *http.Request {
		r := httptest.NewRequest(method, "/v1/x", nil)
		if cookie != nil {
			r.AddCookie(cookie)
		}
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		return r
	}
	got, err := s.Get(req("GET", c, nil))
	if err != nil || got.Token != token || got.ID != sess.ID {
		t.Fatalf("get: %+v %v", got, err)
	}
	// A cookie sealed under another key, or tampered with, is no session.
	other, _ := NewSessions("other-token", time.Hour, true)
	if _, err := other.Get(req("GET", c, nil)); err == nil {
		t.Error("another key opened the cookie")
	}
	bad := *c
	bad.Value = bad.Value[:len(bad.Value)-2] + "AA"
	if _, err := s.Get(req("GET", &bad, nil)); err == nil {
		t.Error("a tampered cookie opened")
	}
	// Expiry.
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := s.Get(req("GET", c, nil)); err == nil {
		t.Error("an expired session opened")
	}
	s.now = time.Now
	// CSRF: reads pass, changes need the token and this site.
	csrf := s.CSRF(sess)
	tests := []struct {
		method string
		hdr    map[string]string
		ok     bool
	}{
		{"GET", nil, true},
		{"POST", nil, false},
		{"POST", map[string]string{CSRFHeader: "nope"}, false},
		{"POST", map[string]string{CSRFHeader: csrf}, true},
		{"DELETE", map[string]string{CSRFHeader: csrf, "Sec-Fetch-Site": "same-origin"}, true},
		{"POST", map[string]string{CSRFHeader: csrf, "Sec-Fetch-Site": "cross-site"}, false},
	}
	for _, tt := range tests {
		tok, err := s.Token(req(tt.method, c, tt.hdr))
		if (err == nil) != tt.ok || (tt.ok && tok != token) {
			t.Errorf("%s %v: %q %v, want ok=%v", tt.method, tt.hdr, tok, err, tt.ok)
		}
	}
	if tok, err := s.Token(req("POST", nil, nil)); tok != "" || err != nil {
		t.Errorf("no session: %q %v", tok, err)
	}
	// Sessions of a different sign-in have different CSRF tokens.
	sess2, _ := s.Start(httptest.NewRecorder(), Session{Token: "tok"}, time.Time{})
	if s.CSRF(sess2) == csrf {
		t.Error("two sessions share a CSRF token")
	}
	// An OIDC token's expiry bounds the session.
	exp := time.Now().Add(10 * time.Minute)
	short, _ := s.Start(httptest.NewRecorder(), Session{Token: "jwt"}, exp)
	if short.Expires != exp.Unix() {
		t.Errorf("expires %d, want %d", short.Expires, exp.Unix())
	}
}

func TestLoginLinks(t *testing.T) {
	t.Parallel()
	l := NewLoginLinks()
	code, err := l.Issue("tok", "admin", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := l.Valid(code); !ok || name != "admin" {
		t.Errorf("valid: %q %v", name, ok)
	}
	if tok, name, ok := l.Redeem(code); !ok || tok != "tok" || name != "admin" {
		t.Errorf("redeem: %q %q %v", tok, name, ok)
	}
	if _, _, ok := l.Redeem(code); ok {
		t.Error("a link worked twice")
	}
	old, _ := l.Issue("tok", "admin", time.Minute)
	l.now = func() time.Time { return time.Now().Add(11 * time.Minute) }
	if _, _, ok := l.Redeem(old); ok {
		t.Error("an expired link worked")
	}
	if _, _, ok := l.Redeem("guess"); ok {
		t.Error("a guessed code worked")
	}
}
