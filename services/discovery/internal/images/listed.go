package images

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Some registries (Google's Artifact Registry and Container Registry) send
// each manifest's digest and tags with the tag list:
//
//	{"name": "…", "tags": ["v1", …], "manifest": {"sha256:…": {"tag": ["v1"], …}}}
//
// Such a list tells every tag's current digest in the one request, so a
// refresh needs no HEAD for a tag whose digest it learns there, with or
// without cacheByTag. The distribution API has no such field; its tag lists
// leave the digests to be asked tag by tag.

// listedKey is the context key of the listed digests of one List call.
type listedKey struct{}

// listed holds the tag → digest pairs a tag list sent (empty when the
// registry sends none).
type listed struct {
	mu     sync.Mutex
	digest map[string]string
}

// withListed returns a context whose tag list requests record the digests
// the registry sends with them into the returned listed.
func withListed(ctx context.Context) (context.Context, *listed) {
	l := &listed{digest: map[string]string{}}
	return context.WithValue(ctx, listedKey{}, l), l
}

// get returns tag's digest as the tag list sent it ("" if it did not).
func (l *listed) get(tag string) string {
	if l == nil {
		return ""
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.digest[tag]
}

// record reads the "manifest" map of a tag list body; anything else in the
// body, or a digest that does not parse, is left alone.
func (l *listed) record(body []byte) {
	var list struct {
		Manifest map[string]struct {
			Tag []string `json:"tag"`
		} `json:"manifest"`
	}
	if json.Unmarshal(body, &list) != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for d, m := range list.Manifest {
		if _, err := v1.NewHash(d); err != nil {
			continue
		}
		for _, tag := range m.Tag {
			l.digest[tag] = d
		}
	}
}

// listTransport records the digests tag lists send, for requests whose
// context holds a listed (each page of a paginated list adds its own).
type listTransport struct {
	base http.RoundTripper
}

func (t *listTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	l, _ := req.Context().Value(listedKey{}).(*listed)
	if err != nil || l == nil || resp.StatusCode != http.StatusOK || req.Method != http.MethodGet || !strings.HasSuffix(req.URL.Path, "/tags/list") {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	l.record(body)
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}
