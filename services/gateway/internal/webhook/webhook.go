// Package webhook reads the deliveries of Kargo's webhook receivers —
// GitHub, GitLab, Gitea, Bitbucket, Quay, Docker Hub, Harbor, Artifactory,
// generic — and of Caravan's registry receiver (CNCF distribution
// notifications): it checks each sender's signature or token and turns a
// payload into the artifacts it announces. It does no I/O.
package webhook

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // GitHub's legacy X-Hub-Signature is HMAC-SHA1
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"hash"
	"net/http"
	"strings"
)

// Providers, as ProjectConfig.spec.webhookReceivers[] names them.
const (
	GitHub      = "github"
	GitLab      = "gitlab"
	Gitea       = "gitea"
	Bitbucket   = "bitbucket"
	Quay        = "quay"
	DockerHub   = "dockerhub"
	Harbor      = "harbor"
	Artifactory = "artifactory"
	Generic     = "generic"
	Registry    = "registry"
	Azure       = "azure"
)

// Sentinel errors.
var (
	// ErrUnauthorized: the signature or token is missing or wrong.
	ErrUnauthorized = errors.New("webhook signature or token missing or invalid")
	// ErrBadPayload: the body is not the provider's format.
	ErrBadPayload = errors.New("webhook payload malformed")
	// ErrUnknownProvider: no such provider.
	ErrUnknownProvider = errors.New("unknown webhook provider")
)

// SecretKeys are the Secret data keys holding each provider's shared
// secret, as Kargo names them; "secret" is accepted for every provider.
var SecretKeys = map[string][]string{
	GitHub:      {"secret"},
	GitLab:      {"secret-token", "secret"},
	Gitea:       {"secret"},
	Bitbucket:   {"secret"},
	Quay:        {"secret"},
	DockerHub:   {"secret"},
	Harbor:      {"auth-header", "secret"},
	Artifactory: {"secret-token", "secret"},
	Generic:     {"secret"},
	Registry:    {"secret"},
	Azure:       {"secret"},
}

// Path is the receiver's URL path: it holds the SHA-256 of project,
// receiver name and secret, so it cannot be guessed without the secret and
// changes when the secret does.
func Path(project, name, secret string) string {
	sum := sha256.Sum256([]byte(project + "/" + name + "/" + secret))
	return "/webhooks/" + project + "/" + hex.EncodeToString(sum[:])
}

// Verify checks the request's signature or token for provider. Quay, Docker
// Hub and generic senders sign nothing: their secret is the unguessable
// path, checked by the caller.
func Verify(provider, secret string, h http.Header, body []byte) error {
	switch provider {
	case GitHub:
		if sig := h.Get("X-Hub-Signature-256"); sig != "" {
			return checkHMAC(sha256.New, secret, body, strings.TrimPrefix(sig, "sha256="), strings.HasPrefix(sig, "sha256="))
		}
		sig := h.Get("X-Hub-Signature")
		return checkHMAC(sha1.New, secret, body, strings.TrimPrefix(sig, "sha1="), strings.HasPrefix(sig, "sha1="))
	case Gitea:
		sig := h.Get("X-Gitea-Signature")
		if sig == "" {
			sig = h.Get("X-Gogs-Signature")
		}
		if sig == "" {
			sig = strings.TrimPrefix(h.Get("X-Hub-Signature-256"), "sha256=")
		}
		return checkHMAC(sha256.New, secret, body, sig, true)
	case Bitbucket:
		sig := h.Get("X-Hub-Signature")
		return checkHMAC(sha256.New, secret, body, strings.TrimPrefix(sig, "sha256="), strings.HasPrefix(sig, "sha256="))
	case GitLab:
		return checkToken(secret, h.Get("X-Gitlab-Token"))
	case Harbor:
		return checkToken(secret, h.Get("Authorization"))
	case Artifactory:
		got := h.Get("X-Jfrog-Event-Auth")
		if checkToken(secret, got) == nil {
			return nil
		}
		return checkHMAC(sha256.New, secret, body, got, true)
	case Registry:
		scheme, tok, _ := strings.Cut(h.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return ErrUnauthorized
		}
		return checkToken(secret, strings.TrimSpace(tok))
	case Quay, DockerHub, Generic, Azure:
		return nil
	}
	return ErrUnknownProvider
}

func checkHMAC(h func() hash.Hash, secret string, body []byte, sigHex string, ok bool) error {
	if !ok || secret == "" || sigHex == "" {
		return ErrUnauthorized
	}
	got, err := hex.DecodeString(sigHex)
	if err != nil {
		return ErrUnauthorized
	}
	m := hmac.New(h, []byte(secret))
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return ErrUnauthorized
	}
	return nil
}

func checkToken(secret, got string) error {
	if secret == "" || got == "" {
		return ErrUnauthorized
	}
	a, b := sha256.Sum256([]byte(secret)), sha256.Sum256([]byte(got))
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return ErrUnauthorized
	}
	return nil
}

// Sign returns the hex HMAC-SHA256 of body with secret, as GitHub (after
// "sha256="), Gitea and Bitbucket send it.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}
