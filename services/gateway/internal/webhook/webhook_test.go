package webhook

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestVerify(t *testing.T) {
	t.Parallel()
	body := []byte(`{"a":1}`)
	sig := Sign("s", body)
	tests := []struct {
		provider string
		h        http.Header
		ok       bool
	}{
		{GitHub, hdr("X-Hub-Signature-256", "sha256="+sig), true},
		{GitHub, hdr("X-Hub-Signature-256", sig), false},
		{GitHub, hdr("X-Hub-Signature-256", "sha256=zz"), false},
		{GitHub, hdr(), false},
		{Gitea, hdr("X-Gitea-Signature", sig), true},
		{Gitea, hdr("X-Gitea-Signature", Sign("t", body)), false},
		{Bitbucket, hdr("X-Hub-Signature", "sha256="+sig), true},
		{Bitbucket, hdr("X-Hub-Signature", sig), false},
		{GitLab, hdr("X-Gitlab-Token", "s"), true},
		{GitLab, hdr("X-Gitlab-Token", "S"), false},
		{Harbor, hdr("Authorization", "s"), true},
		{Harbor, hdr(), false},
		{Artifactory, hdr("X-Jfrog-Event-Auth", "s"), true},
		{Artifactory, hdr("X-Jfrog-Event-Auth", sig), true},
		{Artifactory, hdr("X-Jfrog-Event-Auth", "x"), false},
		{Registry, hdr("Authorization", "Bearer s"), true},
		{Registry, hdr("Authorization", "bearer s"), true},
		{Registry, hdr("Authorization", "Basic s"), false},
		{Registry, hdr("Authorization", "s"), false},
		{Quay, hdr(), true},
		{DockerHub, hdr(), true},
		{Generic, hdr(), true},
	}
	for _, tt := range tests {
		err := Verify(tt.provider, "s", tt.h, body)
		if (err == nil) != tt.ok {
			t.Errorf("%s %v: %v, want ok=%v", tt.provider, tt.h, err, tt.ok)
		}
	}
	if err := Verify(GitLab, "", hdr("X-Gitlab-Token", ""), body); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("empty secret: %v", err)
	}
	if err := Verify("svn", "s", hdr(), body); !errors.Is(err, ErrUnknownProvider) {
		t.Errorf("unknown provider: %v", err)
	}
}

func TestParseEdges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, provider string
		h              http.Header
		body           string
		ignored        bool
		artifacts      int
		check          func(t *testing.T, d Delivery)
	}{
		{"github deleted branch", GitHub, hdr("X-GitHub-Event", "push"), `{"ref":"refs/heads/x","after":"0000000000000000000000000000000000000000","deleted":true,"repository":{"clone_url":"https://github.com/a/b.git"}}`, true, 0, nil},
		{"github tag push", GitHub, hdr("X-GitHub-Event", "push", "X-GitHub-Delivery", "id-1"), `{"ref":"refs/tags/v1","after":"abc","repository":{"clone_url":"https://github.com/a/b.git","ssh_url":"git@github.com:a/b.git"}}`, false, 1, func(t *testing.T, d Delivery) {
			if d.ID != "id-1" || d.Artifacts[0].Hint.Tag != "v1" || len(d.Artifacts[0].RepoURLs) != 2 {
				t.Errorf("%+v", d)
			}
		}},
		{"github open pull request", GitHub, hdr("X-GitHub-Event", "pull_request"), `{"action":"opened","pull_request":{"merged":false},"repository":{"clone_url":"https://github.com/a/b.git"}}`, true, 0, nil},
		{"github closed pull request", GitHub, hdr("X-GitHub-Event", "pull_request"), `{"action":"closed","number":5,"pull_request":{"number":5,"merged":false,"base":{"ref":"main"}},"repository":{"clone_url":"https://github.com/a/b.git"}}`, false, 0, func(t *testing.T, d Delivery) {
			if pr := d.PullRequest; pr == nil || pr.Number != 5 || pr.Merged || pr.Branch != "main" || pr.RepoURL != "https://github.com/a/b.git" {
				t.Errorf("%+v", pr)
			}
		}},
		{"gitlab closed merge request", GitLab, hdr("X-Gitlab-Event", "Merge Request Hook"), `{"project":{"git_http_url":"https://gitlab.com/a/b.git"},"object_attributes":{"iid":3,"action":"close","state":"closed","target_branch":"main"}}`, false, 0, func(t *testing.T, d Delivery) {
			if pr := d.PullRequest; pr == nil || pr.Number != 3 || pr.Merged {
				t.Errorf("%+v", pr)
			}
		}},
		{"github npm package", GitHub, hdr("X-GitHub-Event", "package"), `{"action":"published","package":{"name":"x","namespace":"a","package_type":"npm","package_version":{}}}`, true, 0, nil},
		{"github package without url", GitHub, hdr("X-GitHub-Event", "package"), `{"action":"published","package":{"name":"App","namespace":"Org","package_type":"container","package_version":{"version":"sha256:ab","container_metadata":{"tag":{"name":"1"}}}}}`, false, 1, func(t *testing.T, d Delivery) {
			if h := d.Artifacts[0].Hint; h.RepoURL != "ghcr.io/org/app" || h.Tag != "1" || h.Digest != "sha256:ab" {
				t.Errorf("%+v", h)
			}
		}},
		{"gitlab merged merge request", GitLab, hdr("X-Gitlab-Event", "Merge Request Hook"), `{"object_kind":"merge_request","project":{"git_http_url":"https://gitlab.com/a/b.git"},"object_attributes":{"action":"merge","state":"merged","target_branch":"main","merge_commit_sha":"abc"}}`, false, 1, func(t *testing.T, d Delivery) {
			if h := d.Artifacts[0].Hint; h.Branch != "main" || h.Commit != "abc" {
				t.Errorf("%+v", h)
			}
		}},
		{"gitlab open merge request", GitLab, hdr("X-Gitlab-Event", "Merge Request Hook"), `{"project":{"git_http_url":"https://gitlab.com/a/b.git"},"object_attributes":{"action":"open","state":"opened"}}`, true, 0, nil},
		{"bitbucket deleted branch", Bitbucket, hdr("X-Event-Key", "repo:push"), `{"push":{"changes":[{"new":null}]},"repository":{"full_name":"a/b"}}`, true, 0, nil},
		{"bitbucket merged pull request", Bitbucket, hdr("X-Event-Key", "pullrequest:fulfilled"), `{"pullrequest":{"destination":{"branch":{"name":"main"}},"merge_commit":{"hash":"abc"}},"repository":{"full_name":"a/b"}}`, false, 1, func(t *testing.T, d Delivery) {
			if a := d.Artifacts[0]; a.Hint.Commit != "abc" || a.Hint.RepoURL != "https://bitbucket.org/a/b" {
				t.Errorf("%+v", a)
			}
		}},
		{"quay without tags", Quay, hdr(), `{"docker_url":"quay.io/a/b"}`, false, 1, nil},
		{"registry mixed events", Registry, hdr(), `{"events":[{"id":"1","action":"pull","target":{"repository":"a","tag":"1","url":"http://h:5000/v2/a/manifests/1"}},{"id":"2","action":"push","target":{"repository":"a","url":"http://h:5000/v2/a/blobs/x"}},{"id":"3","action":"push","target":{"repository":"a","tag":"2","digest":"sha256:d","url":"http://h:5000/v2/a/manifests/sha256:d"}}]}`, false, 1, func(t *testing.T, d Delivery) {
			if h := d.Artifacts[0].Hint; h.RepoURL != "h:5000/a" || h.Tag != "2" || d.ID != "1,2,3" {
				t.Errorf("%+v %s", h, d.ID)
			}
		}},
		{"artifactory virtual repo", Artifactory, hdr(), `{"domain":"docker","event_type":"pushed","jpd_origin":"https://jf.example.com","data":{"repo_key":"local","image_name":"app","tag":"1"}}`, false, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse(tt.provider, tt.h, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if (d.Ignored != "") != tt.ignored || len(d.Artifacts) != tt.artifacts || d.ID == "" {
				t.Fatalf("%+v", d)
			}
			if tt.check != nil {
				tt.check(t, d)
			}
		})
	}
	d, err := ParseArtifactory([]byte(`{"domain":"docker","event_type":"pushed","jpd_origin":"https://jf.example.com","data":{"repo_key":"local","image_name":"app","tag":"1"}}`), "virtual")
	if err != nil || d.Artifacts[0].Hint.RepoURL != "jf.example.com/virtual/app" {
		t.Errorf("virtual repo: %+v %v", d, err)
	}
	if _, err := Parse(Harbor, hdr(), []byte(`[1,2]`)); !errors.Is(err, ErrBadPayload) {
		t.Errorf("bad payload: %v", err)
	}
}

func TestParseGeneric(t *testing.T) {
	t.Parallel()
	actions := []map[string]any{
		{"action": "Refresh", "whenExpression": "request.header('X-Kind') == 'build' && request.body.ok", "targetSelectionCriteria": []any{map[string]any{"kind": "Warehouse", "name": "w1"}}},
		{"action": "Refresh", "targetSelectionCriteria": []any{map[string]any{"kind": "Warehouse", "labelSelector": map[string]any{"matchLabels": map[string]any{"a": "b"}}}, map[string]any{"kind": "Stage", "name": "s"}}},
		{"action": "Promote", "targetSelectionCriteria": []any{map[string]any{"kind": "Warehouse", "name": "never"}}},
		{"action": "Promote", "parameters": map[string]any{"freight": "${{ request.body.freight }}"}, "targetSelectionCriteria": []any{map[string]any{"kind": "Stage", "name": "prod"}}},
		{"action": "Promote", "parameters": map[string]any{"warehouse": "w1"}, "targetSelectionCriteria": []any{map[string]any{"labelSelector": map[string]any{"matchLabels": map[string]any{"tier": "test"}}}}},
	}
	res, err := ParseGeneric(actions, "POST", "/x", hdr("X-Kind", "build"), []byte(`{"ok":true,"freight":"f1"}`))
	if err != nil || len(res.Targets) != 2 || res.Targets[0].Name != "w1" || res.Targets[1].Labels["a"] != "b" {
		t.Errorf("%+v %v", res, err)
	}
	want := []Promote{{Target: Target{Name: "prod"}, Freight: "f1"}, {Target: Target{Labels: map[string]string{"tier": "test"}}, Warehouse: "w1"}}
	if !reflect.DeepEqual(res.Promotions, want) {
		t.Errorf("promotions %+v, want %+v", res.Promotions, want)
	}
	res, _ = ParseGeneric(actions[:1], "POST", "/x", hdr("X-Kind", "other"), []byte(`{"ok":true}`))
	if res.Ignored == "" {
		t.Errorf("non-matching: %+v", res)
	}
	res, _ = ParseGeneric(actions[:1], "POST", "/x", hdr("X-Kind", "build"), []byte(`not json`))
	if res.Ignored == "" || !strings.HasPrefix(res.ID, "sha256:") {
		t.Errorf("non-JSON body: %+v", res)
	}
}

func TestTargetSelects(t *testing.T) {
	t.Parallel()
	labels := map[string]string{"team": "api", "tier": "web"}
	urls := []string{"https://github.com/example/app"}
	for _, tc := range []struct {
		name string
		t    Target
		want bool
	}{
		{"name", Target{Name: "w"}, true},
		{"other name", Target{Name: "x"}, false},
		{"In", Target{Requirements: []Requirement{{Key: "team", Operator: "In", Values: []string{"ops", "api"}}}}, true},
		{"NotIn", Target{Requirements: []Requirement{{Key: "team", Operator: "NotIn", Values: []string{"api"}}}}, false},
		{"Exists", Target{Requirements: []Requirement{{Key: "tier", Operator: "Exists"}}}, true},
		{"DoesNotExist", Target{Requirements: []Requirement{{Key: "tier", Operator: "DoesNotExist"}}}, false},
		{"index Equal", Target{Indices: []Index{{Key: "subscribedURLs", Operator: "Equal", Value: urls[0]}}}, true},
		{"index NotEqual", Target{Indices: []Index{{Key: "subscribedURLs", Operator: "NotEqual", Value: urls[0]}}}, false},
		{"all ANDed", Target{Name: "w", Labels: map[string]string{"team": "api"}, Indices: []Index{{Key: "subscribedURLs", Operator: "Equal", Value: "https://other"}}}, false},
	} {
		if got := tc.t.Selects("w", labels, urls); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParseGenericProblems(t *testing.T) {
	t.Parallel()
	actions := []map[string]any{
		{"action": "Refresh", "parameters": map[string]any{"who": "${{ request.body.team }}-team"},
			"targetSelectionCriteria": []any{map[string]any{"kind": "Warehouse", "labelSelector": map[string]any{"matchExpressions": []any{map[string]any{"key": "team", "operator": "In", "values": []any{"${{ params.who }}"}}}}}}},
		{"action": "Refresh", "targetSelectionCriteria": []any{map[string]any{"kind": "Warehouse", "indexSelector": map[string]any{"matchIndices": []any{map[string]any{"key": "receiverPaths", "operator": "Equal", "value": "x"}}}}}},
		{"action": "Promote", "targetSelectionCriteria": []any{map[string]any{"kind": "Warehouse", "name": "w"}}},
		{"action": "Rollback", "targetSelectionCriteria": []any{map[string]any{"kind": "Stage", "name": "s"}}},
		{"action": "Promote", "parameters": map[string]any{"freight": "${{ request.body.missing.name }}"}, "targetSelectionCriteria": []any{map[string]any{"kind": "Stage", "name": "s"}}},
		{"action": "Promote", "parameters": map[string]any{"stage": "s"}, "targetSelectionCriteria": []any{map[string]any{"kind": "Stage", "name": "s"}}},
		{"action": "Promote", "targetSelectionCriteria": []any{map[string]any{"kind": "Stage", "indexSelector": map[string]any{"matchIndices": []any{map[string]any{"key": "subscribedURLs", "operator": "Equal", "value": "x"}}}}}},
	}
	res, err := ParseGeneric(actions, "POST", "/x", hdr(), []byte(`{"team":"api"}`))
	if err != nil || len(res.Targets) != 1 || res.Targets[0].Requirements[0].Values[0] != "api-team" || len(res.Promotions) != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	wants := []string{"receiverPaths", `kind "Warehouse" is not supported (a Promote action targets Stages)`, `action "Rollback" is not supported`, "parameters.freight", "parameters.stage is not a Promote parameter", "indexSelector indexes Warehouses, not Stages"}
	if len(res.Problems) != len(wants) {
		t.Fatalf("problems %q", res.Problems)
	}
	for i, w := range wants {
		if !strings.Contains(res.Problems[i], w) {
			t.Errorf("problem %d %q, want it to name %q", i, res.Problems[i], w)
		}
	}
}

// Azure DevOps' "Pull request merge attempted" event as its service hooks
// reference documents it (eventType git.pullrequest.merged).
func TestParseAzurePullRequest(t *testing.T) {
	t.Parallel()
	body := []byte(`{"id":"e1","eventType":"git.pullrequest.merged","resource":{"pullRequestId":42,"status":"completed","sourceRefName":"refs/heads/kargo/promo","lastMergeCommit":{"commitId":"abc123"},"repository":{"remoteUrl":"https://dev.azure.com/org/proj/_git/app"}}}`)
	d, err := Parse(Azure, hdr("User-Agent", "VSServices/16.0"), body)
	if err != nil || d.PullRequest == nil || d.PullRequest.Number != 42 || !d.PullRequest.Merged || d.PullRequest.MergeCommit != "abc123" || d.PullRequest.Branch != "kargo/promo" {
		t.Fatalf("%+v %v", d.PullRequest, err)
	}
	if _, err := Parse(Azure, hdr("User-Agent", "curl"), body); !errors.Is(err, ErrBadPayload) {
		t.Fatalf("unknown sender: %v", err)
	}
}
