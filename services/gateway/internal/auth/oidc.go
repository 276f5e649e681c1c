package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// OIDC accepts ID tokens (JWTs) of one issuer for one audience, validated
// with go-oidc: signature against the issuer's JWKS, issuer, audience and
// expiry. The issuer's discovery document is fetched on first use and
// again after a failure, so the gateway starts while the issuer is down.
type OIDC struct {
	issuer, audience string
	client           *http.Client

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	failedAt time.Time
}

var _ Authenticator = (*OIDC)(nil)

// NewOIDC returns an OIDC authenticator; client nil means
// http.DefaultClient.
func NewOIDC(issuer, audience string, client *http.Client) *OIDC {
	if client == nil {
		client = http.DefaultClient
	}
	return &OIDC{issuer: issuer, audience: audience, client: client}
}

// errIssuer is returned while the issuer cannot be reached.
var errIssuer = errors.New("oidc issuer unavailable")

func (o *OIDC) get(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.verifier != nil {
		return o.verifier, nil
	}
	if time.Since(o.failedAt) < 5*time.Second {
		return nil, errIssuer
	}
	// The provider keeps this context to fetch keys later: it must outlive
	// the request.
	pctx := oidc.ClientContext(context.WithoutCancel(ctx), o.client)
	dctx, cancel := context.WithTimeout(pctx, 10*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(dctx, o.issuer)
	if err != nil {
		o.failedAt = time.Now()
		return nil, fmt.Errorf("%w: %w", errIssuer, err)
	}
	// NewProvider's context ended with cancel; the key set must use pctx.
	keys := oidc.NewRemoteKeySet(pctx, jwksURL(p))
	o.verifier = oidc.NewVerifier(o.issuer, keys, &oidc.Config{ClientID: o.audience})
	return o.verifier, nil
}

func jwksURL(p *oidc.Provider) string {
	var meta struct {
		JWKS string `json:"jwks_uri"`
	}
	_ = p.Claims(&meta)
	return meta.JWKS
}

// Authenticate implements Authenticator for JWTs.
func (o *OIDC) Authenticate(ctx context.Context, raw string) (Principal, error) {
	v, err := o.get(ctx)
	if err != nil {
		return Principal{}, err
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return Principal{}, fmt.Errorf("%w: claims: %w", ErrUnauthenticated, err)
	}
	name := tok.Subject
	if e, ok := claims["email"].(string); ok && e != "" {
		name = e
	}
	return Principal{Name: "oidc:" + name, Claims: claims}, nil
}

// LooksLikeJWT reports whether token has the three dot-separated parts of
// a compact JWS.
func LooksLikeJWT(token string) bool {
	return strings.Count(token, ".") == 2 && strings.HasPrefix(token, "eyJ")
}

// Chain picks the authenticator for a token by its form: API tokens by
// their prefix, JWTs by OIDC (when configured), anything else is compared
// with the admin token.
type Chain struct {
	Admin  Authenticator
	Tokens Authenticator
	OIDC   Authenticator
}

var _ Authenticator = Chain{}

// Authenticate implements Authenticator.
func (c Chain) Authenticate(ctx context.Context, token string) (Principal, error) {
	switch {
	case token == "":
		return Principal{}, ErrUnauthenticated
	case strings.HasPrefix(token, TokenPrefix) && c.Tokens != nil:
		return c.Tokens.Authenticate(ctx, token)
	case LooksLikeJWT(token) && c.OIDC != nil:
		return c.OIDC.Authenticate(ctx, token)
	case c.Admin != nil:
		return c.Admin.Authenticate(ctx, token)
	}
	return Principal{}, ErrUnauthenticated
}
