package gateway_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/services/gateway"
)

// browser is a cookie-keeping HTTP client that signs in to the UI.
type browser struct {
	t    *testing.T
	h    *harness
	c    *http.Client
	csrf string
}

func newBrowser(t *testing.T, h *harness, follow bool) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return &browser{t: t, h: h, c: c}
}

func (b *browser) req(method, path string, form url.Values, hdr map[string]string) (int, string, http.Header) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r, err := http.NewRequest(method, b.h.srv.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	resp, err := b.c.Do(r)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, _ := io.ReadAll(resp.Body)
	if m := csrfMeta.FindStringSubmatch(string(out)); m != nil {
		b.csrf = m[1]
	}
	return resp.StatusCode, string(out), resp.Header
}

var (
	csrfMeta  = regexp.MustCompile(`<meta name="csrf-token" content="([^"]+)">`)
	nonceForm = regexp.MustCompile(`name="nonce" value="([^"]+)"`)
)

// signIn posts the token form.
func (b *browser) signIn(tok string) (int, string, http.Header) {
	b.t.Helper()
	_, page, _ := b.req("GET", "/login", nil, nil)
	m := nonceForm.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("no nonce in the sign-in form: %s", page)
	}
	return b.req("POST", "/login", url.Values{"token": {tok}, "nonce": {m[1]}, "next": {"/projects/demo"}}, nil)
}

func uiHarness(t *testing.T, mutate ...func(*gateway.Deps)) *harness {
	t.Helper()
	h := newHarness(t, append([]func(*gateway.Deps){func(d *gateway.Deps) { d.Config.ExternalURL = "http://127.0.0.1"; d.Config.SessionTTL = time.Hour }}, mutate...)...)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.discovered("1.0.0", "1.1.0")
	if st, e := h.call("POST", "/v1/projects/demo/freight", map[string]any{"origin": map[string]string{"kind": "Warehouse", "name": "app"}, "alias": "brave-fox",
		"images": []map[string]string{{"repoURL": "ghcr.io/example/app", "tag": "1.1.0"}}}, nil); st != http.StatusCreated {
		t.Fatalf("create freight: %d %+v", st, e)
	}
	return h
}

func TestUISignInAndPages(t *testing.T) {
	t.Parallel()
	h := uiHarness(t)
	b := newBrowser(t, h, false)

	if st, _, hdr := b.req("GET", "/", nil, nil); st != http.StatusSeeOther || hdr.Get("Location") != "/login" {
		t.Errorf("/ signed out: %d %s", st, hdr.Get("Location"))
	}
	if st, _, hdr := b.req("GET", "/projects/demo", nil, nil); st != http.StatusSeeOther || !strings.HasPrefix(hdr.Get("Location"), "/login?next=") {
		t.Errorf("a page signed out: %d %s", st, hdr.Get("Location"))
	}
	// The form refuses a post without its nonce, and a token the API does
	// not accept.
	if st, _, _ := b.req("POST", "/login", url.Values{"token": {token}}, nil); st != http.StatusForbidden {
		t.Errorf("sign in without the nonce: %d", st)
	}
	if st, page, _ := b.signIn("not-a-token"); st != http.StatusUnauthorized || !strings.Contains(page, "does not accept") {
		t.Errorf("wrong token: %d", st)
	}
	st, _, hdr := b.signIn(token)
	if st != http.StatusSeeOther || hdr.Get("Location") != "/projects/demo" {
		t.Fatalf("sign in: %d %s", st, hdr.Get("Location"))
	}
	cookie := hdr.Get("Set-Cookie")
	for _, want := range []string{"caravan_session=", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("session cookie %q lacks %s", cookie, want)
		}
	}
	if strings.Contains(cookie, token) {
		t.Error("the cookie holds the token in clear")
	}

	pages := []struct {
		path string
		want []string
	}{
		{"/projects", []string{`href="/projects/demo"`, "3 stages"}},
		{"/projects/demo", []string{`id="card-dev"`, `id="card-staging"`, `id="card-prod"`, `data-node="wh/app"`, "brave-fox", `data-action="promote-menu"`, `<svg class="edges"`, `id="live"`}},
		{"/projects/demo?fragment=card&stage=prod", []string{`<article class="card"`, `id="card-prod"`}},
		{"/projects/demo?fragment=cards&stage=dev&stage=prod&stage=gone", []string{`id="card-dev"`, `id="card-prod"`}},
		{"/projects/demo?fragment=timeline&q=brave", []string{`id="timeline"`, "brave-fox", `data-eligible="dev"`}},
		{"/projects/demo?fragment=graph", []string{`id="graph"`, `id="card-dev"`}},
		{"/projects/demo?at=2020-01-01T00:00", []string{"Showing what ran where", "No freight yet"}},
		{"/projects/demo/stages/dev", []string{"Stage dev", "Freight history", "Promotions"}},
		{"/projects/demo/stages/dev?fragment=promote", []string{"Promote freight to dev", `data-freight=`, "brave-fox"}},
		{"/projects/demo/freight/brave-fox", []string{"Freight brave-fox", "ghcr.io/example/app:1.1.0", `data-action="promote" data-stage="dev"`, `data-action-form="approve"`}},
		{"/projects/demo/warehouses/app", []string{"Warehouse app", "Refresh now", "1.0.0"}},
		{"/projects/demo/compare?kind=freight&a=brave-fox&b=brave-fox", []string{"Compare", "Both run"}},
		{"/deadletters", []string{"Dead letters"}},
	}
	for _, p := range pages {
		st, body, hdr := b.req("GET", p.path, nil, nil)
		if st != http.StatusOK {
			t.Errorf("GET %s: %d\n%s", p.path, st, body)
			continue
		}
		for _, w := range p.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s lacks %q", p.path, w)
			}
		}
		if ct := hdr.Get("Content-Type"); strings.HasPrefix(ct, "text/html") && !strings.Contains(hdr.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: no CSP", p.path)
		}
	}
	var digest map[string]string
	if st, body, _ := b.req("GET", "/projects/demo?fragment=digest", nil, nil); st != http.StatusOK || json.Unmarshal([]byte(body), &digest) != nil || digest["card-dev"] == "" || digest["graph"] == "" {
		t.Errorf("digest: %d %v", st, digest)
	}
	var eligible []string
	if _, body, _ := b.req("GET", "/projects/demo?fragment=eligible&freight=brave-fox", nil, nil); json.Unmarshal([]byte(body), &eligible) != nil || len(eligible) != 1 || eligible[0] != "dev" {
		t.Errorf("eligible: %s", body)
	}
	for path, want := range map[string]int{"/projects/nope": 404, "/projects/demo/stages/nope": 404, "/projects/demo?at=yesterday": 400} {
		if st, _, _ := b.req("GET", path, nil, nil); st != want {
			t.Errorf("GET %s: %d, want %d", path, st, want)
		}
	}
	if st, _, hdr := b.req("GET", "/project/demo/stage/dev", nil, nil); st != http.StatusMovedPermanently || hdr.Get("Location") != "/projects/demo/stages/dev" {
		t.Errorf("Kargo's path: %d %s", st, hdr.Get("Location"))
	}

	// The browser calls the public API with its cookie: reads as is,
	// changes only with the session's CSRF token and from this site.
	if st, _, _ := b.req("GET", "/v1/projects/demo/stages", nil, nil); st != http.StatusOK {
		t.Errorf("API read with the cookie: %d", st)
	}
	if st, _, _ := b.req("POST", "/v1/projects/demo/warehouses/app/refresh", nil, nil); st != http.StatusForbidden {
		t.Errorf("API action without CSRF: %d", st)
	}
	if st, _, _ := b.req("POST", "/v1/projects/demo/warehouses/app/refresh", nil, map[string]string{"X-CSRF-Token": "forged"}); st != http.StatusForbidden {
		t.Errorf("API action with a wrong CSRF token: %d", st)
	}
	if st, _, _ := b.req("POST", "/v1/projects/demo/warehouses/app/refresh", nil, map[string]string{"X-CSRF-Token": b.csrf, "Sec-Fetch-Site": "cross-site"}); st != http.StatusForbidden {
		t.Errorf("API action from another site: %d", st)
	}
	if st, _, _ := b.req("POST", "/v1/projects/demo/warehouses/app/refresh", nil, map[string]string{"X-CSRF-Token": b.csrf, "Sec-Fetch-Site": "same-origin"}); st != http.StatusAccepted {
		t.Errorf("API action with the CSRF token: %d", st)
	}
	// Static assets are versioned and cached.
	if st, body, hdr := b.req("GET", "/static/app.js", nil, nil); st != http.StatusOK || !strings.Contains(body, "X-CSRF-Token") || !strings.HasPrefix(hdr.Get("Content-Type"), "text/javascript") {
		t.Errorf("app.js: %d %s", st, hdr.Get("Content-Type"))
	}
	// Sign out needs the CSRF token too, then the session is gone.
	if st, _, _ := b.req("POST", "/logout", url.Values{}, nil); st != http.StatusForbidden {
		t.Errorf("sign out without CSRF: %d", st)
	}
	if st, _, _ := b.req("POST", "/logout", url.Values{"csrf": {b.csrf}}, nil); st != http.StatusSeeOther {
		t.Errorf("sign out: %d", st)
	}
	if st, _, _ := b.req("GET", "/projects", nil, nil); st != http.StatusSeeOther {
		t.Errorf("a page after sign out: %d", st)
	}
	if st, _, _ := b.req("GET", "/v1/projects", nil, nil); st != http.StatusUnauthorized {
		t.Errorf("the API after sign out: %d", st)
	}
}

func TestUIRoles(t *testing.T) {
	t.Parallel()
	h := uiHarness(t)
	viewer := h.createToken("demo", "look", "viewer")
	promoter := h.createToken("demo", "ship", "promoter")
	for _, tt := range []struct {
		tok     string
		actions bool
	}{{viewer, false}, {promoter, true}} {
		b := newBrowser(t, h, false)
		if st, _, _ := b.signIn(tt.tok); st != http.StatusSeeOther {
			t.Fatalf("sign in: %d", st)
		}
		for _, p := range []string{"/projects/demo", "/projects/demo/freight/brave-fox", "/projects/demo/warehouses/app", "/projects/demo/stages/dev"} {
			_, body, _ := b.req("GET", p, nil, nil)
			if got := strings.Contains(body, "data-action"); got != tt.actions {
				t.Errorf("%s: actions shown %v, want %v", p, got, tt.actions)
			}
		}
		if st, _, _ := b.req("GET", "/deadletters", nil, nil); st != http.StatusForbidden {
			t.Errorf("dead letters for a project token: %d", st)
		}
		if st, _, _ := b.req("GET", "/projects/other", nil, nil); st != http.StatusForbidden && st != http.StatusNotFound {
			t.Errorf("another project: %d", st)
		}
	}
}

func TestUILoginLink(t *testing.T) {
	t.Parallel()
	links := gateway.NewLoginLinks()
	h := uiHarness(t, func(d *gateway.Deps) { d.LoginLinks = links })
	code, err := links.Issue(token, "admin", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, h, false)
	st, page, _ := b.req("GET", "/login/link/"+code, nil, nil)
	if st != http.StatusOK || !strings.Contains(page, "Sign in as admin") {
		t.Fatalf("link page: %d", st)
	}
	nonce := nonceForm.FindStringSubmatch(page)[1]
	// The GET did not use it up; the POST does, once.
	if st, _, hdr := b.req("POST", "/login/link/"+code, url.Values{"nonce": {nonce}}, nil); st != http.StatusSeeOther || hdr.Get("Location") != "/projects" {
		t.Fatalf("redeem: %d", st)
	}
	if st, _, _ := b.req("GET", "/deadletters", nil, nil); st != http.StatusOK {
		t.Errorf("the link's session is not the admin's: %d", st)
	}
	b2 := newBrowser(t, h, false)
	_, page, _ = b2.req("GET", "/login", nil, nil)
	nonce = nonceForm.FindStringSubmatch(page)[1]
	if st, _, _ := b2.req("POST", "/login/link/"+code, url.Values{"nonce": {nonce}}, nil); st != http.StatusGone {
		t.Errorf("second use: %d, want 410", st)
	}
	if st, _, _ := b2.req("GET", "/login/link/"+code, nil, nil); st != http.StatusGone {
		t.Errorf("link page after use: %d, want 410", st)
	}
	expired, _ := links.Issue(token, "admin", -time.Second)
	if st, _, _ := b2.req("GET", "/login/link/"+expired, nil, nil); st != http.StatusGone {
		t.Errorf("expired link: %d, want 410", st)
	}
}

// TestUIOIDC signs in through the authorization code flow with PKCE
// against an in-process issuer that checks the code verifier.
func TestUIOIDC(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	var mu sync.Mutex
	codes := map[string]struct{ challenge, nonce, redirect string }{}
	is.mux.HandleFunc("GET /auth", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("client_id") != "caravan" || q.Get("response_type") != "code" {
			http.Error(w, "bad request: "+r.URL.RawQuery, http.StatusBadRequest)
			return
		}
		code := "code-" + q.Get("state")[:8]
		mu.Lock()
		codes[code] = struct{ challenge, nonce, redirect string }{q.Get("code_challenge"), q.Get("nonce"), q.Get("redirect_uri")}
		mu.Unlock()
		http.Redirect(w, r, q.Get("redirect_uri")+"?code="+code+"&state="+url.QueryEscape(q.Get("state")), http.StatusFound)
	})
	is.mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		c, ok := codes[r.PostForm.Get("code")]
		delete(codes, r.PostForm.Get("code"))
		mu.Unlock()
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge || r.PostForm.Get("redirect_uri") != c.redirect {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
			return
		}
		id := is.token(map[string]any{"sub": "alice", "email": "alice@example.com", "groups": []string{"devops"}, "nonce": c.nonce}, nil)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "id_token": id})
	})
	h := uiHarness(t, func(d *gateway.Deps) {
		d.Config.OIDCIssuer = is.srv.URL
		d.Config.OIDCAudience = "caravan"
		d.Config.OIDCScopes = []string{"openid", "email"}
	})
	h.mustApply([]byte(kargoRBAC))
	b := newBrowser(t, h, true)
	_, page, _ := b.req("GET", "/login", nil, nil)
	if !strings.Contains(page, "Sign in with SSO") {
		t.Fatal("no SSO button")
	}
	// The redirect URI is the external URL's; follow the flow by hand to
	// this test server instead.
	b.c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == "127.0.0.1" {
			req.URL.Host = strings.TrimPrefix(h.srv.URL, "http://")
			req.Host = req.URL.Host
		}
		return nil
	}
	st, page, _ := b.req("GET", "/auth/oidc/start?next=/projects/demo", nil, nil)
	if st != http.StatusOK || !strings.Contains(page, `content="0; url=/projects/demo"`) {
		t.Fatalf("OIDC sign-in: %d\n%s", st, page)
	}
	st, page, _ = b.req("GET", "/projects/demo", nil, nil)
	if st != http.StatusOK || !strings.Contains(page, "alice@example.com") || !strings.Contains(page, `data-action="promote-menu"`) {
		t.Errorf("after OIDC sign-in: %d (promoter by group expected)", st)
	}
	// A callback whose state does not match is refused.
	b2 := newBrowser(t, h, false)
	st, _, hdr := b2.req("GET", "/auth/oidc/callback?code=x&state=y", nil, nil)
	if st != http.StatusSeeOther || !strings.HasPrefix(hdr.Get("Location"), "/login?error=") {
		t.Errorf("forged callback: %d %s", st, hdr.Get("Location"))
	}
}
