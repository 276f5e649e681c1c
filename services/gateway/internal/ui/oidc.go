package ui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDCConfig is the OIDC client the UI signs people in with: the
// authorization code flow with PKCE (S256) and a nonce. The ID token it
// gets is the session's bearer token, which the API checks on every call.
type OIDCConfig struct {
	// Issuer is the OIDC issuer URL.
	Issuer string
	// ClientID is the client (the audience the API expects).
	ClientID string
	// ClientSecret is empty for a public client (PKCE alone).
	ClientSecret string
	// Scopes asked for; openid is always included.
	Scopes []string
	// RedirectURL is <external URL>/auth/oidc/callback.
	RedirectURL string
	// HTTPClient reaches the issuer (nil: http.DefaultClient).
	HTTPClient *http.Client
}

type oidcClient struct {
	cfg OIDCConfig

	mu       sync.Mutex
	provider *oidc.Provider
	failedAt time.Time
}

func newOIDCClient(c OIDCConfig) *oidcClient {
	if c.HTTPClient == nil {
		c.HTTPClient = http.DefaultClient
	}
	return &oidcClient{cfg: c}
}

// oidcCookie carries the flow's state, nonce and PKCE verifier from the
// start to the callback. It is SameSite=Lax: the issuer's redirect back is
// a cross-site navigation, on which a Strict cookie is not sent.
const oidcCookie = "caravan_oidc"

type oidcFlow struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Next     string `json:"next"`
	Expires  int64  `json:"exp"`
}

func (c *oidcClient) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, c.cfg.HTTPClient)
}

func (c *oidcClient) get(ctx context.Context) (*oidc.Provider, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.provider != nil {
		return c.provider, nil
	}
	if time.Since(c.failedAt) < 5*time.Second {
		return nil, errors.New("oidc issuer unavailable")
	}
	dctx, cancel := context.WithTimeout(c.ctx(context.WithoutCancel(ctx)), 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(dctx, c.cfg.Issuer)
	if err != nil {
		c.failedAt = time.Now()
		return nil, fmt.Errorf("oidc discovery: %w", err)
	}
	c.provider = p
	return p, nil
}

func (c *oidcClient) oauth(p *oidc.Provider) *oauth2.Config {
	scopes := []string{oidc.ScopeOpenID}
	for _, s := range c.cfg.Scopes {
		if s != oidc.ScopeOpenID && s != "" {
			scopes = append(scopes, s)
		}
	}
	return &oauth2.Config{ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret, Endpoint: p.Endpoint(), RedirectURL: c.cfg.RedirectURL, Scopes: scopes}
}

func random() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (u *UI) oidcStart(w http.ResponseWriter, r *http.Request) {
	if u.oidc == nil {
		http.Redirect(w, r, "/login?error="+urlQuery("Single sign-on is not configured."), http.StatusSeeOther)
		return
	}
	p, err := u.oidc.get(r.Context())
	if err != nil {
		u.log.Warn("ui oidc", "err", err)
		http.Redirect(w, r, "/login?error="+urlQuery("The identity provider cannot be reached; try again, or sign in with a token."), http.StatusSeeOther)
		return
	}
	f := oidcFlow{State: random(), Nonce: random(), Verifier: oauth2.GenerateVerifier(), Next: safeNext(r.URL.Query().Get("next")), Expires: u.now().Add(10 * time.Minute).Unix()}
	v, err := u.sessions.Seal(oidcCookie, f)
	if err != nil {
		http.Error(w, "cannot start the sign-in", http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: v, Path: "/auth/oidc", MaxAge: 600, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil || isHTTPS(u.oidc.cfg.RedirectURL)})
	http.Redirect(w, r, u.oidc.oauth(p).AuthCodeURL(f.State, oauth2.S256ChallengeOption(f.Verifier), oidc.Nonce(f.Nonce)), http.StatusFound)
}

func (u *UI) oidcCallback(w http.ResponseWriter, r *http.Request) {
	fail := func(msg string) {
		http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: "/auth/oidc", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, "/login?error="+urlQuery(msg), http.StatusSeeOther)
	}
	if u.oidc == nil {
		fail("Single sign-on is not configured.")
		return
	}
	c, err := r.Cookie(oidcCookie)
	var f oidcFlow
	if err != nil || u.sessions.Open(oidcCookie, c.Value, &f) != nil || u.now().Unix() > f.Expires {
		fail("The sign-in took too long or was started elsewhere; please try again.")
		return
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		fail("The identity provider refused the sign-in: " + e + " " + q.Get("error_description"))
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(f.State)) != 1 || q.Get("code") == "" {
		fail("The sign-in answer does not match the request; please try again.")
		return
	}
	p, err := u.oidc.get(r.Context())
	if err != nil {
		fail("The identity provider cannot be reached.")
		return
	}
	ctx, cancel := context.WithTimeout(u.oidc.ctx(r.Context()), 15*time.Second)
	defer cancel()
	tok, err := u.oidc.oauth(p).Exchange(ctx, q.Get("code"), oauth2.VerifierOption(f.Verifier))
	if err != nil {
		u.log.Warn("ui oidc exchange", "err", err)
		fail("The identity provider did not exchange the code.")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		fail("The identity provider sent no ID token.")
		return
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: u.oidc.cfg.ClientID}).Verify(ctx, raw)
	if err != nil || subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.Nonce)) != 1 {
		fail("The ID token is not valid for this sign-in.")
		return
	}
	if err := u.signIn(w, r, raw, "oidc", idt.Expiry); err != nil {
		u.log.Warn("ui oidc sign in", "err", err)
		fail("The API does not accept this identity.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: "/auth/oidc", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	// The session cookie is SameSite=Strict: a redirect in this
	// cross-site chain would not carry it. A same-site navigation does.
	d := loginData{base: u.base(nil, "Signed in", ""), Next: f.Next}
	if err := u.render(w, http.StatusOK, "signedin", "layout", d); err != nil {
		u.log.Error("ui signed in page", "err", err)
	}
}

func isHTTPS(u string) bool { return len(u) > 8 && u[:8] == "https://" }

func urlQuery(s string) string { return url.QueryEscape(s) }
