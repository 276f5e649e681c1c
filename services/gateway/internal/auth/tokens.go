package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/pkg/state"
)

// TokenPrefix starts every API token: "cvn.<project>.<name>.<secret>", each
// part base64url without padding.
const TokenPrefix = "cvn."

// ErrTokenExists means a token of that name already exists in the project.
var ErrTokenExists = errors.New("token exists")

// ErrTokenNotFound means there is no token of that name in the project.
var ErrTokenNotFound = errors.New("token not found")

// Token is an API token as stored: its secret only as a SHA-256.
type Token struct {
	Name      string    `json:"name"`
	Project   string    `json:"project"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
	CreatedBy string    `json:"createdBy,omitempty"`
	// SHA256 is the hex SHA-256 of the secret part; never shown.
	SHA256 string `json:"sha256,omitempty"`
}

// Tokens keeps API tokens in a KV bucket (state.Tokens), keyed by project
// and name. It is safe for concurrent use.
type Tokens struct {
	kv state.KV
}

var _ Authenticator = (*Tokens)(nil)

// NewTokens returns the token store over kv.
func NewTokens(kv state.KV) *Tokens { return &Tokens{kv: kv} }

// Create stores a new token and returns it with its secret, which is
// never shown again.
func (t *Tokens) Create(ctx context.Context, project, name string, role Role, createdBy string, now time.Time) (Token, string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Token{}, "", fmt.Errorf("generate token: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(secret))
	tok := Token{Name: name, Project: project, Role: role, CreatedAt: now.UTC().Truncate(time.Second), CreatedBy: createdBy, SHA256: hex.EncodeToString(sum[:])}
	if _, err := state.Create(ctx, t.kv, state.Key(project, name), tok); err != nil {
		if errors.Is(err, state.ErrExists) {
			return Token{}, "", fmt.Errorf("token %q: %w", name, ErrTokenExists)
		}
		return Token{}, "", err
	}
	enc := base64.RawURLEncoding.EncodeToString
	bearer := TokenPrefix + enc([]byte(project)) + "." + enc([]byte(name)) + "." + secret
	tok.SHA256 = ""
	return tok, bearer, nil
}

// List returns the project's tokens, without hashes, by name.
func (t *Tokens) List(ctx context.Context, project string) ([]Token, error) {
	items, _, err := state.List[Token](ctx, t.kv, state.Prefix(project), 0, "")
	if err != nil {
		return nil, err
	}
	out := make([]Token, 0, len(items))
	for _, it := range items {
		tok := it.Value
		tok.SHA256 = ""
		out = append(out, tok)
	}
	return out, nil
}

// Delete revokes a token.
func (t *Tokens) Delete(ctx context.Context, project, name string) error {
	key := state.Key(project, name)
	if _, _, err := state.Get[Token](ctx, t.kv, key); err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("token %q: %w", name, ErrTokenNotFound)
		}
		return err
	}
	return state.Delete(ctx, t.kv, key, 0)
}

// Authenticate implements Authenticator for tokens with TokenPrefix.
func (t *Tokens) Authenticate(ctx context.Context, bearer string) (Principal, error) {
	rest, ok := strings.CutPrefix(bearer, TokenPrefix)
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return Principal{}, ErrUnauthenticated
	}
	project, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	name, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	if err1 != nil || err2 != nil || len(project) == 0 || len(name) == 0 {
		return Principal{}, ErrUnauthenticated
	}
	tok, _, err := state.Get[Token](ctx, t.kv, state.Key(string(project), string(name)))
	if errors.Is(err, state.ErrNotFound) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, err
	}
	sum := sha256.Sum256([]byte(parts[2]))
	want, err := hex.DecodeString(tok.SHA256)
	if err != nil || subtle.ConstantTimeCompare(sum[:], want) != 1 || tok.Project != string(project) {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{Name: "token:" + tok.Project + "/" + tok.Name, Project: tok.Project, Role: tok.Role}, nil
}
