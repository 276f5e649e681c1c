package creds

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// gitHubTokenUser is the user name of installation tokens over HTTPS.
const gitHubTokenUser = "x-access-token"

// gitHubApp exchanges a GitHub App's key for an installation access token
// (POST /app/installations/{installation_id}/access_tokens, authenticated
// with a JWT the App's key signs), cached until shortly before it expires.
func (f *Finder) gitHubApp(ctx context.Context, project, secretProject string, s *model.Secret, repoURL string) (*Credentials, error) {
	issuer := value(s, KeyGitHubAppClientID)
	if issuer == "" {
		issuer = value(s, KeyGitHubAppID)
	}
	if issuer == "" {
		return nil, fmt.Errorf("field %s (or %s): missing", KeyGitHubAppClientID, KeyGitHubAppID)
	}
	installation := value(s, KeyGitHubAppInstallationID)
	if installation == "" {
		return nil, fmt.Errorf("field %s: missing", KeyGitHubAppInstallationID)
	}
	for _, r := range installation {
		if r < '0' || r > '9' {
			return nil, fmt.Errorf("field %s: %q is not a number", KeyGitHubAppInstallationID, installation)
		}
	}
	pemKey, _ := s.Value(KeyGitHubAppPrivateKey)
	key, err := parseRSAKey(pemKey)
	if err != nil {
		return nil, fmt.Errorf("field %s: %w", KeyGitHubAppPrivateKey, err)
	}
	api, repo, err := gitHubAPI(repoURL)
	if err != nil {
		return nil, err
	}
	var scope []string
	if secretProject == model.SharedResourcesProject && s.Annotations[AnnotationGitHubTokenScopes] != "" {
		var scopes map[string][]string
		if err := json.Unmarshal([]byte(s.Annotations[AnnotationGitHubTokenScopes]), &scopes); err != nil {
			return nil, fmt.Errorf("annotation %s: not a JSON object of project to repository names: %w", AnnotationGitHubTokenScopes, err)
		}
		if !slices.Contains(scopes[project], repo) {
			return nil, fmt.Errorf("annotation %s: project %q may not get tokens for repository %q", AnnotationGitHubTokenScopes, project, repo)
		}
		scope = []string{repo}
	}
	id := secretID("github-app", s, KeyGitHubAppClientID, KeyGitHubAppID, KeyGitHubAppInstallationID, KeyGitHubAppPrivateKey)
	cacheKey := id + "\x00" + api + "\x00" + strings.Join(scope, ",")
	tok, err := f.tokens.get(ctx, cacheKey, func(ctx context.Context) (token, error) {
		return f.installationToken(ctx, api, issuer, installation, key, scope)
	})
	if err != nil {
		return nil, err
	}
	return &Credentials{Username: tok.username, Password: tok.password, Secret: secretProject + "/" + s.Name, id: id}, nil
}

// gitHubAPI is the REST API of the GitHub that hosts repoURL (GitHub
// Enterprise Server's is below /api/v3) and the repository's name.
func gitHubAPI(repoURL string) (api, repo string, err error) {
	u, err := url.Parse(strings.TrimSpace(repoURL))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", "", fmt.Errorf("repoURL %q: GitHub App tokens need an http(s) repository URL", repoURL)
	}
	repo = strings.TrimSuffix(u.Path[strings.LastIndex(u.Path, "/")+1:], ".git")
	if strings.EqualFold(u.Hostname(), "github.com") || strings.EqualFold(u.Hostname(), "www.github.com") {
		return "https://api.github.com", repo, nil
	}
	return u.Scheme + "://" + u.Host + "/api/v3", repo, nil
}

func parseRSAKey(b []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(bytes.TrimSpace(b))
	if block == nil {
		return nil, errors.New("not a PEM-encoded private key")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not an RSA private key (PKCS#1 or PKCS#8)")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA private key")
	}
	return rk, nil
}

// appJWT is the JSON Web Token that authenticates as the App: RS256,
// issued a minute ago (clock drift), expiring in nine minutes (GitHub
// refuses more than ten).
func appJWT(issuer string, key *rsa.PrivateKey, now time.Time) (string, error) {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	claims, err := json.Marshal(map[string]any{"iat": now.Add(-time.Minute).Unix(), "exp": now.Add(9 * time.Minute).Unix(), "iss": issuer})
	if err != nil {
		return "", err
	}
	signing := header + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign GitHub App JWT: %w", err)
	}
	return signing + "." + enc.EncodeToString(sig), nil
}

func (f *Finder) installationToken(ctx context.Context, api, issuer, installation string, key *rsa.PrivateKey, repos []string) (token, error) {
	jwt, err := appJWT(issuer, key, f.o.Now())
	if err != nil {
		return token{}, err
	}
	var body io.Reader = http.NoBody
	if len(repos) > 0 {
		b, _ := json.Marshal(map[string][]string{"repositories": repos})
		body = bytes.NewReader(b)
	}
	endpoint := api + "/app/installations/" + installation + "/access_tokens"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, body)
	if err != nil {
		return token{}, err
	}
	req.Header.Set("Authorization", "Bearer "+jwt)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	if len(repos) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.o.HTTPClient.Do(req)
	if err != nil {
		return token{}, fmt.Errorf("GitHub App installation token: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var msg struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &msg)
		return token{}, fmt.Errorf("GitHub App installation token: POST %s: %s: %s", endpoint, resp.Status, msg.Message)
	}
	var out struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Token == "" {
		return token{}, fmt.Errorf("GitHub App installation token: POST %s: answer without token", endpoint)
	}
	if out.ExpiresAt.IsZero() {
		out.ExpiresAt = f.o.Now().Add(time.Hour)
	}
	return token{username: gitHubTokenUser, password: out.Token, expires: out.ExpiresAt}, nil
}
