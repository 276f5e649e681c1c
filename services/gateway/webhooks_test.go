package gateway_test

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // GitHub's legacy signature
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/services/gateway"
	"github.com/caravan-cd/caravan/services/gateway/internal/webhook"
)

const hookSecret = "shh-webhook-secret"

// receivers applies the webhook fixtures and returns each receiver's path.
func (h *harness) receivers() map[string]string {
	h.t.Helper()
	h.mustApply(readFile(h.t, "testdata/pipeline.yaml"))
	h.mustApply(readFile(h.t, "testdata/webhooks.yaml"))
	var pc model.ProjectConfig
	if st := h.get("/v1/projects/demo/projectconfig", &pc); st != http.StatusOK {
		h.t.Fatalf("GET projectconfig: %d", st)
	}
	paths := map[string]string{}
	for _, r := range pc.Status.WebhookReceivers {
		paths[r.Name] = r.Path
		if r.Path != "" && r.URL != "https://caravan.example.com"+r.Path {
			h.t.Errorf("receiver %s: url %q, path %q", r.Name, r.URL, r.Path)
		}
	}
	return paths
}

func (h *harness) deliver(path string, hdr map[string]string, body []byte) (int, map[string]any) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(string(body)))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	h.checkContract(req, resp.StatusCode, resp.Header, b)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

func hmacSHA1(secret string, body []byte) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func TestWebhookReceiverPaths(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	paths := h.receivers()
	if _, b, _ := h.do("GET", "/v1/projects/demo/projectconfig", token, "", nil); strings.Contains(string(b), hookSecret) {
		t.Errorf("the receiver secret shows in the ProjectConfig: %s", b)
	}
	if len(paths) != 13 || paths["missing"] != "" {
		t.Fatalf("receivers: %v", paths)
	}
	if want := webhook.Path("demo", "gh", hookSecret); paths["gh"] != want {
		t.Errorf("gh path %s, want %s", paths["gh"], want)
	}
	seen := map[string]bool{}
	for name, p := range paths {
		if p != "" && seen[p] {
			t.Errorf("receiver %s shares its path", name)
		}
		seen[p] = true
	}
	// Changing the secret changes the path.
	h.mustApply([]byte("apiVersion: v1\nkind: Secret\nmetadata: {name: wh, namespace: demo}\nstringData: {secret: other}\n"))
	var pc model.ProjectConfig
	h.get("/v1/projects/demo/projectconfig", &pc)
	if pc.Status.WebhookReceivers[0].Path == paths["gh"] {
		t.Error("path unchanged after a new secret")
	}
	if st, _ := h.deliver(paths["gh"], map[string]string{"X-GitHub-Event": "ping"}, []byte(`{}`)); st != http.StatusNotFound {
		t.Errorf("old path after a new secret: %d, want 404", st)
	}
}

func TestWebhooks(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	paths := h.receivers()
	wait := collectEvents(t, h.nc)
	fixture := func(name string) []byte { return readFile(t, "testdata/webhooks/"+name) }
	gh := func(event, id string, body []byte) map[string]string {
		return map[string]string{"X-GitHub-Event": event, "X-GitHub-Delivery": id, "X-Hub-Signature-256": "sha256=" + webhook.Sign(hookSecret, body)}
	}
	unknownRepo := func(b []byte) []byte {
		s := strings.NewReplacer("example/app", "nobody/else", "team/api", "team/none", "library/app", "library/none", "docker-local", "docker-none").Replace(string(b))
		return []byte(s)
	}

	type delivery struct {
		name     string
		receiver string
		headers  func(body []byte) map[string]string
		body     []byte
		status   int
		refresh  []string // warehouses refreshed, in order
		hint     events.ArtifactHint
		prs      int // PullRequestClosed events
	}
	pushBody := fixture("github-push.json")
	tests := []delivery{
		{name: "github push", receiver: "gh", body: pushBody, headers: func(b []byte) map[string]string { return gh("push", "d-1", b) }, status: 202, refresh: []string{"src"},
			hint: events.ArtifactHint{RepoURL: "https://github.com/example/app.git", Branch: "main", Commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", Paths: []string{"README.md", "docs/new.md"}}},
		{name: "github push replayed", receiver: "gh", body: pushBody, headers: func(b []byte) map[string]string { return gh("push", "d-1", b) }, status: 200},
		{name: "github push legacy sha1", receiver: "gh", body: pushBody, headers: func(b []byte) map[string]string {
			return map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-2", "X-Hub-Signature": "sha1=" + hmacSHA1(hookSecret, b)}
		}, status: 202, refresh: []string{"src"}},
		{name: "github forged", receiver: "gh", body: pushBody, headers: func(b []byte) map[string]string {
			return map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-3", "X-Hub-Signature-256": "sha256=" + webhook.Sign("wrong", b)}
		}, status: 401},
		{name: "github unsigned", receiver: "gh", body: pushBody, headers: func([]byte) map[string]string { return map[string]string{"X-GitHub-Event": "push"} }, status: 401},
		{name: "github ping", receiver: "gh", body: []byte(`{"zen":"Keep it logically awesome.","hook_id":1}`), headers: func(b []byte) map[string]string { return gh("ping", "d-4", b) }, status: 200},
		{name: "github wrong event", receiver: "gh", body: []byte(`{"action":"opened"}`), headers: func(b []byte) map[string]string { return gh("issues", "d-5", b) }, status: 200},
		{name: "github unknown repo", receiver: "gh", body: unknownRepo(pushBody), headers: func(b []byte) map[string]string { return gh("push", "d-6", b) }, status: 202},
		{name: "github package", receiver: "gh", body: fixture("github-package.json"), headers: func(b []byte) map[string]string { return gh("package", "d-7", b) }, status: 202, refresh: []string{"app"},
			hint: events.ArtifactHint{RepoURL: "ghcr.io/example/app", Tag: "1.2.0", Digest: "sha256:3b7e4ad9d6b6ad8e1c1f3b0e4f0c6a2e4d1b2c3a4f5e6d7c8b9a0f1e2d3c4b5a"}},
		{name: "github registry_package", receiver: "gh", body: []byte(strings.Replace(string(fixture("github-package.json")), `"package":`, `"registry_package":`, 1)), headers: func(b []byte) map[string]string { return gh("registry_package", "d-8", b) }, status: 202, refresh: []string{"app"}},
		{name: "github merged pull request", receiver: "gh", body: fixture("github-pull-request.json"), headers: func(b []byte) map[string]string { return gh("pull_request", "d-9", b) }, status: 202, refresh: []string{"src"}, prs: 1,
			hint: events.ArtifactHint{RepoURL: "https://github.com/example/app.git", Branch: "main", Commit: "9c0f1d2e3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d"}},
		{name: "github closed pull request", receiver: "gh", body: []byte(strings.Replace(string(fixture("github-pull-request.json")), `"merged":true`, `"merged":false`, 1)), headers: func(b []byte) map[string]string { return gh("pull_request", "d-11", b) }, status: 202, prs: 1},
		{name: "github malformed", receiver: "gh", body: []byte(`{"ref":`), headers: func(b []byte) map[string]string { return gh("push", "d-10", b) }, status: 400},

		{name: "gitlab push", receiver: "gl", body: fixture("gitlab-push.json"), headers: func([]byte) map[string]string {
			return map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": hookSecret, "X-Gitlab-Event-UUID": "g-1"}
		}, status: 202, refresh: []string{"gl"}, hint: events.ArtifactHint{RepoURL: "https://gitlab.com/example/app.git", Branch: "main", Commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", Paths: []string{"CHANGELOG", "app/controllers/application_controller.rb"}}},
		{name: "gitlab tag push", receiver: "gl", body: fixture("gitlab-tag-push.json"), headers: func([]byte) map[string]string {
			return map[string]string{"X-Gitlab-Event": "Tag Push Hook", "X-Gitlab-Token": hookSecret, "X-Gitlab-Event-UUID": "g-2"}
		}, status: 202, refresh: []string{"gl"}, hint: events.ArtifactHint{RepoURL: "https://gitlab.com/example/app.git", Tag: "v1.0.0", Commit: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"}},
		{name: "gitlab forged", receiver: "gl", body: fixture("gitlab-push.json"), headers: func([]byte) map[string]string {
			return map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "guess"}
		}, status: 401},
		{name: "gitlab wrong event", receiver: "gl", body: []byte(`{"object_kind":"issue"}`), headers: func([]byte) map[string]string {
			return map[string]string{"X-Gitlab-Event": "Issue Hook", "X-Gitlab-Token": hookSecret}
		}, status: 200},
		{name: "gitlab unknown repo", receiver: "gl", body: unknownRepo(fixture("gitlab-push.json")), headers: func([]byte) map[string]string {
			return map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": hookSecret, "X-Gitlab-Event-UUID": "g-3"}
		}, status: 202},

		{name: "gitea push", receiver: "tea", body: fixture("gitea-push.json"), headers: func(b []byte) map[string]string {
			return map[string]string{"X-Gitea-Event": "push", "X-Gitea-Delivery": "t-1", "X-Gitea-Signature": webhook.Sign(hookSecret, b)}
		}, status: 202, refresh: []string{"tea"}, hint: events.ArtifactHint{RepoURL: "https://gitea.example.com/example/app.git", Branch: "main", Commit: "bffeb74224043ba2feb48d137756c8a9331c449a", Paths: []string{"charts/values.yaml"}}},
		{name: "gitea forged", receiver: "tea", body: fixture("gitea-push.json"), headers: func(b []byte) map[string]string {
			return map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": webhook.Sign("nope", b)}
		}, status: 401},
		{name: "gitea wrong event", receiver: "tea", body: []byte(`{}`), headers: func(b []byte) map[string]string {
			return map[string]string{"X-Gitea-Event": "issues", "X-Gitea-Signature": webhook.Sign(hookSecret, b)}
		}, status: 200},
		{name: "gitea unknown repo", receiver: "tea", body: unknownRepo(fixture("gitea-push.json")), headers: func(b []byte) map[string]string {
			return map[string]string{"X-Gitea-Event": "push", "X-Gitea-Delivery": "t-2", "X-Gitea-Signature": webhook.Sign(hookSecret, b)}
		}, status: 202},

		{name: "bitbucket push", receiver: "bb", body: fixture("bitbucket-push.json"), headers: func(b []byte) map[string]string {
			return map[string]string{"X-Event-Key": "repo:push", "X-Request-UUID": "b-1", "X-Hub-Signature": "sha256=" + webhook.Sign(hookSecret, b)}
		}, status: 202, refresh: []string{"bb"}, hint: events.ArtifactHint{RepoURL: "https://bitbucket.org/example/app", Tag: "v2.0.0", Commit: "709d658dc5b6d6afcd46049c2f332ee3f515a67d"}},
		{name: "bitbucket forged", receiver: "bb", body: fixture("bitbucket-push.json"), headers: func([]byte) map[string]string {
			return map[string]string{"X-Event-Key": "repo:push", "X-Hub-Signature": "sha256=00"}
		}, status: 401},
		{name: "bitbucket wrong event", receiver: "bb", body: []byte(`{}`), headers: func(b []byte) map[string]string {
			return map[string]string{"X-Event-Key": "issue:created", "X-Hub-Signature": "sha256=" + webhook.Sign(hookSecret, b)}
		}, status: 200},
		{name: "bitbucket unknown repo", receiver: "bb", body: unknownRepo(fixture("bitbucket-push.json")), headers: func(b []byte) map[string]string {
			return map[string]string{"X-Event-Key": "repo:push", "X-Request-UUID": "b-2", "X-Hub-Signature": "sha256=" + webhook.Sign(hookSecret, b)}
		}, status: 202},

		{name: "quay push", receiver: "quay", body: fixture("quay.json"), headers: func([]byte) map[string]string { return nil }, status: 202, refresh: []string{"quay"},
			hint: events.ArtifactHint{RepoURL: "quay.io/example/app", Tag: "1.4.0"}},
		{name: "quay unknown repo", receiver: "quay", body: unknownRepo(fixture("quay.json")), headers: func([]byte) map[string]string { return nil }, status: 202},
		{name: "quay wrong payload", receiver: "quay", body: []byte(`{"hello":"world"}`), headers: func([]byte) map[string]string { return nil }, status: 400},

		{name: "dockerhub push", receiver: "hub", body: fixture("dockerhub.json"), headers: func([]byte) map[string]string { return nil }, status: 202, refresh: []string{"hub"},
			hint: events.ArtifactHint{RepoURL: "example/app", Tag: "1.5.0"}},
		{name: "dockerhub unknown repo", receiver: "hub", body: unknownRepo(fixture("dockerhub.json")), headers: func([]byte) map[string]string { return nil }, status: 202},
		{name: "dockerhub wrong payload", receiver: "hub", body: []byte(`{"repository":{}}`), headers: func([]byte) map[string]string { return nil }, status: 400},

		{name: "harbor push", receiver: "harbor", body: fixture("harbor.json"), headers: func([]byte) map[string]string { return map[string]string{"Authorization": hookSecret} }, status: 202, refresh: []string{"harbor"},
			hint: events.ArtifactHint{RepoURL: "harbor.example.com/library/app", Tag: "1.6.0", Digest: "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4"}},
		{name: "harbor forged", receiver: "harbor", body: fixture("harbor.json"), headers: func([]byte) map[string]string { return map[string]string{"Authorization": "guess"} }, status: 401},
		{name: "harbor wrong event", receiver: "harbor", body: []byte(`{"type":"DELETE_ARTIFACT","event_data":{}}`), headers: func([]byte) map[string]string { return map[string]string{"Authorization": hookSecret} }, status: 200},
		{name: "harbor unknown repo", receiver: "harbor", body: unknownRepo(fixture("harbor.json")), headers: func([]byte) map[string]string { return map[string]string{"Authorization": hookSecret} }, status: 202},

		{name: "artifactory push", receiver: "jfrog", body: fixture("artifactory.json"), headers: func(b []byte) map[string]string {
			return map[string]string{"X-Jfrog-Event-Auth": webhook.Sign(hookSecret, b)}
		}, status: 202, refresh: []string{"jfrog"}, hint: events.ArtifactHint{RepoURL: "artifactory.example.com/docker-local/app", Tag: "1.7.0", Digest: "sha256:a8b1b27f1b8d8d2c5e9a1a2f3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e"}},
		{name: "artifactory forged", receiver: "jfrog", body: fixture("artifactory.json"), headers: func([]byte) map[string]string { return map[string]string{"X-Jfrog-Event-Auth": "nope"} }, status: 401},
		{name: "artifactory wrong event", receiver: "jfrog", body: []byte(`{"domain":"artifact","event_type":"deployed","data":{}}`), headers: func([]byte) map[string]string { return map[string]string{"X-Jfrog-Event-Auth": hookSecret} }, status: 200},
		{name: "artifactory unknown repo", receiver: "jfrog", body: unknownRepo(fixture("artifactory.json")), headers: func([]byte) map[string]string { return map[string]string{"X-Jfrog-Event-Auth": hookSecret} }, status: 202},

		{name: "registry push", receiver: "reg", body: fixture("registry.json"), headers: func([]byte) map[string]string { return map[string]string{"Authorization": "Bearer " + hookSecret} }, status: 202, refresh: []string{"reg"},
			hint: events.ArtifactHint{RepoURL: "registry.example.com:5000/team/api", Tag: "1.8.0", Digest: "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"}},
		{name: "registry replayed", receiver: "reg", body: fixture("registry.json"), headers: func([]byte) map[string]string { return map[string]string{"Authorization": "Bearer " + hookSecret} }, status: 200},
		{name: "registry forged", receiver: "reg", body: fixture("registry.json"), headers: func([]byte) map[string]string { return map[string]string{"Authorization": "Bearer guess"} }, status: 401},
		{name: "registry no bearer", receiver: "reg", body: fixture("registry.json"), headers: func([]byte) map[string]string { return map[string]string{"Authorization": hookSecret} }, status: 401},
		{name: "registry pull ignored", receiver: "reg", body: fixture("registry-pull.json"), headers: func([]byte) map[string]string { return map[string]string{"Authorization": "Bearer " + hookSecret} }, status: 200},
		{name: "registry unknown repo", receiver: "reg", body: unknownRepo([]byte(strings.ReplaceAll(string(fixture("registry.json")), "320678d8", "aaaaaaaa"))), headers: func([]byte) map[string]string { return map[string]string{"Authorization": "Bearer " + hookSecret} }, status: 202},

		{name: "generic matching", receiver: "gen", body: fixture("generic.json"), headers: func([]byte) map[string]string { return map[string]string{"X-Event": "deploy"} }, status: 202, refresh: []string{"reg", "src"}},
		{name: "acr push", receiver: "azure", body: fixture("acr-push.json"), headers: func([]byte) map[string]string { return map[string]string{"User-Agent": "AzureContainerRegistry/1.0"} }, status: 202, refresh: []string{"acr"},
			hint: events.ArtifactHint{RepoURL: "myregistry.azurecr.io/hello-world", Tag: "v1", Digest: "sha256:80f0d5c8786bb9e621a45ece0db56d11cdc624ad20da9fe62e9d25490f331d7d"}},
		{name: "acr ping", receiver: "azure", body: []byte(`{"id":"p1","action":"ping"}`), headers: func([]byte) map[string]string { return map[string]string{"User-Agent": "AzureContainerRegistry/1.0"} }, status: 200},
		{name: "azure devops push", receiver: "azure", body: fixture("azure-devops-push.json"), headers: func([]byte) map[string]string { return map[string]string{"User-Agent": "VSServices/16.255.0"} }, status: 202, refresh: []string{"ado"},
			hint: events.ArtifactHint{RepoURL: "https://dev.azure.com/fabrikam/proj/_git/app", Branch: "main", Commit: "33b55f7cb7e7e245323987634f960cf4a6e6bc74"}},
		{name: "azure from elsewhere", receiver: "azure", body: fixture("acr-push.json"), headers: func([]byte) map[string]string { return map[string]string{"User-Agent": "curl/8"} }, status: 400},
		{name: "generic index and label expressions", receiver: "gen2", body: []byte(`{"event":"push","repository":"https://github.com/example/app.git","team":"api"}`), headers: func([]byte) map[string]string { return nil }, status: 202, refresh: []string{"reg", "src"}},
		{name: "generic index only", receiver: "gen2", body: []byte(`{"event":"push","repository":"git@gitlab.com:example/app.git","team":"none"}`), headers: func([]byte) map[string]string { return nil }, status: 202, refresh: []string{"gl"}},
		{name: "generic when false", receiver: "gen2", body: []byte(`{"event":"tag","repository":"https://github.com/example/app.git","team":"api"}`), headers: func([]byte) map[string]string { return nil }, status: 200},
		{name: "generic not matching", receiver: "gen", body: []byte(`{"ref":"dev"}`), headers: func([]byte) map[string]string { return map[string]string{"X-Event": "deploy"} }, status: 200},
	}
	for _, tt := range tests {
		path := paths[tt.receiver]
		if path == "" {
			t.Fatalf("no path for receiver %s", tt.receiver)
		}
		st, out := h.deliver(path, tt.headers(tt.body), tt.body)
		if st != tt.status {
			t.Errorf("%s: %d %v, want %d", tt.name, st, out, tt.status)
		}
		evs := wait(len(tt.refresh) + tt.prs)
		var got []string
		for i, env := range evs {
			if env.Type == events.TypePullRequestClosed {
				p := payload[events.PullRequestClosed](t, env)
				if p.Number != 7 || p.Branch != "main" || p.RepoURL != "https://github.com/example/app.git" || p.Provider != "github" {
					t.Errorf("%s: %+v", tt.name, p)
				}
				continue
			}
			p := payload[events.WarehouseRefreshRequested](t, env)
			got = append(got, p.Warehouse)
			if tt.hint.RepoURL != "" && i == 0 {
				if p.Hint == nil || p.Hint.RepoURL != tt.hint.RepoURL || p.Hint.Tag != tt.hint.Tag || p.Hint.Digest != tt.hint.Digest ||
					p.Hint.Commit != tt.hint.Commit || p.Hint.Branch != tt.hint.Branch || !slices.Equal(p.Hint.Paths, tt.hint.Paths) {
					t.Errorf("%s: hint %+v, want %+v", tt.name, p.Hint, tt.hint)
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, tt.refresh) {
			t.Errorf("%s: refreshed %v, want %v", tt.name, got, tt.refresh)
		}
	}
	if st, _ := h.deliver("/webhooks/demo/0000", nil, []byte(`{}`)); st != http.StatusNotFound {
		t.Errorf("unknown receiver: %d", st)
	}
	if st, _ := h.deliver("/webhooks/nope/0000", nil, []byte(`{}`)); st != http.StatusNotFound {
		t.Errorf("unknown project: %d", st)
	}
}

func TestWebhookLimits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(d *gateway.Deps) {
		d.Config.WebhookMaxBodyBytes = 4096
		d.Config.WebhookRate = 0.001
		d.Config.WebhookBurst = 3
	})
	paths := h.receivers()
	big := []byte(`{"zen":"` + strings.Repeat("x", 5000) + `"}`)
	if st, _ := h.deliver(paths["gh"], map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": "sha256=" + webhook.Sign(hookSecret, big)}, big); st != http.StatusRequestEntityTooLarge {
		t.Errorf("big body: %d, want 413", st)
	}
	ping := []byte(`{"zen":"z"}`)
	hdr := map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": "sha256=" + webhook.Sign(hookSecret, ping)}
	codes := []int{}
	for range 3 {
		st, _ := h.deliver(paths["gh"], hdr, ping)
		codes = append(codes, st)
	}
	if !slices.Equal(codes, []int{200, 200, 429}) {
		t.Errorf("burst of 3 after one delivery: %v, want [200 200 429]", codes)
	}
	// Another receiver has its own budget.
	if st, _ := h.deliver(paths["quay"], nil, readFile(t, "testdata/webhooks/quay.json")); st != http.StatusAccepted {
		t.Errorf("other receiver: %d", st)
	}
}
