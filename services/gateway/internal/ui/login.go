package ui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
)

// loginCookie holds the sign-in forms' CSRF nonce (double submit): the
// forms are posted before any session exists.
const loginCookie = "caravan_login"

type loginData struct {
	base
	Next    string
	Nonce   string
	Error   string
	Expired bool
	OIDC    bool
	// Link is the one-time link's confirmation (its user), when shown.
	Link     string
	LinkCode string
}

// safeNext keeps a post-sign-in destination on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") || strings.ContainsAny(next, "\r\n") {
		return "/projects"
	}
	return next
}

// loginNonce returns the request's sign-in nonce, setting a new one when
// it has none.
func (u *UI) loginNonce(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(loginCookie); err == nil && len(c.Value) >= 22 {
		return c.Value
	}
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	v := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: v, Path: "/login", MaxAge: 3600, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	return v
}

func checkNonce(r *http.Request) bool {
	c, err := r.Cookie(loginCookie)
	got := r.PostFormValue("nonce")
	return err == nil && got != "" && subtle.ConstantTimeCompare([]byte(c.Value), []byte(got)) == 1
}

func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	d := loginData{base: u.base(nil, "Sign in", ""), Next: safeNext(r.URL.Query().Get("next")), Nonce: u.loginNonce(w, r),
		Expired: r.URL.Query().Get("expired") != "", OIDC: u.oidc != nil}
	if e := r.URL.Query().Get("error"); e != "" {
		d.Error = e
	}
	u.renderLogin(w, http.StatusOK, d)
}

func (u *UI) renderLogin(w http.ResponseWriter, status int, d loginData) {
	if err := u.render(w, status, "login", "layout", d); err != nil {
		u.log.Error("ui login page", "err", err)
	}
}

// loginToken signs in with a bearer token pasted into the form: the API
// must accept it (GET /v1/whoami).
func (u *UI) loginToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	next := safeNext(r.PostFormValue("next"))
	d := loginData{base: u.base(nil, "Sign in", ""), Next: next, Nonce: u.loginNonce(w, r), OIDC: u.oidc != nil}
	if !checkNonce(r) {
		d.Error = "The sign-in form expired; please try again."
		u.renderLogin(w, http.StatusForbidden, d)
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	if token == "" {
		d.Error = "Paste a token: the admin token, an API token or an OIDC ID token."
		u.renderLogin(w, http.StatusBadRequest, d)
		return
	}
	if err := u.signIn(w, r, token, "token", time.Time{}); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			d.Error = "The API does not accept that token."
			u.renderLogin(w, http.StatusUnauthorized, d)
			return
		}
		u.log.Error("ui sign in", "err", err)
		d.Error = "Cannot sign in now; the gateway log has the details."
		u.renderLogin(w, http.StatusInternalServerError, d)
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// signIn checks token with the API and starts a session for it.
func (u *UI) signIn(w http.ResponseWriter, r *http.Request, token, method string, exp time.Time) error {
	who, err := apiClient{h: u.api, token: token}.whoami(r.Context(), "")
	if err != nil {
		return err
	}
	name := who.Name
	if method == "link" && who.Admin {
		name = auth.AdminName
	}
	_, err = u.sessions.Start(w, auth.Session{Token: token, Name: name, Method: method, Admin: who.Admin}, exp)
	return err
}

// linkPage asks the browser to confirm a one-time link; only the POST
// uses it up, so link previews and prefetches do not.
func (u *UI) linkPage(w http.ResponseWriter, r *http.Request) {
	d := loginData{base: u.base(nil, "Sign in", ""), Next: "/projects", Nonce: u.loginNonce(w, r), OIDC: u.oidc != nil}
	code := r.PathValue("code")
	if u.links == nil {
		d.Error = "This server issues no sign-in links."
		u.renderLogin(w, http.StatusNotFound, d)
		return
	}
	name, ok := u.links.Valid(code)
	if !ok {
		d.Error = "This sign-in link was used already or has expired. Sign in with a token, or restart the server for a new link."
		u.renderLogin(w, http.StatusGone, d)
		return
	}
	d.Link, d.LinkCode = name, code
	u.renderLogin(w, http.StatusOK, d)
}

func (u *UI) linkRedeem(w http.ResponseWriter, r *http.Request) {
	d := loginData{base: u.base(nil, "Sign in", ""), Next: "/projects", Nonce: u.loginNonce(w, r), OIDC: u.oidc != nil}
	if u.links == nil || !checkNonce(r) {
		d.Error = "The sign-in form expired; open the link again."
		u.renderLogin(w, http.StatusForbidden, d)
		return
	}
	token, _, ok := u.links.Redeem(r.PathValue("code"))
	if !ok {
		d.Error = "This sign-in link was used already or has expired."
		u.renderLogin(w, http.StatusGone, d)
		return
	}
	if err := u.signIn(w, r, token, "link", time.Time{}); err != nil {
		u.log.Error("ui sign in by link", "err", err)
		d.Error = "Cannot sign in with this link."
		u.renderLogin(w, http.StatusUnauthorized, d)
		return
	}
	http.Redirect(w, r, "/projects", http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	sess, err := u.sessions.Get(r)
	if err == nil && !u.sessions.CheckCSRF(r, sess) {
		http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
		return
	}
	u.sessions.End(w)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
