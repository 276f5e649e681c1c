package testenv

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// GitHubAppAPI speaks GitHub's REST endpoint "Create an installation
// access token for an app"
// (https://docs.github.com/en/rest/apps/apps#create-an-installation-access-token-for-an-app):
// POST /api/v3/app/installations/{installation_id}/access_tokens (the
// GitHub Enterprise Server prefix; mount it with WithAPI), authenticated by
// a JWT the App's key signs (RS256, iss the client or App ID, at most ten
// minutes long), answered 201 with {"token", "expires_at", ...}. Tokens
// are ghs_token1, ghs_token2, ... and live an hour from Now.
type GitHubAppAPI struct {
	Key          *rsa.PublicKey
	Issuer       string
	Installation string
	// Now is the clock of expires_at (nil: time.Now).
	Now func() time.Time

	calls atomic.Int64
	mu    sync.Mutex
	repos [][]string
}

// Calls is the number of tokens issued.
func (a *GitHubAppAPI) Calls() int { return int(a.calls.Load()) }

// Repositories are the "repositories" each token request asked for.
func (a *GitHubAppAPI) Repositories() [][]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][]string(nil), a.repos...)
}

func (a *GitHubAppAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fail := func(code int, msg string) {
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"message": msg, "documentation_url": "https://docs.github.com/rest"})
	}
	if r.Method != http.MethodPost || r.URL.Path != "/api/v3/app/installations/"+a.Installation+"/access_tokens" {
		fail(http.StatusNotFound, "Not Found")
		return
	}
	jwt, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	claims, err := verifyRS256(jwt, a.Key)
	if !ok || err != nil {
		fail(http.StatusUnauthorized, "A JSON web token could not be decoded")
		return
	}
	if claims["iss"] != a.Issuer {
		fail(http.StatusUnauthorized, "'Issuer' claim ('iss') must be an Integer or a Client ID")
		return
	}
	exp, _ := claims["exp"].(float64)
	iat, _ := claims["iat"].(float64)
	if exp-iat > 600 || exp <= iat {
		fail(http.StatusUnauthorized, "'Expiration time' claim ('exp') is too far in the future")
		return
	}
	var body struct {
		Repositories []string `json:"repositories"`
	}
	if b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20)); len(b) > 0 {
		if err := json.Unmarshal(b, &body); err != nil {
			fail(http.StatusUnprocessableEntity, "Invalid request.")
			return
		}
	}
	a.mu.Lock()
	a.repos = append(a.repos, body.Repositories)
	a.mu.Unlock()
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	n := a.calls.Add(1)
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"token":"ghs_token%d","expires_at":%q,"permissions":{"contents":"write"},"repository_selection":"selected"}`,
		n, now().Add(time.Hour).UTC().Format(time.RFC3339))
}

// verifyRS256 checks a JWT's RS256 signature and returns its claims.
func verifyRS256(jwt string, key *rsa.PublicKey) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("a JWT has 3 parts, not %d", len(parts))
	}
	var header struct {
		Alg string `json:"alg"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(hb, &header) != nil || header.Alg != "RS256" {
		return nil, fmt.Errorf("header %q: not RS256", hb)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], sig); err != nil {
		return nil, err
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var claims map[string]any
	return claims, json.Unmarshal(b, &claims)
}
