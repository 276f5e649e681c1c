package creds

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/storage/memory"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func rsaKey(t *testing.T) (*rsa.PrivateKey, []byte, []byte) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	return k, pkcs1, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
}

// verifyJWT checks an RS256 JWT's signature and returns its claims.
func verifyJWT(t *testing.T, jwt string, pub *rsa.PublicKey) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Errorf("JWT %q has %d parts", jwt, len(parts))
		return nil
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Error(err)
		return nil
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		t.Errorf("JWT signature: %v", err)
		return nil
	}
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Error(err)
	}
	return claims
}

// TestGitHubApp exchanges a GitHub App's key for installation tokens
// against an API speaking GitHub's documented endpoint, on the host of the
// repository as GitHub Enterprise Server serves it (/api/v3), clones with
// the token as x-access-token, and keeps the token until shortly before it
// expires.
func TestGitHubApp(t *testing.T) {
	t.Parallel()
	key, pkcs1, pkcs8 := rsaKey(t)
	clk := &clock{t: time.Now()}
	api := &testenv.GitHubAppAPI{Key: &key.PublicKey, Issuer: "Iv23liClient", Installation: "4242", Now: clk.now}
	g := testenv.GitServer(t, testenv.WithBasicAuth("x-access-token", "ghs_token1"), testenv.WithAPI(api))
	g.CreateRepo(t, "app")
	g.Seed(t, "app", map[string]string{"a.txt": "a"}, "first")
	url := g.URL("app")
	l := lister{"demo": {
		secret("app", model.CredTypeGit, map[string]string{"repoURL": url, "githubAppClientID": "Iv23liClient", "githubAppID": "99",
			"githubAppInstallationID": "4242", "githubAppPrivateKey": string(pkcs1)}),
	}}
	f := NewFinder(l, Options{Now: clk.now})
	c, err := f.Find(t.Context(), "demo", model.CredTypeGit, url)
	if err != nil {
		t.Fatal(err)
	}
	if c.Username != "x-access-token" || c.Password != "ghs_token1" {
		t.Fatalf("credentials %s/%s", c.Username, c.Password)
	}
	auth, err := GitAuth(c, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := git.CloneContext(t.Context(), memory.NewStorage(), nil, &git.CloneOptions{URL: url, Auth: auth}); err != nil {
		t.Fatalf("clone with the installation token: %v", err)
	}
	key1 := c.Key()
	clk.add(50 * time.Minute)
	if c, err = f.Find(t.Context(), "demo", model.CredTypeGit, url); err != nil || c.Password != "ghs_token1" {
		t.Fatalf("within the token's life: %v, %+v", err, c)
	}
	if api.Calls() != 1 {
		t.Errorf("%d exchanges, want 1 (cached)", api.Calls())
	}
	clk.add(6 * time.Minute) // less than five minutes left
	if c, err = f.Find(t.Context(), "demo", model.CredTypeGit, url); err != nil || c.Password != "ghs_token2" {
		t.Fatalf("near expiry: %v, %+v", err, c)
	}
	if c.Key() != key1 {
		t.Error("a new token changed the credentials' key (mirrors would be fetched anew)")
	}

	// The PKCS#8 form of the key and the numeric App ID work too.
	api2 := &testenv.GitHubAppAPI{Key: &key.PublicKey, Issuer: "99", Installation: "7", Now: clk.now}
	g2 := testenv.GitServer(t, testenv.WithAPI(api2))
	url2 := g2.URL("x")
	l2 := lister{"demo": {secret("app", model.CredTypeGit, map[string]string{"repoURL": url2, "githubAppID": "99", "githubAppInstallationID": "7", "githubAppPrivateKey": string(pkcs8)})}}
	if c, err := Find(t.Context(), l2, "demo", model.CredTypeGit, url2); err != nil || c.Password != "ghs_token1" {
		t.Fatalf("app ID, PKCS#8: %v %+v", err, c)
	}
}

// TestGitHubAppTokenScopes: a shared GitHub App Secret's
// kargo.akuity.io/github-token-scopes annotation limits each project to
// its repositories, and tokens are requested for that repository only.
func TestGitHubAppTokenScopes(t *testing.T) {
	t.Parallel()
	key, pkcs1, _ := rsaKey(t)
	clk := &clock{t: time.Now()}
	api := &testenv.GitHubAppAPI{Key: &key.PublicKey, Issuer: "Iv1", Installation: "1", Now: clk.now}
	g := testenv.GitServer(t, testenv.WithAPI(api))
	s := secret("github", model.CredTypeGit, map[string]string{"repoURL": "^" + strings.TrimSuffix(g.URL("x"), "x.git"), "repoURLIsRegex": "true",
		"githubAppClientID": "Iv1", "githubAppInstallationID": "1", "githubAppPrivateKey": string(pkcs1)})
	s.Annotations = map[string]string{AnnotationGitHubTokenScopes: `{"team-a": ["repo-a", "repo-b"], "team-b": ["repo-c"]}`}
	f := NewFinder(lister{model.SharedResourcesProject: {s}}, Options{Now: clk.now})
	if _, err := f.Find(t.Context(), "team-a", model.CredTypeGit, g.URL("repo-b")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ project, repo string }{{"team-a", "repo-c"}, {"team-c", "repo-a"}} {
		_, err := f.Find(t.Context(), tc.project, model.CredTypeGit, g.URL(tc.repo))
		if err == nil || !strings.Contains(err.Error(), AnnotationGitHubTokenScopes) || !strings.Contains(err.Error(), tc.project) {
			t.Errorf("%s/%s: %v, want a refusal naming the annotation", tc.project, tc.repo, err)
		}
	}
	if repos := api.Repositories(); len(repos) != 1 || fmt.Sprint(repos[0]) != "[repo-b]" {
		t.Errorf("token requests for %v, want one for [repo-b]", repos)
	}
}

// TestECR exchanges AWS keys for a registry token through the AWS SDK,
// against a server speaking the ECR API's GetAuthorizationToken
// (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html:
// POST, X-Amz-Target AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken,
// AWS JSON 1.1, SigV4 for service "ecr"; answer authorizationData with
// authorizationToken = base64 of AWS:<password>, expiresAt in epoch seconds).
func TestECR(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Now()}
	srv := startTokenAPI(t, func(r *http.Request, n int64) tokenAnswer {
		authz := r.Header.Get("Authorization")
		if r.Method != http.MethodPost || r.Header.Get("X-Amz-Target") != ecrTargetGetAuthorizationToken ||
			!strings.HasPrefix(authz, "AWS4-HMAC-SHA256 Credential=AKIDTEST/") || !strings.Contains(authz, "/us-west-2/ecr/aws4_request") {
			t.Errorf("request %s %s target %q authorization %q", r.Method, r.URL, r.Header.Get("X-Amz-Target"), authz)
			return refuse(http.StatusBadRequest, "")
		}
		return ecrToken(fmt.Sprintf("ecr-password-%d", n), clk.now().Add(12*time.Hour))
	})
	repo := "123456789012.dkr.ecr.us-west-2.amazonaws.com/app"
	l := lister{"demo": {secret("ecr", model.CredTypeImage, map[string]string{"repoURL": repo, "awsAccessKeyID": "AKIDTEST", "awsSecretAccessKey": "secret-key"})}}
	f := NewFinder(l, Options{ECREndpoint: srv.URL, Now: clk.now})
	for i, want := range []string{"ecr-password-1", "ecr-password-1", "ecr-password-2"} {
		if i == 2 {
			clk.add(11*time.Hour + 56*time.Minute)
		}
		c, err := f.Find(t.Context(), "demo", model.CredTypeImage, repo)
		if err != nil {
			t.Fatal(err)
		}
		if c.Username != "AWS" || c.Password != want {
			t.Fatalf("find %d: %s/%s, want AWS/%s", i, c.Username, c.Password, want)
		}
	}
}

// TestGAR exchanges a GCP service account key for an access token through
// golang.org/x/oauth2/google, against a token endpoint speaking Google's
// service account flow (https://developers.google.com/identity/protocols/oauth2/service-account#httprest:
// POST grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer with an
// RS256 assertion whose iss is the client email, aud the token URI and
// scope the requested scope; answer access_token, expires_in, token_type).
func TestGAR(t *testing.T) {
	t.Parallel()
	key, _, pkcs8 := rsaKey(t)
	clk := &clock{t: time.Now()}
	var tokenURI string
	srv := startTokenAPI(t, func(r *http.Request, n int64) tokenAnswer {
		if err := r.ParseForm(); err != nil || r.Method != http.MethodPost || r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
			return refuse(http.StatusBadRequest, `{"error":"invalid_grant"}`)
		}
		claims := verifyJWT(t, r.Form.Get("assertion"), &key.PublicKey)
		if claims["iss"] != "puller@demo.iam.gserviceaccount.com" || claims["aud"] != tokenURI || !strings.Contains(fmt.Sprint(claims["scope"]), "cloud-platform") {
			t.Errorf("claims %v", claims)
		}
		return tokenAnswer{contentType: "application/json", body: fmt.Sprintf(`{"access_token":"ya29.token-%d","expires_in":3599,"token_type":"Bearer"}`, n)}
	})
	tokenURI = srv.URL + "/token"
	sa, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "demo", "private_key_id": "k1", "private_key": string(pkcs8),
		"client_email": "puller@demo.iam.gserviceaccount.com", "client_id": "1", "token_uri": tokenURI})
	repo := "oci://us-central1-docker.pkg.dev/demo/charts/app"
	l := lister{"demo": {secret("gar", model.CredTypeHelm, map[string]string{"repoURL": repo, "gcpServiceAccountKey": base64.StdEncoding.EncodeToString(sa)})}}
	f := NewFinder(l, Options{Now: clk.now})
	for i := range 2 {
		c, err := f.Find(t.Context(), "demo", model.CredTypeHelm, repo)
		if err != nil {
			t.Fatal(err)
		}
		if c.Username != "oauth2accesstoken" || c.Password != "ya29.token-1" {
			t.Fatalf("find %d: %s/%s", i, c.Username, c.Password)
		}
	}
	if srv.issued.Load() != 1 {
		t.Errorf("%d exchanges, want 1 (cached)", srv.issued.Load())
	}
}
