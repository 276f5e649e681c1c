package creds

import (
	"context"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

func secret(name, typ string, data map[string]string) *model.Secret {
	return &model.Secret{ObjectMeta: model.ObjectMeta{Name: name, Labels: map[string]string{model.LabelCredType: typ}}, StringData: data}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	secrets := []*model.Secret{
		secret("a-regex", "image", map[string]string{"repoURL": `^ghcr\.io/acme/.*$`, "repoURLIsRegex": "true", "username": "regex", "password": "r"}),
		secret("b-exact", "image", map[string]string{"repoURL": "ghcr.io/acme/app", "username": "exact", "password": "e"}),
		secret("c-git", "git", map[string]string{"repoURL": "ghcr.io/acme/app", "username": "git", "password": "g"}),
	}
	tests := []struct {
		typ, repo, want string
	}{
		{"image", "ghcr.io/acme/app", "exact"},
		{"image", "ghcr.io/acme/other", "regex"},
		{"image", "docker.io/nginx", ""},
		{"git", "ghcr.io/acme/app", "git"},
		{"helm", "ghcr.io/acme/app", ""},
	}
	for _, tt := range tests {
		got := ""
		if c := Match(secrets, tt.typ, tt.repo, nil); c != nil {
			got = c.Username
		}
		if got != tt.want {
			t.Errorf("Match(%s, %s) = %q, want %q", tt.typ, tt.repo, got, tt.want)
		}
	}
}

// lister is the Secrets of each project.
type lister map[string][]*model.Secret

func (l lister) Secrets(_ context.Context, project string) ([]*model.Secret, error) {
	return l[project], nil
}

func TestFindSharedResources(t *testing.T) {
	t.Parallel()
	mk := func(name, repoURL, user string) *model.Secret {
		return &model.Secret{ObjectMeta: model.ObjectMeta{Name: name, Labels: map[string]string{model.LabelCredType: model.CredTypeGit}},
			StringData: map[string]string{"repoURL": repoURL, "username": user, "password": "p"}}
	}
	l := lister{
		"demo":                       {mk("own", "https://github.com/example/app.git", "own")},
		model.SharedResourcesProject: {mk("shared", "https://github.com/example/app.git", "shared"), mk("other", "https://github.com/example/other.git", "shared-other")},
		"elsewhere":                  {mk("x", "https://github.com/example/other.git", "not-yours")},
	}
	for _, tc := range []struct{ project, repo, want string }{
		{"demo", "https://github.com/example/app.git", "own"},
		{"demo", "https://github.com/example/other.git", "shared-other"},
		{"demo", "https://github.com/example/none.git", ""},
	} {
		c, err := Find(context.Background(), l, tc.project, model.CredTypeGit, tc.repo, model.NormalizeGitURL)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if c != nil {
			got = c.Username
		}
		if got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.project, tc.repo, got, tc.want)
		}
	}
}
