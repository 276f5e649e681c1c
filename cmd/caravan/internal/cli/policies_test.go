package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

// createToken makes an API token of project over the real server.
func createToken(t *testing.T, project, name, role string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name, "role": role})
	req, _ := http.NewRequest(http.MethodPost, srv.url+"/v1/projects/"+project+"/tokens", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+srv.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out struct {
		Token string `json:"token"`
	}
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&out) != nil {
		t.Fatalf("create token: %d", resp.StatusCode)
	}
	return out.Token
}

// Promotion windows, approvals and the audit log through the CLI, against
// the real caravan server: a deny window refuses a promotion until it is
// overridden with a reason; an approval policy's promotion is approved by
// someone else than the requester; the audit log shows both.
func TestPoliciesThroughCLI(t *testing.T) {
	t.Parallel()
	p := uniqueProject("policies")
	files := pipeline(p)
	now := time.Now().UTC()
	config := fmt.Sprintf(`apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: %[1]s, namespace: %[1]s}
spec:
  promotionWindows:
  - {name: freeze, kind: Deny, dtstart: %[2]s, dtend: %[3]s, stageSelector: {name: dev}}
  approvalPolicies:
  - {stage: prod, approvers: 1}
`, p, now.Add(-time.Hour).Format("20060102T150405Z"), now.Add(time.Hour).Format("20060102T150405Z"))
	must(t, run(t, files["00-project.yaml"]+"---\n"+files["10-warehouse.yaml"]+"---\n"+files["stages/20-stages.yaml"]+"---\n"+config, nil, "apply", "-f", "-"))
	f := &model.Freight{
		ObjectMeta: model.ObjectMeta{Namespace: p},
		Alias:      "quiet-lynx",
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images:     []model.Image{{RepoURL: "ghcr.io/example/app", Tag: "1.0.0", Digest: "sha256:abc"}},
	}
	seedFreight(t, f)
	env := map[string]string{"CARAVAN_PROJECT": p}
	must(t, run(t, "", env, "approve", "--freight", "quiet-lynx", "--stage", "prod"))

	r := run(t, "", env, "promote", "--stage", "dev", "--freight-alias", "quiet-lynx")
	if r.code != 1 || !strings.Contains(r.stderr, `deny window "freeze"`) || !strings.Contains(r.stderr, "open at") {
		t.Fatalf("promote in a deny window: exit %d\n%s", r.code, r.stderr)
	}
	must(t, run(t, "", env, "promote", "--stage", "dev", "--freight-alias", "quiet-lynx", "--override-window", "hotfix INC-42"))

	r = must(t, run(t, "", env, "promote", "--stage", "prod", "--freight-alias", "quiet-lynx"))
	name := regexp.MustCompile(`promotion/(\S+) created`).FindStringSubmatch(r.stdout)
	if name == nil {
		t.Fatalf("promote output: %s", r.stdout)
	}
	if r := run(t, "", env, "approve", "promotion", name[1], "--reason", "mine"); r.code != 1 || !strings.Contains(r.stderr, "may not approve") {
		t.Errorf("self-approval: exit %d\n%s", r.code, r.stderr)
	}
	if r := run(t, "", env, "approve", "promotion", name[1]); r.code != 2 || !strings.Contains(r.stderr, "--reason is required") {
		t.Errorf("approve without a reason: exit %d\n%s", r.code, r.stderr)
	}
	r = must(t, run(t, "", env, "approve", "promotion", name[1], "--show"))
	if !strings.Contains(r.stdout, "approved by: nobody yet (0 of 1)") || !strings.Contains(r.stdout, "still to approve: 1 more") {
		t.Errorf("show: %s", r.stdout)
	}
	bob := createToken(t, p, "bob", "promoter")
	r = must(t, run(t, "", map[string]string{"CARAVAN_PROJECT": p, "CARAVAN_TOKEN": bob}, "approve", "promotion", name[1], "--reason", "CHG-7"))
	if !strings.Contains(r.stdout, "approved by: token:"+p+"/bob (1 of 1)") || !strings.Contains(r.stdout, "the promotion may run") {
		t.Errorf("bob approves: %s", r.stdout)
	}

	r = must(t, run(t, "", env, "audit", "--action", "override"))
	if !strings.Contains(r.stdout, "override") || !strings.Contains(r.stdout, "hotfix INC-42") || !strings.Contains(r.stdout, "201") {
		t.Errorf("audit override: %s", r.stdout)
	}
	r = must(t, run(t, "", env, "audit", "--action", "approve", "--since", "1h", "-o", "json"))
	var page struct {
		Items []struct {
			Actor  string `json:"actor"`
			Status int    `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &page); err != nil || len(page.Items) != 2 || page.Items[0].Actor != "token:"+p+"/bob" || page.Items[1].Status != http.StatusForbidden {
		t.Errorf("audit approve: %v %s", err, r.stdout)
	}
}
