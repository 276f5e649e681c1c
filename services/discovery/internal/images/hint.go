package images

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/model"
)

// Evaluate folds one pushed image (tag, digest optional) into the
// subscription's current references without listing tags. It returns the
// new references, newest first, and whether they changed. A tag the
// subscription's filters reject costs no request; otherwise it costs at
// most one HEAD (no digest given) and, for NewestBuild or a platform, a
// manifest and config blob read — at most two requests but for an index
// resolved for a platform under NewestBuild.
func (c *Client) Evaluate(ctx context.Context, sub model.ImageSubscription, cr *creds.Credentials, current []model.DiscoveredImageReference, tag, digest string) ([]model.DiscoveredImageReference, bool, error) {
	s, err := c.prepare(sub, cr)
	if err != nil {
		return current, false, err
	}
	switch s.sub.ImageSelectionStrategy {
	case model.ImageSelectionStrategyDigest:
		if tag != s.sub.EffectiveConstraint() {
			return current, false, nil
		}
	case model.ImageSelectionStrategySemVer:
		if _, ok := s.filter.Version(tag); !ok {
			return current, false, nil
		}
	default:
		if !s.filter.Allowed(tag) {
			return current, false, nil
		}
	}
	for _, r := range current {
		if r.Tag == tag && digest != "" && r.Digest == digest {
			return current, false, nil // known already
		}
	}
	ref, ok, err := c.resolve(ctx, s, tag, digest)
	if err != nil {
		return current, false, err
	}
	next := slices.DeleteFunc(slices.Clone(current), func(r model.DiscoveredImageReference) bool { return r.Tag == tag })
	if ok {
		next = append(next, ref)
	}
	Order(next, s.sub.ImageSelectionStrategy, s.sub.StrictSemvers)
	next = next[:min(len(next), s.limit)]
	return next, !slices.EqualFunc(next, current, sameRef), nil
}

func sameRef(a, b model.DiscoveredImageReference) bool {
	return a.Tag == b.Tag && a.Digest == b.Digest
}

// Explain turns a registry error into a message a person can act on.
func Explain(err error) string {
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusUnauthorized:
			return "registry answered 401 Unauthorized: add or fix a Secret labelled kargo.akuity.io/cred-type=image for this repository (" + err.Error() + ")"
		case terr.StatusCode == http.StatusForbidden:
			return "registry answered 403 Forbidden: the credentials may not read this repository (" + err.Error() + ")"
		case terr.StatusCode == http.StatusNotFound || hasCode(terr, transport.NameUnknownErrorCode):
			return "repository not found (404): check repoURL (" + err.Error() + ")"
		case hasCode(terr, transport.ManifestUnknownErrorCode):
			return "tag not found: " + err.Error()
		case terr.StatusCode == http.StatusTooManyRequests:
			return "registry rate limit hit (429); lower CARAVAN_REGISTRY_RPS (" + err.Error() + ")"
		case terr.StatusCode >= 500:
			return fmt.Sprintf("registry error %d: %v", terr.StatusCode, err)
		}
	}
	var nerr net.Error
	var operr *net.OpError
	if errors.As(err, &operr) || errors.As(err, &nerr) || strings.Contains(err.Error(), "connection refused") {
		return "registry unreachable: " + err.Error()
	}
	return err.Error()
}

func hasCode(e *transport.Error, code transport.ErrorCode) bool {
	for _, d := range e.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}
