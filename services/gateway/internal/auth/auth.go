// Package auth authenticates API callers by bearer token and says what
// they may do. An Authenticator turns a token into a Principal: the system
// admin's static token, API tokens bound to one project and one role
// (Tokens), or OIDC ID tokens whose claims map to roles through a
// project's ServiceAccounts and RoleBindings as Kargo does (OIDC, RoleFor).
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
)

// ErrUnauthenticated means the token is missing or not valid.
var ErrUnauthenticated = errors.New("missing or invalid bearer token")

// Principal is who a request acts as.
type Principal struct {
	// Name identifies the caller in logs and audit records.
	Name string
	// Admin may do anything in every project.
	Admin bool
	// Project and Role bind an API token to one project.
	Project string
	Role    Role
	// Claims are an OIDC caller's ID token claims (nil otherwise); the
	// caller's role in a project comes from RoleFor.
	Claims map[string]any
}

// Authenticator checks a bearer token. It returns ErrUnauthenticated (or an
// error wrapping it) for a token it does not accept; any other error means it
// could not decide (the caller answers 5xx). Implementations must be safe for
// concurrent use.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (Principal, error)
}

// AdminName is the principal name of the system admin.
const AdminName = "admin"

// StaticToken accepts one fixed token as the system admin.
type StaticToken struct {
	sum [sha256.Size]byte
}

var _ Authenticator = (*StaticToken)(nil)

// NewStaticToken returns an Authenticator accepting token. An empty token
// accepts nothing.
func NewStaticToken(token string) *StaticToken {
	if token == "" {
		return &StaticToken{}
	}
	return &StaticToken{sum: sha256.Sum256([]byte(token))}
}

// Authenticate implements Authenticator. The comparison takes the same time
// whatever the token (both sides are hashed first, so length leaks nothing).
func (s *StaticToken) Authenticate(_ context.Context, token string) (Principal, error) {
	var zero [sha256.Size]byte
	got := sha256.Sum256([]byte(token))
	if token == "" || s.sum == zero || subtle.ConstantTimeCompare(got[:], s.sum[:]) != 1 {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{Name: AdminName, Admin: true}, nil
}

// BearerToken returns the token of the request's Authorization header
// ("Bearer <token>", scheme case-insensitive), or "" when there is none.
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal stored by WithPrincipal.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
