package gateway_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/caravan-cd/caravan/services/gateway"
)

// issuer is an in-process OIDC provider: discovery document and JWKS, with
// tokens signed in the test.
type issuer struct {
	t   *testing.T
	srv *httptest.Server
	mux *http.ServeMux
	key *rsa.PrivateKey
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{t: t, key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                is.srv.URL,
			"jwks_uri":                              is.srv.URL + "/keys",
			"authorization_endpoint":                is.srv.URL + "/auth",
			"token_endpoint":                        is.srv.URL + "/token",
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	is.mux = mux
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

// token signs claims (iss, aud, exp, iat are filled unless given) with key
// (nil: the issuer's).
func (is *issuer) token(claims map[string]any, key *rsa.PrivateKey) string {
	is.t.Helper()
	if key == nil {
		key = is.key
	}
	full := map[string]any{"iss": is.srv.URL, "aud": "caravan", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		full[k] = v
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		is.t.Fatal(err)
	}
	payload, err := json.Marshal(full)
	if err != nil {
		is.t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		is.t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		is.t.Fatal(err)
	}
	return s
}

const kargoRBAC = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: devops
  namespace: demo
  annotations:
    rbac.kargo.akuity.io/claims: '{"groups":["devops"],"email":["carol@example.com"]}'
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: readers
  namespace: demo
  annotations:
    rbac.kargo.akuity.io/claims: '{"sub":["reader-1"]}'
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: owners
  namespace: demo
  annotations:
    rbac.kargo.akuity.io/claims: '{"groups":["owners"]}'
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: devops-promoter, namespace: demo}
subjects: [{kind: ServiceAccount, name: devops, namespace: demo}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: kargo-promoter}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: readers-viewer, namespace: demo}
subjects: [{kind: ServiceAccount, name: readers, namespace: demo}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: kargo-viewer}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: owners-admin, namespace: demo}
subjects: [{kind: ServiceAccount, name: owners, namespace: demo}]
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: kargo-admin}
`

func TestOIDC(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	h := newHarness(t, func(d *gateway.Deps) {
		d.Config.OIDCIssuer = is.srv.URL
		d.Config.OIDCAudience = "caravan"
	})
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.mustApply([]byte(kargoRBAC))
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	alice := is.token(map[string]any{"sub": "alice", "email": "alice@example.com", "groups": []string{"devops", "eng"}}, nil)
	carol := is.token(map[string]any{"sub": "carol", "email": "carol@example.com"}, nil)
	reader := is.token(map[string]any{"sub": "reader-1"}, nil)
	owner := is.token(map[string]any{"sub": "olga", "groups": []string{"owners"}}, nil)
	stranger := is.token(map[string]any{"sub": "mallory", "groups": []string{"other"}}, nil)
	expired := is.token(map[string]any{"sub": "alice", "groups": []string{"devops"}, "exp": time.Now().Add(-time.Hour).Unix()}, nil)
	wrongAud := is.token(map[string]any{"sub": "alice", "groups": []string{"devops"}, "aud": "someone-else"}, nil)
	forged := is.token(map[string]any{"sub": "alice", "groups": []string{"devops"}}, other)

	tests := []struct {
		name, tok, method, path string
		want                    int
	}{
		{"promoter by group reads", alice, "GET", "/v1/projects/demo/stages", http.StatusOK},
		{"promoter by group refreshes", alice, "POST", "/v1/projects/demo/warehouses/app/refresh", http.StatusAccepted},
		{"promoter may not manage tokens", alice, "GET", "/v1/projects/demo/tokens", http.StatusForbidden},
		{"promoter may not read another project", alice, "GET", "/v1/projects/other/stages", http.StatusForbidden},
		{"promoter by email", carol, "POST", "/v1/projects/demo/warehouses/app/refresh", http.StatusAccepted},
		{"viewer by sub reads", reader, "GET", "/v1/projects/demo/freight", http.StatusOK},
		{"viewer may not refresh", reader, "POST", "/v1/projects/demo/warehouses/app/refresh", http.StatusForbidden},
		{"admin by group manages tokens", owner, "GET", "/v1/projects/demo/tokens", http.StatusOK},
		{"admin is not system admin", owner, "GET", "/v1/deadletters", http.StatusForbidden},
		{"no binding", stranger, "GET", "/v1/projects/demo/stages", http.StatusForbidden},
		{"expired", expired, "GET", "/v1/projects/demo/stages", http.StatusUnauthorized},
		{"wrong audience", wrongAud, "GET", "/v1/projects/demo/stages", http.StatusUnauthorized},
		{"signed by another key", forged, "GET", "/v1/projects/demo/stages", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if st, e := h.callAs(tt.tok, tt.method, tt.path, nil, nil); st != tt.want {
				t.Errorf("%s %s: %d %+v, want %d", tt.method, tt.path, st, e, tt.want)
			}
		})
	}
	// Listing projects shows those the claims grant a role in.
	var l struct {
		Items []json.RawMessage `json:"items"`
	}
	if st, _ := h.callAs(stranger, "GET", "/v1/projects", nil, &l); st != http.StatusOK || len(l.Items) != 0 {
		t.Errorf("projects of a stranger: %d %d", st, len(l.Items))
	}
	if st, _ := h.callAs(alice, "GET", "/v1/projects", nil, &l); st != http.StatusOK || len(l.Items) != 1 {
		t.Errorf("projects of alice: %d %d", st, len(l.Items))
	}
	// A project admin by claims applies into its project only.
	if st, e := h.callAs(owner, "POST", "/v1/resources", nil, nil); st != http.StatusBadRequest {
		t.Errorf("empty apply as owner: %d %+v", st, e)
	}
}
