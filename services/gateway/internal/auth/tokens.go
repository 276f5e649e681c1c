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

	"github.com/caravan-cd/caravan/pkg/model"
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
	// ProjectUID is the metadata.uid of the project the token was made
	// in. A token is accepted only while its project has that UID, so a
	// project deleted and created again does not bring old tokens back.
	ProjectUID string `json:"projectUID,omitempty"`
}

// LiveProject is what a token is checked against: the live project's
// metadata.uid and creationTimestamp.
type LiveProject struct {
	UID     string
	Created time.Time
}

// ProjectUIDs returns the live project; ok is false when the project does
// not exist.
type ProjectUIDs func(ctx context.Context, project string) (p LiveProject, ok bool, err error)

// ProjectUIDsOf reads projects from the store.
func ProjectUIDsOf(s *state.Store) ProjectUIDs {
	return func(ctx context.Context, project string) (LiveProject, bool, error) {
		obj, _, err := s.GetObject(ctx, "", model.KindProject, project)
		if errors.Is(err, state.ErrNotFound) {
			return LiveProject{}, false, nil
		}
		if err != nil {
			return LiveProject{}, false, err
		}
		meta := obj.GetObjectMeta()
		p := LiveProject{UID: meta.UID}
		if meta.CreationTimestamp != nil {
			p.Created = meta.CreationTimestamp.Time
		}
		return p, true, nil
	}
}

// ErrNoProject means the token's project does not exist.
var ErrNoProject = errors.New("project not found")

// Tokens keeps API tokens in a KV bucket (state.Tokens), keyed by project
// and name. It is safe for concurrent use.
type Tokens struct {
	kv       state.KV
	projects ProjectUIDs
}

var _ Authenticator = (*Tokens)(nil)

// NewTokens returns the token store over kv; projects tells the live
// project's UID, which a token must carry to be accepted.
func NewTokens(kv state.KV, projects ProjectUIDs) *Tokens { return &Tokens{kv: kv, projects: projects} }

// Create stores a new token and returns it with its secret, which is
// never shown again.
func (t *Tokens) Create(ctx context.Context, project, name string, role Role, createdBy string, now time.Time) (Token, string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Token{}, "", fmt.Errorf("generate token: %w", err)
	}
	live, ok, err := t.projects(ctx, project)
	if err != nil {
		return Token{}, "", err
	}
	if !ok {
		return Token{}, "", fmt.Errorf("project %q: %w", project, ErrNoProject)
	}
	secret := base64.RawURLEncoding.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(secret))
	tok := Token{Name: name, Project: project, Role: role, CreatedAt: now.UTC().Truncate(time.Second), CreatedBy: createdBy, SHA256: hex.EncodeToString(sum[:]), ProjectUID: live.UID}
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
	if err := t.sameProject(ctx, tok); err != nil {
		return Principal{}, err
	}
	return Principal{Name: "token:" + tok.Project + "/" + tok.Name, Project: tok.Project, Role: tok.Role}, nil
}

// sameProject checks that the token's project still exists and is the one
// the token was made in. A token made before tokens carried the UID is
// bound to the live project's UID at its first use, unless it is older
// than the project (it was made in an earlier project of that name).
func (t *Tokens) sameProject(ctx context.Context, tok Token) error {
	live, ok, err := t.projects(ctx, tok.Project)
	switch {
	case err != nil:
		return err
	case !ok:
		return ErrUnauthenticated
	case tok.ProjectUID == "" && live.UID != "":
		if tok.CreatedAt.Before(live.Created.Truncate(time.Second)) {
			return ErrUnauthenticated
		}
		_, _, err := state.Update(ctx, t.kv, state.Key(tok.Project, tok.Name), func(cur Token, exists bool) (Token, error) {
			if !exists || cur.SHA256 != tok.SHA256 || cur.ProjectUID != "" {
				return cur, state.ErrNoChange
			}
			cur.ProjectUID = live.UID
			return cur, nil
		})
		return err
	case tok.ProjectUID != live.UID:
		return ErrUnauthenticated
	}
	return nil
}
