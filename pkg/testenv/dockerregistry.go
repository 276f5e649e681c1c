package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"
)

// DockerRegistry is Debian's docker-registry (the CNCF distribution
// registry, `apt-get install docker-registry`) run as a process on
// loopback over plain HTTP, with filesystem storage in a temp dir, and
// optionally htpasswd or token authentication and notifications.
type DockerRegistry struct {
	addr           string
	user, password string
	tokens         *TokenServer
	log            *SyncBuffer
	stop           func()
}

type dockerRegistryConfig struct {
	htpasswd       bool
	token          bool
	user, password string
	notifyURL      string
	notifyBearer   string
	logLevel       string
	output         io.Writer
}

// DockerRegistryOption configures StartDockerRegistry.
type DockerRegistryOption func(*dockerRegistryConfig)

// WithHtpasswd makes the registry itself check HTTP basic authentication
// (`auth: htpasswd`) against one user, its password hashed with bcrypt.
func WithHtpasswd(user, password string) DockerRegistryOption {
	return func(c *dockerRegistryConfig) { c.htpasswd, c.user, c.password = true, user, password }
}

// WithTokenAuth makes the registry require bearer tokens (`auth: token`)
// from a TokenServer started beside it, which issues them to one user
// (checked against a bcrypt htpasswd entry).
func WithTokenAuth(user, password string) DockerRegistryOption {
	return func(c *dockerRegistryConfig) { c.token, c.user, c.password = true, user, password }
}

// WithNotifications makes the registry POST its events to url, with
// bearer (if set) as Authorization bearer token. Blob events are left out.
func WithNotifications(url, bearer string) DockerRegistryOption {
	return func(c *dockerRegistryConfig) { c.notifyURL, c.notifyBearer = url, bearer }
}

// WithLogLevel sets the registry's log level: error, warn, info (the
// default) or debug. Above info it leaves out the info line it logs for
// each request (the access log and errors stay), which shortens the log
// shown on failure in a test that pushes many images.
func WithLogLevel(level string) DockerRegistryOption {
	return func(c *dockerRegistryConfig) { c.logLevel = level }
}

// WithLogOutput copies what the registry prints to w as it prints it (a
// file kept after the run, say), besides keeping it for Log.
func WithLogOutput(w io.Writer) DockerRegistryOption {
	return func(c *dockerRegistryConfig) { c.output = w }
}

// StartDockerRegistry starts docker-registry on a free loopback port and
// stops it at test cleanup (its log is shown if the test failed). A
// missing docker-registry fails the test with an install hint.
func StartDockerRegistry(t testing.TB, opts ...DockerRegistryOption) *DockerRegistry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("testenv: docker-registry not installed (apt-get install docker-registry)")
	}
	c := dockerRegistryConfig{logLevel: "info"}
	for _, o := range opts {
		o(&c)
	}
	if c.htpasswd && c.token {
		t.Fatal("testenv: WithHtpasswd and WithTokenAuth exclude each other")
	}
	dir := t.TempDir()
	r := &DockerRegistry{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), user: c.user, password: c.password, log: &SyncBuffer{}}
	var b strings.Builder
	fmt.Fprintf(&b, "version: 0.1\nlog: {level: %s}\nstorage:\n  filesystem: {rootdirectory: %s}\n  delete: {enabled: true}\nhttp:\n  addr: %s\n",
		c.logLevel, filepath.Join(dir, "data"), r.addr)
	switch {
	case c.htpasswd:
		file := filepath.Join(dir, "htpasswd")
		write(t, file, []byte(htpasswdLine(t, c.user, c.password)))
		fmt.Fprintf(&b, "auth:\n  htpasswd:\n    realm: caravan-test\n    path: %s\n", file)
	case c.token:
		r.tokens = NewTokenServer(t, c.user, c.password)
		bundle := filepath.Join(dir, "token-ca.pem")
		write(t, bundle, r.tokens.CertPEM())
		fmt.Fprintf(&b, "auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
			r.tokens.Realm(), r.tokens.Service, r.tokens.Issuer, bundle)
	}
	if c.notifyURL != "" {
		fmt.Fprintf(&b, "notifications:\n  endpoints:\n  - name: caravan\n    url: %s\n", c.notifyURL)
		if c.notifyBearer != "" {
			fmt.Fprintf(&b, "    headers: {Authorization: [Bearer %s]}\n", c.notifyBearer)
		}
		b.WriteString("    timeout: 5s\n    threshold: 3\n    backoff: 200ms\n    ignoredmediatypes: [application/octet-stream]\n")
	}
	cfg := filepath.Join(dir, "config.yml")
	write(t, cfg, []byte(b.String()))

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", cfg)
	var out io.Writer = r.log
	if c.output != nil {
		out = io.MultiWriter(r.log, c.output)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("testenv: start docker-registry: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("docker-registry %s log:\n%s", r.addr, r.log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + r.addr + "/v2/")
		if err == nil {
			_ = resp.Body.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("testenv: docker-registry exited at start:\n%s", r.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: docker-registry not answering on %s within 30s:\n%s", r.addr, r.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// Host is the registry's host:port.
func (r *DockerRegistry) Host() string { return r.addr }

// Stop stops the registry and waits until it has exited, before the test
// ends (its cleanup stops it otherwise). It is safe to call more than once.
func (r *DockerRegistry) Stop() { r.stop() }

// Repo is the full repository name of name in this registry (parse it
// with name.Insecure: the registry speaks plain HTTP).
func (r *DockerRegistry) Repo(name string) string { return r.addr + "/" + strings.Trim(name, "/") }

// Tokens is the registry's token server (nil without WithTokenAuth).
func (r *DockerRegistry) Tokens() *TokenServer { return r.tokens }

// Auth is the configured user's authenticator (anonymous without one).
func (r *DockerRegistry) Auth() authn.Authenticator {
	if r.user == "" {
		return authn.Anonymous
	}
	return &authn.Basic{Username: r.user, Password: r.password}
}

// Log is what the registry printed so far.
func (r *DockerRegistry) Log() string { return r.log.String() }

// PushImage pushes a small random image to repo (e.g. "team/app") under
// tag as the configured user and returns its manifest digest.
func (r *DockerRegistry) PushImage(t testing.TB, repo, tag string) v1.Hash {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatalf("testenv: random image: %v", err)
	}
	ref, err := name.NewTag(r.Repo(repo)+":"+tag, name.Insecure)
	if err != nil {
		t.Fatalf("testenv: reference: %v", err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context()), remote.WithAuth(r.Auth())); err != nil {
		t.Fatalf("testenv: push %s: %v", ref, err)
	}
	return digestOf(t, img)
}

// Tags lists repo's tags as the configured user.
func (r *DockerRegistry) Tags(t testing.TB, repo string) []string {
	t.Helper()
	rp, err := name.NewRepository(r.Repo(repo), name.Insecure)
	if err != nil {
		t.Fatalf("testenv: repository: %v", err)
	}
	tags, err := remote.List(rp, remote.WithContext(t.Context()), remote.WithAuth(r.Auth()))
	if err != nil {
		t.Fatalf("testenv: list tags of %s: %v", rp, err)
	}
	return tags
}

// TokenServer issues registry bearer tokens as the distribution token
// authentication specification describes them
// (https://distribution.github.io/distribution/spec/auth/token/ and
// .../spec/auth/jwt/): GET <realm>?service=<service>&scope=<scope>...,
// with HTTP basic authentication checked against a bcrypt htpasswd entry;
// the answer is {"token", "access_token", "expires_in", "issued_at"}, the
// token an ES256 JWT whose x5c header carries the certificate the
// registry's rootcertbundle trusts, with iss, sub, aud (the service),
// exp, nbf, iat, jti and access (type, name, actions). An anonymous
// request gets a token without access, as public token servers do; a
// wrong password is answered 401.
type TokenServer struct {
	Service, Issuer string

	srv     *httptest.Server
	key     *ecdsa.PrivateKey
	certDER []byte
	user    string
	hash    []byte

	mu        sync.Mutex
	issued    int
	refused   int
	anonymous int
}

// NewTokenServer starts a token server for one user and stops it at test
// cleanup.
func NewTokenServer(t testing.TB, user, password string) *TokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "caravan test token signer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	s := &TokenServer{Service: "caravan-test-registry", Issuer: "caravan-test-token-server", key: key, certDER: der, user: user, hash: hash}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// Realm is the token endpoint's URL. Its host is "localhost", not the
// loopback address: clients (go-containerregistry) refuse a realm that
// is a private IP literal on another host:port than the registry's.
func (s *TokenServer) Realm() string { return "http://" + s.Host() + "/token" }

// Host is the token server's localhost:port.
func (s *TokenServer) Host() string {
	return "localhost:" + s.srv.URL[strings.LastIndex(s.srv.URL, ":")+1:]
}

// CertPEM is the signing certificate, for the registry's rootcertbundle.
func (s *TokenServer) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.certDER})
}

// Counts are the tokens issued to the user, to anonymous requests, and
// the requests refused.
func (s *TokenServer) Counts() (issued, anonymous, refused int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued, s.anonymous, s.refused
}

type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (s *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	deny := func(code int, msg string) {
		s.mu.Lock()
		s.refused++
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="caravan-test-token-server"`)
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": "UNAUTHORIZED", "message": msg}}})
	}
	if r.URL.Path != "/token" || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	if q.Get("service") != s.Service {
		deny(http.StatusBadRequest, "unknown service")
		return
	}
	user, password, authenticated := r.BasicAuth()
	if authenticated && (user != s.user || bcrypt.CompareHashAndPassword(s.hash, []byte(password)) != nil) {
		deny(http.StatusUnauthorized, "invalid username or password")
		return
	}
	access := []tokenAccess{}
	if authenticated {
		for _, scope := range q["scope"] {
			for _, sc := range strings.Fields(scope) {
				parts := strings.Split(sc, ":")
				if len(parts) < 3 || parts[0] != "repository" {
					continue
				}
				var actions []string
				for _, a := range strings.Split(parts[len(parts)-1], ",") {
					if a == "pull" || a == "push" || a == "delete" {
						actions = append(actions, a)
					}
				}
				access = append(access, tokenAccess{Type: "repository", Name: strings.Join(parts[1:len(parts)-1], ":"), Actions: actions})
			}
		}
	} else {
		user = ""
	}
	now := time.Now()
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	claims := map[string]any{
		"iss": s.Issuer, "sub": user, "aud": s.Service,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": hex.EncodeToString(jti), "access": access,
	}
	tok, err := s.sign(claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.mu.Lock()
	if authenticated {
		s.issued++
	} else {
		s.anonymous++
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300, "issued_at": now.UTC().Format(time.RFC3339)})
}

// sign makes an ES256 JWT of claims with the certificate in x5c.
func (s *TokenServer) sign(claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{base64.StdEncoding.EncodeToString(s.certDER)}})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	sum := sha256.Sum256([]byte(signing))
	rr, ss, err := ecdsa.Sign(rand.Reader, s.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	rr.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// htpasswdLine is an htpasswd entry with a bcrypt hash, the only kind
// docker-registry reads (at the lowest cost: it is checked on every
// request).
func htpasswdLine(t testing.TB, user, password string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + string(hash) + "\n"
}
