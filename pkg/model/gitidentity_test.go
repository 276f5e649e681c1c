package model

import (
	"strings"
	"testing"
)

func TestGitIdentityFor(t *testing.T) {
	t.Parallel()
	cluster := &ClusterConfig{Spec: ClusterConfigSpec{GitClient: &GitClientConfig{Name: "Ops", Email: "ops@example.com"}}}
	project := func(g ProjectGitClient) *ProjectConfig { return &ProjectConfig{Spec: ProjectConfigSpec{GitClient: &g}} }
	caravan := GitIdentity{DefaultGitAuthorName, DefaultGitAuthorEmail, DefaultGitBranchPrefix}
	for _, tc := range []struct {
		name string
		pc   *ProjectConfig
		cc   *ClusterConfig
		want GitIdentity
	}{
		{"none", nil, nil, caravan},
		{"cluster", nil, cluster, GitIdentity{"Ops", "ops@example.com", DefaultGitBranchPrefix}},
		{"project over cluster", project(ProjectGitClient{Name: "Shop", Email: "shop@example.com"}), cluster, GitIdentity{"Shop", "shop@example.com", DefaultGitBranchPrefix}},
		{"project prefix only", project(ProjectGitClient{BranchPrefix: "deploy/"}), cluster, GitIdentity{"Ops", "ops@example.com", "deploy/"}},
		{"empty configs", &ProjectConfig{}, &ClusterConfig{}, caravan},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := GitIdentityFor(tc.pc, tc.cc); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if !strings.Contains(DefaultGitAuthorName+DefaultGitAuthorEmail+DefaultGitBranchPrefix, "aravan") ||
		strings.Contains(strings.ToLower(DefaultGitAuthorName+DefaultGitAuthorEmail+DefaultGitBranchPrefix), "kargo") {
		t.Fatal("the defaults are Caravan's, never Kargo's")
	}
}

func TestGitClientValidation(t *testing.T) {
	t.Parallel()
	pc := "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: p}\n---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: p, namespace: p}\nspec:\n  gitClient: "
	cc := "apiVersion: kargo.akuity.io/v1alpha1\nkind: ClusterConfig\nmetadata: {name: cluster}\nspec:\n  gitClient: "
	for _, tc := range []struct{ doc, field, want string }{
		{pc + "{name: Shop, email: shop@example.com, branchPrefix: deploy/}", "", ""},
		{pc + "{name: Shop}", "spec.gitClient", "name and email must be set together"},
		{pc + "{name: Shop, email: not-an-address}", "spec.gitClient.email", "is not an email address"},
		{pc + "{branchPrefix: 'a..b/'}", "spec.gitClient.branchPrefix", "must not contain .."},
		{pc + "{branchPrefix: 'my branch/'}", "spec.gitClient.branchPrefix", "must not contain spaces"},
		{cc + "{name: Ops, email: ops@example.com}", "", ""},
		{cc + "{name: 'Ops <x>', email: ops@example.com}", "spec.gitClient.name", "must not contain <"},
	} {
		dec, err := Decode([]byte(tc.doc))
		if err != nil {
			t.Fatalf("%s: %v", tc.doc, err)
		}
		issues := Validate(dec.Documents, nil)
		if tc.want == "" {
			if len(issues) > 0 {
				t.Errorf("%s: %v", tc.doc, issues)
			}
			continue
		}
		if len(issues) != 1 || issues[0].Field != tc.field || !strings.Contains(issues[0].Message, tc.want) {
			t.Errorf("%s: %v, want one issue on %s saying %q", tc.doc, issues, tc.field, tc.want)
		}
	}
}
