package webhook

import (
	"errors"
	"net/http"
	"testing"
)

// eventHeaders are the headers naming the event, per provider.
var eventHeaders = map[string]string{
	GitHub:    "X-GitHub-Event",
	GitLab:    "X-Gitlab-Event",
	Gitea:     "X-Gitea-Event",
	Bitbucket: "X-Event-Key",
}

// FuzzParse feeds every parser arbitrary bodies and event names: none may
// panic, and an error is always ErrBadPayload. The seed corpus is in
// testdata/fuzz/FuzzParse (payloads in each provider's documented format).
func FuzzParse(f *testing.F) {
	f.Add(GitHub, "push", []byte(`{"ref":"refs/heads/main","after":"abc","repository":{"clone_url":"https://github.com/a/b.git"}}`))
	f.Add(Registry, "", []byte(`{"events":[{"action":"push","target":{"repository":"a","tag":"1","url":"http://h/v2/a/manifests/x"}}]}`))
	f.Fuzz(func(t *testing.T, provider, event string, body []byte) {
		h := http.Header{}
		if k, ok := eventHeaders[provider]; ok {
			h.Set(k, event)
		}
		h.Set("X-Hub-Signature-256", event)
		h.Set("Authorization", event)
		_ = Verify(provider, "secret", h, body)
		d, err := Parse(provider, h, body)
		if err != nil {
			if !errors.Is(err, ErrBadPayload) && !errors.Is(err, ErrUnknownProvider) {
				t.Fatalf("Parse(%s): unexpected error %v", provider, err)
			}
			return
		}
		if d.ID == "" {
			t.Fatalf("Parse(%s): no delivery ID", provider)
		}
		for _, a := range d.Artifacts {
			if len(a.RepoURLs) == 0 || a.Hint.RepoURL != a.RepoURLs[0] {
				t.Fatalf("Parse(%s): artifact %+v", provider, a)
			}
		}
		if _, err := ParseArtifactory(body, event); err != nil && !errors.Is(err, ErrBadPayload) {
			t.Fatalf("ParseArtifactory: %v", err)
		}
	})
}

// FuzzGeneric evaluates generic receiver expressions over arbitrary bodies.
func FuzzGeneric(f *testing.F) {
	f.Add("request.body.ref == 'main'", []byte(`{"ref":"main"}`))
	f.Add("request.header('X-Event') == 'push' && len(request.body.items) > 0", []byte(`{"items":[1]}`))
	f.Fuzz(func(t *testing.T, expression string, body []byte) {
		actions := []map[string]any{{"action": "Refresh", "whenExpression": expression, "targetSelectionCriteria": []any{map[string]any{"kind": "Warehouse", "name": "w"}}}}
		res, err := ParseGeneric(actions, "POST", "/x", http.Header{"X-Event": {"push"}}, body)
		if err != nil {
			t.Fatalf("ParseGeneric: %v", err)
		}
		if res.ID == "" {
			t.Fatal("no ID")
		}
	})
}
