// Package creds finds the credentials for a repository, for discovery (a
// Warehouse subscription) and promotion steps alike: a project Secret
// labelled kargo.akuity.io/cred-type with the repository's type, whose
// repoURL matches the repository exactly or, failing that, as a regular
// expression when repoURLIsRegex is "true"; when the project has none, the
// same search in the shared-resources project (Kargo's rules).
package creds

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Credentials are a user name and password (or token) for a repository.
type Credentials struct {
	Username string
	Password string
}

// Lister lists a project's Secrets.
type Lister interface {
	Secrets(ctx context.Context, project string) ([]*model.Secret, error)
}

// Store lists Secrets from the state store.
type Store struct{ *state.Store }

// Secrets implements Lister.
func (s Store) Secrets(ctx context.Context, project string) ([]*model.Secret, error) {
	return state.ListAll[*model.Secret](ctx, s.Store, project, model.KindSecret)
}

// Find returns the credentials of type credType for repoURL in project, or
// nil when no Secret matches (anonymous access). normalize canonicalises
// repository URLs before an exact comparison (nil: compare as written).
func Find(ctx context.Context, l Lister, project, credType, repoURL string, normalize func(string) string) (*Credentials, error) {
	if l == nil {
		return nil, nil
	}
	for _, p := range []string{project, model.SharedResourcesProject} {
		secrets, err := l.Secrets(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("list secrets of project %q: %w", p, err)
		}
		if c := Match(secrets, credType, repoURL, normalize); c != nil {
			return c, nil
		}
		if p == model.SharedResourcesProject {
			break
		}
	}
	return nil, nil
}

// Match picks the credentials for repoURL among secrets: the first Secret of
// credType (by name) whose repoURL equals repoURL, else the first whose
// repoURL, as a regular expression, matches it.
func Match(secrets []*model.Secret, credType, repoURL string, normalize func(string) string) *Credentials {
	if normalize == nil {
		normalize = strings.TrimSpace
	}
	var typed []*model.Secret
	for _, s := range secrets {
		if s.Labels[model.LabelCredType] == credType {
			typed = append(typed, s)
		}
	}
	slices.SortFunc(typed, func(a, b *model.Secret) int { return strings.Compare(a.Name, b.Name) })
	want := normalize(repoURL)
	for _, s := range typed {
		if isRegex(s) {
			continue
		}
		if u, ok := s.Value("repoURL"); ok && normalize(string(u)) == want {
			return credentialsOf(s)
		}
	}
	for _, s := range typed {
		if !isRegex(s) {
			continue
		}
		u, ok := s.Value("repoURL")
		if !ok {
			continue
		}
		re, err := regexp.Compile(string(u))
		if err != nil {
			continue
		}
		if re.MatchString(repoURL) || re.MatchString(want) {
			return credentialsOf(s)
		}
	}
	return nil
}

func isRegex(s *model.Secret) bool {
	v, _ := s.Value("repoURLIsRegex")
	return strings.EqualFold(strings.TrimSpace(string(v)), "true")
}

func credentialsOf(s *model.Secret) *Credentials {
	u, _ := s.Value("username")
	p, _ := s.Value("password")
	return &Credentials{Username: string(u), Password: string(p)}
}

// Key identifies the credentials in caches (never logged; the password is
// hashed by the caller's map only in memory).
func (c *Credentials) Key() string {
	if c == nil {
		return ""
	}
	return c.Username + "\x00" + c.Password
}
