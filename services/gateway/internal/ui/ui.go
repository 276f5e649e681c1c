// Package ui is Caravan's web UI, served by the gateway at /: server-rendered
// HTML (html/template, assets embedded with go:embed) with a small
// hand-written script for actions, drag and drop, zoom and pan, and live
// updates from the project's event stream.
//
// The UI reads only through the public API, in process, with the signed-in
// user's token, and the browser takes every action by calling the public
// API itself (the session cookie stands in for the bearer token, with a
// CSRF token on unsafe requests). So the UI shows and does exactly what
// the API lets that user see and do. Its own routes are the pages, their
// fragments, sign-in (token form, one-time links, OIDC with PKCE) and
// sign-out.
package ui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caravan-cd/caravan/services/gateway/internal/auth"
	"github.com/caravan-cd/caravan/services/gateway/internal/ui/layout"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure the UI.
type Options struct {
	// API is the gateway's API handler; the UI reads through it and
	// serves it every path it does not own (required).
	API http.Handler
	// Sessions seal the session cookie (required).
	Sessions *auth.Sessions
	// Links are one-time sign-in links (nil: none are honoured).
	Links *auth.LoginLinks
	// OIDC enables "Sign in with SSO" (nil: off).
	OIDC *OIDCConfig
	// Logger receives handled errors (nil: discarded).
	Logger *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Feed keeps each project's pipeline in memory, re-reading only
	// what changed (nil: every request reads the project anew).
	Feed *Feed
}

// UI serves the web UI.
type UI struct {
	api      http.Handler
	sessions *auth.Sessions
	links    *auth.LoginLinks
	oidc     *oidcClient
	log      *slog.Logger
	now      func() time.Time
	pages    map[string]*template.Template
	static   map[string]asset
	layouts  *layoutCache
	// soaks keeps each project's soak requirements from its last full
	// read, for single-card renders.
	soaks sync.Map
	// snaps are the projects' pipelines kept current by the feed (nil
	// without one).
	snaps *snapshots
}

type asset struct {
	body        []byte
	contentType string
	hash        string
}

// New returns the UI's handler: UI routes, and the API for the rest.
func New(o Options) (http.Handler, error) {
	if o.API == nil || o.Sessions == nil {
		return nil, errors.New("ui: API and Sessions are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	u := &UI{api: o.API, sessions: o.Sessions, links: o.Links, log: o.Logger, now: o.Now, layouts: newLayoutCache(64)}
	if o.OIDC != nil {
		u.oidc = newOIDCClient(*o.OIDC)
	}
	if o.Feed != nil {
		u.snaps = newSnapshots(o.Feed)
	}
	var err error
	if u.static, err = loadStatic(); err != nil {
		return nil, err
	}
	if u.pages, err = u.parseTemplates(); err != nil {
		return nil, err
	}
	return u.routes(), nil
}

func (u *UI) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", u.api)
	mux.HandleFunc("GET /{$}", u.home)
	mux.HandleFunc("GET /static/{file}", u.serveStatic)
	mux.HandleFunc("GET /login", u.loginPage)
	mux.HandleFunc("POST /login", u.loginToken)
	mux.HandleFunc("GET /login/link/{code}", u.linkPage)
	mux.HandleFunc("POST /login/link/{code}", u.linkRedeem)
	mux.HandleFunc("POST /logout", u.logout)
	mux.HandleFunc("GET /auth/oidc/start", u.oidcStart)
	mux.HandleFunc("GET /auth/oidc/callback", u.oidcCallback)
	mux.HandleFunc("GET /project/{project}", u.kargoRedirect)
	mux.HandleFunc("GET /project/{project}/{rest...}", u.kargoRedirect)
	mux.Handle("GET /projects", u.page(u.projects))
	mux.Handle("GET /projects/{project}", u.page(u.pipeline))
	mux.Handle("GET /projects/{project}/stages/{stage}", u.page(u.stage))
	mux.Handle("GET /projects/{project}/stages/{stage}/verifications/{id}", u.page(u.verification))
	mux.Handle("GET /projects/{project}/freight/{freight}", u.page(u.freight))
	mux.Handle("GET /projects/{project}/promotions/{promotion}", u.page(u.promotion))
	mux.Handle("GET /projects/{project}/warehouses/{warehouse}", u.page(u.warehouse))
	mux.Handle("GET /projects/{project}/compare", u.page(u.compare))
	mux.Handle("GET /deadletters", u.page(u.deadLetters))
	return mux
}

// request is what a page handler works with.
type request struct {
	w       http.ResponseWriter
	r       *http.Request
	ctx     context.Context
	session auth.Session
	api     apiClient
	csrf    string
	// fragment is the ?fragment= asked for ("" for the whole page).
	fragment string
}

// page wraps a page handler: it requires a session (else it sends the
// browser to sign in) and maps API errors to pages.
func (u *UI) page(h func(*request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := u.sessions.Get(r)
		if err != nil {
			if r.URL.Query().Get("fragment") != "" {
				http.Error(w, "signed out", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		req := &request{w: w, r: r, ctx: r.Context(), session: sess, api: apiClient{h: u.api, token: sess.Token},
			csrf: u.sessions.CSRF(sess), fragment: r.URL.Query().Get("fragment")}
		err = h(req)
		var ae *apiError
		switch {
		case err == nil:
		case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
			u.sessions.End(w)
			if req.fragment != "" {
				http.Error(w, "signed out", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login?expired=1&next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		case errors.As(err, &ae):
			u.errorPage(req, ae.Status, ae.Message)
		case errors.Is(err, errBadRequest):
			u.errorPage(req, http.StatusBadRequest, err.Error())
		case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		default:
			u.log.Error("ui page", "path", r.URL.Path, "err", err)
			u.errorPage(req, http.StatusInternalServerError, "Something went wrong; the gateway log has the details.")
		}
	})
}

var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// base is what every page template receives.
type base struct {
	Title   string
	User    string
	Admin   bool
	CSRF    string
	Project string
	// Nav is the breadcrumb trail.
	Nav []crumb
	// Static maps asset names to their versioned URLs.
	Static map[string]string
}

type crumb struct {
	Label, URL string
}

func (u *UI) base(req *request, title, project string, nav ...crumb) base {
	b := base{Title: title, Project: project, Nav: nav, Static: u.staticURLs()}
	if req != nil {
		b.User, b.CSRF = req.session.Name, req.csrf
		b.Admin = req.session.Admin
	}
	return b
}

func (u *UI) staticURLs() map[string]string {
	m := make(map[string]string, len(u.static))
	for name, a := range u.static {
		m[name] = "/static/" + name + "?v=" + a.hash
	}
	return m
}

// render writes a page (or the named fragment) with the UI's headers.
func (u *UI) render(w http.ResponseWriter, status int, page, tmpl string, data any) error {
	t, ok := u.pages[page]
	if !ok {
		return fmt.Errorf("no page template %q", page)
	}
	buf := bufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufs.Put(buf)
	if err := t.ExecuteTemplate(buf, tmpl, data); err != nil {
		return fmt.Errorf("render %s/%s: %w", page, tmpl, err)
	}
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	// A write error means the client went away: nothing to answer.
	_, _ = w.Write(buf.Bytes())
	return nil
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src-elem 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

type errorData struct {
	base
	Status  int
	Message string
}

func (u *UI) errorPage(req *request, status int, msg string) {
	if req.fragment != "" {
		http.Error(req.w, msg, status)
		return
	}
	d := errorData{base: u.base(req, http.StatusText(status), req.r.PathValue("project")), Status: status, Message: msg}
	if err := u.render(req.w, status, "error", "layout", d); err != nil {
		u.log.Error("ui error page", "err", err)
	}
}

func (u *UI) home(w http.ResponseWriter, r *http.Request) {
	if _, err := u.sessions.Get(r); err != nil {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/projects", http.StatusSeeOther)
}

// kargoRedirect sends Kargo's UI paths (/project/<p>[/stage/<s>|/freight/<f>])
// to Caravan's.
func (u *UI) kargoRedirect(w http.ResponseWriter, r *http.Request) {
	target := "/projects/" + url.PathEscape(r.PathValue("project"))
	parts := strings.Split(strings.Trim(r.PathValue("rest"), "/"), "/")
	if len(parts) == 2 {
		switch parts[0] {
		case "stage", "stages":
			target += "/stages/" + url.PathEscape(parts[1])
		case "freight":
			target += "/freight/" + url.PathEscape(parts[1])
		case "promotion", "promotions":
			target += "/promotions/" + url.PathEscape(parts[1])
		case "warehouse", "warehouses":
			target += "/warehouses/" + url.PathEscape(parts[1])
		}
	}
	http.Redirect(w, r, target, http.StatusMovedPermanently)
}

func loadStatic() (map[string]asset, error) {
	out := map[string]asset{}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct := "application/octet-stream"
		switch path.Ext(p) {
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".css":
			ct = "text/css; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		case ".png":
			ct = "image/png"
		}
		out[path.Base(p)] = asset{body: b, contentType: ct, hash: hex.EncodeToString(sum[:6])}
		return nil
	})
	return out, err
}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	a, ok := u.static[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	if r.URL.Query().Get("v") == a.hash {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	h.Set("ETag", `"`+a.hash+`"`)
	if r.Header.Get("If-None-Match") == `"`+a.hash+`"` {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(a.body)
}

// layoutCache keeps the layouts of recent graph shapes: a layout depends
// only on the nodes and edges, which change far less often than status.
type layoutCache struct {
	max  int
	keys []string
	m    map[string]layout.Result
	mu   chan struct{}
}

func newLayoutCache(n int) *layoutCache {
	return &layoutCache{max: n, m: map[string]layout.Result{}, mu: make(chan struct{}, 1)}
}

func (c *layoutCache) get(nodes []layout.Node, edges []layout.Edge, o layout.Options) layout.Result {
	h := sha256.New()
	for _, n := range nodes {
		fmt.Fprintf(h, "n%s\x00%g\x00%g\x00", n.ID, n.Width, n.Height)
	}
	for _, e := range edges {
		fmt.Fprintf(h, "e%s\x00%s\x00", e.From, e.To)
	}
	key := string(h.Sum(nil))
	c.mu <- struct{}{}
	r, ok := c.m[key]
	<-c.mu
	if ok {
		return r
	}
	r = layout.Layout(nodes, edges, o)
	c.mu <- struct{}{}
	defer func() { <-c.mu }()
	if _, ok := c.m[key]; !ok {
		if len(c.keys) >= c.max {
			delete(c.m, c.keys[0])
			c.keys = c.keys[1:]
		}
		c.keys = append(c.keys, key)
		c.m[key] = r
	}
	return r
}
