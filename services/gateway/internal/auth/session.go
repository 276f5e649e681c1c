package auth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// SessionCookie is the name of the web UI's session cookie.
const SessionCookie = "caravan_session"

// CSRFHeader carries a session's CSRF token on unsafe API requests made
// with the session cookie.
const CSRFHeader = "X-CSRF-Token"

// Session errors.
var (
	// ErrNoSession means the request carries no valid session cookie.
	ErrNoSession = errors.New("no valid session")
	// ErrCSRF means an unsafe request with a session cookie lacks the
	// session's CSRF token, or comes from another site.
	ErrCSRF = errors.New("missing or wrong CSRF token")
)

// Session is a signed-in browser: the bearer token it acts with (an admin,
// API or OIDC ID token) and what the UI shows of it. It travels sealed
// (AES-256-GCM) in an HttpOnly, SameSite=Strict cookie, so any gateway
// replica can read it and the browser cannot.
type Session struct {
	// ID is random per sign-in; the CSRF token is derived from it.
	ID string `json:"id"`
	// Token is the bearer token every API call of the session carries.
	Token string `json:"tok"`
	// Name is who signed in, as shown in the UI.
	Name string `json:"name"`
	// Method is how: token, oidc or link.
	Method string `json:"m"`
	// Admin is whether the token is the system admin's (what the UI
	// shows; the API decides on every request).
	Admin bool `json:"adm,omitempty"`
	// Expires is when the session ends (Unix seconds).
	Expires int64 `json:"exp"`
}

// Sessions seals sessions into cookies and checks CSRF tokens. The key is
// derived (HKDF-SHA256) from a secret every gateway replica shares — the
// admin token — so rotating that secret ends every session. Sessions are
// stateless: signing out clears the cookie; a stolen cookie stays valid
// until it expires unless its token is revoked. Safe for concurrent use.
type Sessions struct {
	aead   cipher.AEAD
	mac    []byte
	ttl    time.Duration
	secure bool
	now    func() time.Time
}

// NewSessions returns Sessions keyed by secret, lasting ttl. secure sets
// the cookies' Secure attribute (the UI is served over HTTPS).
func NewSessions(secret string, ttl time.Duration, secure bool) (*Sessions, error) {
	if secret == "" {
		return nil, errors.New("sessions: empty secret")
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), []byte("caravan"), "caravan ui session v1", 32)
	if err != nil {
		return nil, fmt.Errorf("sessions: derive key: %w", err)
	}
	mac, err := hkdf.Key(sha256.New, []byte(secret), []byte("caravan"), "caravan ui csrf v1", 32)
	if err != nil {
		return nil, fmt.Errorf("sessions: derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = 12 * time.Hour
	}
	return &Sessions{aead: aead, mac: mac, ttl: ttl, secure: secure, now: time.Now}, nil
}

// TTL is how long a new session lasts.
func (s *Sessions) TTL() time.Duration { return s.ttl }

// Seal encrypts v for a cookie named name (the name is authenticated too,
// so one cookie's value cannot be replayed as another's).
func (s *Sessions) Seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

// Open decrypts a value Seal made for the cookie name into v.
func (s *Sessions) Open(name, value string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return ErrNoSession
	}
	plain, err := s.aead.Open(nil, raw[:s.aead.NonceSize()], raw[s.aead.NonceSize():], []byte(name))
	if err != nil {
		return ErrNoSession
	}
	if json.Unmarshal(plain, v) != nil {
		return ErrNoSession
	}
	return nil
}

// Start signs a browser in: it sets the session cookie for sess (its
// Token, Name, Method and Admin; ID and Expires are set here) and returns
// the session. exp bounds the session (an OIDC ID token's expiry); zero
// means the TTL.
func (s *Sessions) Start(w http.ResponseWriter, sess Session, exp time.Time) (Session, error) {
	now := s.now()
	limit := now.Add(s.ttl)
	if exp.IsZero() || exp.After(limit) {
		exp = limit
	}
	id := make([]byte, 18)
	if _, err := rand.Read(id); err != nil {
		return Session{}, err
	}
	sess.ID, sess.Expires = base64.RawURLEncoding.EncodeToString(id), exp.Unix()
	v, err := s.Seal(SessionCookie, sess)
	if err != nil {
		return Session{}, err
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: v, Path: "/", Expires: exp, MaxAge: int(exp.Sub(now).Seconds()),
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteStrictMode,
	})
	return sess, nil
}

// End clears the session cookie.
func (s *Sessions) End(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteStrictMode})
}

// Get returns the request's session, or ErrNoSession when its cookie is
// missing, forged or expired.
func (s *Sessions) Get(r *http.Request) (Session, error) {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return Session{}, ErrNoSession
	}
	var sess Session
	if err := s.Open(SessionCookie, c.Value, &sess); err != nil {
		return Session{}, err
	}
	if sess.Token == "" || s.now().Unix() >= sess.Expires {
		return Session{}, ErrNoSession
	}
	return sess, nil
}

// CSRF returns the session's CSRF token: an HMAC of its ID, so it needs no
// storage and changes with every sign-in.
func (s *Sessions) CSRF(sess Session) string {
	m := hmac.New(sha256.New, s.mac)
	m.Write([]byte("csrf\x00" + sess.ID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CheckCSRF reports whether the request carries the session's CSRF token
// (in the X-CSRF-Token header or the csrf form field) and was not sent by
// another site (Sec-Fetch-Site, where the browser sends it).
func (s *Sessions) CheckCSRF(r *http.Request, sess Session) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		return false
	}
	got := r.Header.Get(CSRFHeader)
	if got == "" && r.Method == http.MethodPost {
		got = r.PostFormValue("csrf")
	}
	want := s.CSRF(sess)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// Token returns the bearer token of the request's session, for API
// requests without an Authorization header: "" when there is no session,
// ErrCSRF when an unsafe request lacks the session's CSRF token.
func (s *Sessions) Token(r *http.Request) (string, error) {
	sess, err := s.Get(r)
	if err != nil {
		return "", nil //nolint:nilerr // no session: the request is unauthenticated
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if !s.CheckCSRF(r, sess) {
			return "", ErrCSRF
		}
	}
	return sess.Token, nil
}

// LoginLinks are one-time sign-in links: each code signs one browser in
// with the token it was issued for, once, before it expires. They live in
// the memory of the process that issued them (caravan server prints one
// for the admin at start), so a restart voids them.
type LoginLinks struct {
	mu    sync.Mutex
	links map[[sha256.Size]byte]loginLink
	now   func() time.Time
}

type loginLink struct {
	token, name string
	expires     time.Time
}

// NewLoginLinks returns an empty set of links.
func NewLoginLinks() *LoginLinks {
	return &LoginLinks{links: map[[sha256.Size]byte]loginLink{}, now: time.Now}
}

// Issue returns a new code that signs in as name with token within ttl.
// Only the code's hash is kept.
func (l *LoginLinks) Issue(token, name string, ttl time.Duration) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("login link: %w", err)
	}
	code := base64.RawURLEncoding.EncodeToString(raw)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for k, v := range l.links {
		if !now.Before(v.expires) {
			delete(l.links, k)
		}
	}
	l.links[sha256.Sum256([]byte(code))] = loginLink{token: token, name: name, expires: now.Add(ttl)}
	return code, nil
}

// Valid reports whether code could be redeemed now, and for whom.
func (l *LoginLinks) Valid(code string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.links[sha256.Sum256([]byte(code))]
	if !ok || !l.now().Before(v.expires) {
		return "", false
	}
	return v.name, true
}

// Redeem uses code up: it returns the token and name it was issued for,
// or ok false when it is unknown, used or expired.
func (l *LoginLinks) Redeem(code string) (token, name string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := sha256.Sum256([]byte(code))
	v, found := l.links[k]
	delete(l.links, k)
	if !found || !l.now().Before(v.expires) {
		return "", "", false
	}
	return v.token, v.name, true
}
