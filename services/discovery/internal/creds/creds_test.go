package creds

import (
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
