// Package creds finds the credentials for a repository, for discovery (a
// Warehouse subscription) and promotion steps alike: a project Secret
// labelled kargo.akuity.io/cred-type with the repository's type, whose
// repoURL matches the repository exactly or, failing that, as a regular
// expression when repoURLIsRegex is "true"; when the project has none, the
// same search in the shared-resources project (Kargo's rules).
//
// A Secret holds one of the kinds of credentials Kargo documents:
// username/password, an SSH private key (sshPrivateKey, git only), a GitHub
// App (githubAppClientID or githubAppID, githubAppPrivateKey,
// githubAppInstallationID; git only), AWS keys for ECR (awsAccessKeyID,
// awsSecretAccessKey, awsRegion), a GCP service account key for Artifact
// Registry (gcpServiceAccountKey), and, beyond Kargo, a Docker config
// (.dockerconfigjson). A Finder exchanges the token kinds for short-lived
// tokens and caches them until shortly before they expire, so that every
// caller gets a user name and password (or an SSH key).
package creds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Keys of a credentials Secret's data.
const (
	KeyRepoURL                 = "repoURL"
	KeyRepoURLIsRegex          = "repoURLIsRegex"
	KeyUsername                = "username"
	KeyPassword                = "password"
	KeySSHPrivateKey           = "sshPrivateKey"
	KeyGitHubAppID             = "githubAppID"
	KeyGitHubAppClientID       = "githubAppClientID"
	KeyGitHubAppPrivateKey     = "githubAppPrivateKey"
	KeyGitHubAppInstallationID = "githubAppInstallationID"
	KeyAWSRegion               = "awsRegion"
	KeyAWSAccessKeyID          = "awsAccessKeyID"
	KeyAWSSecretAccessKey      = "awsSecretAccessKey"
	KeyGCPServiceAccountKey    = "gcpServiceAccountKey"
	KeyDockerConfigJSON        = ".dockerconfigjson"
)

// AnnotationGitHubTokenScopes limits, on a shared GitHub App Secret, the
// repositories each project may get tokens for: a JSON object of project
// name to repository names.
const AnnotationGitHubTokenScopes = "kargo.akuity.io/github-token-scopes"

// Credentials are what a client presents to a repository: a user name and
// password (or token), or an SSH private key.
type Credentials struct {
	Username string
	Password string
	// SSHPrivateKey is a PEM-encoded private key (git over SSH).
	SSHPrivateKey []byte
	// HostKeyCallback checks SSH host keys (the configured known hosts;
	// nil: every host is refused).
	HostKeyCallback ssh.HostKeyCallback
	// Secret is where they came from, "project/name" (error messages).
	Secret string

	// id identifies credentials whose password changes (exchanged tokens)
	// by the Secret's content instead.
	id string
}

// Key identifies the credentials in caches and mirror names; only ever
// hashed, never shown. Exchanged tokens share the key of their Secret.
func (c *Credentials) Key() string {
	if c == nil {
		return ""
	}
	if c.id != "" {
		return c.id
	}
	if len(c.SSHPrivateKey) > 0 {
		return "ssh\x00" + c.Username + "\x00" + string(c.SSHPrivateKey)
	}
	return c.Username + "\x00" + c.Password
}

// Secrets are the values a redactor should hide.
func (c *Credentials) Secrets() []string {
	if c == nil {
		return nil
	}
	var out []string
	if c.Password != "" {
		out = append(out, c.Password)
	}
	if len(c.SSHPrivateKey) > 0 {
		out = append(out, string(c.SSHPrivateKey))
	}
	return out
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

// Options configure a Finder. Every field is optional.
type Options struct {
	// HTTPClient makes token exchanges (GitHub, GCP); nil: a client with a
	// 30s timeout. Pass the egress policy's.
	HTTPClient *http.Client
	// KnownHosts checks the host keys of SSH servers (see KnownHosts);
	// nil: every SSH host is refused.
	KnownHosts ssh.HostKeyCallback
	// ECREndpoint replaces the ECR API endpoint of every region (tests).
	ECREndpoint string
	// Now is the clock of token expiry (nil: time.Now).
	Now func() time.Time
	// Ambient is the process's cloud identity, for cloud registries no
	// Secret matches (zero: none).
	Ambient Ambient
}

// Finder finds credentials and exchanges token kinds, caching tokens. It
// is safe for concurrent use.
type Finder struct {
	l      Lister
	o      Options
	tokens *tokenCache
}

// NewFinder returns a Finder reading Secrets from l.
func NewFinder(l Lister, o Options) *Finder {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Finder{l: l, o: o, tokens: newTokenCache(o.Now)}
}

// Normalizer is the canonical form of credType's repository URLs.
func Normalizer(credType string) func(string) string {
	switch credType {
	case model.CredTypeGit:
		return model.NormalizeGitURL
	case model.CredTypeImage:
		return model.NormalizeImageURL
	case model.CredTypeHelm:
		return model.NormalizeChartURL
	}
	return strings.TrimSpace
}

// Find returns the credentials of type credType for repoURL in project, or
// nil when no Secret matches and no ambient identity applies (anonymous
// access). Token kinds are exchanged
// (or taken from the cache). An error names the Secret and its field.
func (f *Finder) Find(ctx context.Context, project, credType, repoURL string) (*Credentials, error) {
	if f == nil || f.l == nil {
		return nil, nil
	}
	for _, p := range []string{project, model.SharedResourcesProject} {
		secrets, err := f.l.Secrets(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("list secrets of project %q: %w", p, err)
		}
		if s := MatchSecret(secrets, credType, repoURL, Normalizer(credType)); s != nil {
			c, err := f.resolve(ctx, project, p, s, credType, repoURL)
			if err != nil {
				return nil, fmt.Errorf("%s credentials of secret %s/%s: %w", credType, p, s.Name, err)
			}
			return c, nil
		}
		if p == model.SharedResourcesProject {
			break
		}
	}
	c, err := f.ambient(ctx, project, credType, repoURL)
	if err != nil {
		return nil, fmt.Errorf("%s credentials for %s: %w", credType, repoURL, err)
	}
	return c, nil
}

// Find is Finder.Find without token exchanges' cache, for one-off callers.
func Find(ctx context.Context, l Lister, project, credType, repoURL string) (*Credentials, error) {
	return NewFinder(l, Options{}).Find(ctx, project, credType, repoURL)
}

// Match picks the credentials for repoURL among secrets, as MatchSecret
// does, for the kinds that need no exchange (username/password, SSH key);
// nil when none matches or the Secret is of another kind.
func Match(secrets []*model.Secret, credType, repoURL string, normalize func(string) string) *Credentials {
	s := MatchSecret(secrets, credType, repoURL, normalize)
	if s == nil {
		return nil
	}
	c, err := (&Finder{}).static(s, s.Namespace)
	if err != nil {
		return nil
	}
	return c
}

// MatchSecret picks the Secret for repoURL among secrets: the first of
// credType (by name) whose repoURL equals repoURL, else the first whose
// repoURL, as a regular expression, matches it.
func MatchSecret(secrets []*model.Secret, credType, repoURL string, normalize func(string) string) *model.Secret {
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
		if u, ok := s.Value(KeyRepoURL); ok && normalize(string(u)) == want {
			return s
		}
	}
	for _, s := range typed {
		if !isRegex(s) {
			continue
		}
		u, ok := s.Value(KeyRepoURL)
		if !ok {
			continue
		}
		re, err := regexp.Compile(string(u))
		if err != nil {
			continue
		}
		if re.MatchString(repoURL) || re.MatchString(want) {
			return s
		}
	}
	return nil
}

func isRegex(s *model.Secret) bool {
	v, _ := s.Value(KeyRepoURLIsRegex)
	return strings.EqualFold(strings.TrimSpace(string(v)), "true")
}

// value is a trimmed field of s ("" when absent).
func value(s *model.Secret, key string) string {
	v, _ := s.Value(key)
	return strings.TrimSpace(string(v))
}

// resolve turns the Secret found in secretProject into credentials for
// project's repoURL.
func (f *Finder) resolve(ctx context.Context, project, secretProject string, s *model.Secret, credType, repoURL string) (*Credentials, error) {
	c, err := f.exchange(ctx, project, secretProject, s, credType, repoURL)
	if c != nil {
		c.Secret = secretProject + "/" + s.Name
	}
	return c, err
}

func (f *Finder) exchange(ctx context.Context, project, secretProject string, s *model.Secret, credType, repoURL string) (*Credentials, error) {
	switch {
	case value(s, KeyGitHubAppPrivateKey) != "" || value(s, KeyGitHubAppID) != "" || value(s, KeyGitHubAppClientID) != "":
		if credType != model.CredTypeGit {
			return nil, fmt.Errorf("field %s: GitHub App credentials are for git repositories only", KeyGitHubAppPrivateKey)
		}
		return f.gitHubApp(ctx, project, secretProject, s, repoURL)
	case value(s, KeyAWSAccessKeyID) != "" || value(s, KeyAWSSecretAccessKey) != "":
		if credType == model.CredTypeGit {
			return nil, fmt.Errorf("field %s: ECR credentials are for image and chart repositories only", KeyAWSAccessKeyID)
		}
		return f.ecr(ctx, s, repoURL)
	case value(s, KeyGCPServiceAccountKey) != "":
		if credType == model.CredTypeGit {
			return nil, fmt.Errorf("field %s: Artifact Registry credentials are for image and chart repositories only", KeyGCPServiceAccountKey)
		}
		return f.gar(ctx, s)
	case value(s, KeyDockerConfigJSON) != "":
		if credType == model.CredTypeGit {
			return nil, fmt.Errorf("field %s: a Docker config is for image and chart repositories only", KeyDockerConfigJSON)
		}
		return dockerConfig(s, repoURL)
	}
	return f.static(s, secretProject)
}

// static reads username/password or sshPrivateKey credentials.
func (f *Finder) static(s *model.Secret, secretProject string) (*Credentials, error) {
	c := &Credentials{Secret: secretProject + "/" + s.Name}
	if k, ok := s.Value(KeySSHPrivateKey); ok && strings.TrimSpace(string(k)) != "" {
		if _, err := ssh.ParseRawPrivateKey(k); err != nil {
			return nil, fmt.Errorf("field %s: not a PEM-encoded SSH private key without passphrase: %w", KeySSHPrivateKey, err)
		}
		c.SSHPrivateKey = k
		c.Username = value(s, KeyUsername)
		c.HostKeyCallback = f.o.KnownHosts
		return c, nil
	}
	u, _ := s.Value(KeyUsername)
	p, _ := s.Value(KeyPassword)
	c.Username, c.Password = string(u), string(p)
	return c, nil
}

// secretID is the identity of a Secret's content (hashed: it holds keys).
func secretID(kind string, s *model.Secret, keys ...string) string {
	h := sha256.New()
	h.Write([]byte(kind))
	for _, k := range keys {
		v, _ := s.Value(k)
		fmt.Fprintf(h, "\x00%d:%s", len(v), v)
	}
	return kind + ":" + hex.EncodeToString(h.Sum(nil))
}
