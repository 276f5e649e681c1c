package creds

import (
	"context"
	"strings"
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
	for _, tc := range []struct{ project, repo, want, secret string }{
		{"demo", "https://github.com/example/app.git", "own", "demo/own"},
		{"demo", "https://github.com/example/other.git", "shared-other", model.SharedResourcesProject + "/other"},
		{"demo", "https://github.com/example/none.git", "", ""},
	} {
		c, err := Find(context.Background(), l, tc.project, model.CredTypeGit, tc.repo)
		if err != nil {
			t.Fatal(err)
		}
		got, where := "", ""
		if c != nil {
			got, where = c.Username, c.Secret
		}
		if got != tc.want || where != tc.secret {
			t.Errorf("%s %s: %q from %q, want %q from %q", tc.project, tc.repo, got, where, tc.want, tc.secret)
		}
	}
}

// TestBadSecrets: malformed credential data is an error naming the Secret
// and the field, and never quoting the secret values.
func TestBadSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, typ string
		data      map[string]string
		field     string
	}{
		{"ssh-garbage", model.CredTypeGit, map[string]string{"sshPrivateKey": "not-a-key-s3cr3t"}, "sshPrivateKey"},
		{"app-no-installation", model.CredTypeGit, map[string]string{"githubAppID": "1", "githubAppPrivateKey": "x"}, "githubAppInstallationID"},
		{"app-no-id", model.CredTypeGit, map[string]string{"githubAppInstallationID": "2", "githubAppPrivateKey": "x"}, "githubAppClientID"},
		{"app-bad-key", model.CredTypeGit, map[string]string{"githubAppID": "1", "githubAppInstallationID": "2", "githubAppPrivateKey": "s3cr3t"}, "githubAppPrivateKey"},
		{"app-for-image", model.CredTypeImage, map[string]string{"githubAppID": "1"}, "githubAppPrivateKey"},
		{"ecr-no-secret", model.CredTypeImage, map[string]string{"awsAccessKeyID": "AKID", "awsRegion": "us-east-1"}, "awsSecretAccessKey"},
		{"ecr-no-region", model.CredTypeImage, map[string]string{"awsAccessKeyID": "AKID", "awsSecretAccessKey": "s3cr3t"}, "awsRegion"},
		{"gar-garbage", model.CredTypeHelm, map[string]string{"gcpServiceAccountKey": "s3cr3t!!"}, "gcpServiceAccountKey"},
		{"docker-garbage", model.CredTypeImage, map[string]string{".dockerconfigjson": "{s3cr3t"}, ".dockerconfigjson"},
		{"docker-no-host", model.CredTypeImage, map[string]string{".dockerconfigjson": `{"auths":{"quay.io":{"auth":"czNjcjN0OnMzY3IzdA=="}}}`}, ".dockerconfigjson"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data := map[string]string{"repoURL": "example.com/app"}
			if tt.typ == model.CredTypeGit {
				data["repoURL"] = "https://example.com/app.git"
			}
			for k, v := range tt.data {
				data[k] = v
			}
			sec := secret(tt.name, tt.typ, data)
			if tt.name != "docker-no-host" && tt.name != "ecr-no-region" {
				// Found at apply time already.
				problems := Check(sec)
				if len(problems) == 0 || !strings.HasPrefix(problems[0].Field, tt.field[:len(tt.field)-2]) {
					t.Errorf("Check: %+v, want a problem with %s", problems, tt.field)
				}
				for _, p := range problems {
					if strings.Contains(p.Message, "s3cr3t") {
						t.Errorf("Check quotes a secret value: %s", p.Message)
					}
				}
			}
			l := lister{"demo": {sec}}
			_, err := Find(t.Context(), l, "demo", tt.typ, data["repoURL"])
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, "demo/"+tt.name) || !strings.Contains(msg, tt.field) {
				t.Errorf("error %q does not name secret demo/%s and field %s", msg, tt.name, tt.field)
			}
			if strings.Contains(msg, "s3cr3t") {
				t.Errorf("error %q quotes a secret value", msg)
			}
		})
	}
}

func TestDockerConfig(t *testing.T) {
	t.Parallel()
	cfg := `{"auths":{
		"https://index.docker.io/v1/":{"auth":"aHViOmh1Yi1wdw=="},
		"ghcr.io":{"username":"gh","password":"gh-pw"},
		"127.0.0.1:5000":{"auth":"bG9jYWw6bG9jYWwtcHc="}}}`
	for _, tc := range []struct{ typ, repo, user, pass string }{
		{model.CredTypeImage, "nginx", "hub", "hub-pw"},
		{model.CredTypeImage, "docker.io/library/nginx", "hub", "hub-pw"},
		{model.CredTypeImage, "ghcr.io/acme/app", "gh", "gh-pw"},
		{model.CredTypeHelm, "oci://127.0.0.1:5000/charts/app", "local", "local-pw"},
	} {
		l := lister{"demo": {secret("docker", tc.typ, map[string]string{"repoURL": tc.repo, ".dockerconfigjson": cfg})}}
		c, err := Find(t.Context(), l, "demo", tc.typ, tc.repo)
		if err != nil {
			t.Fatalf("%s: %v", tc.repo, err)
		}
		if c == nil || c.Username != tc.user || c.Password != tc.pass {
			t.Errorf("%s: %+v, want %s/%s", tc.repo, c, tc.user, tc.pass)
		}
	}
}

func TestCheckGoodSecrets(t *testing.T) {
	t.Parallel()
	for _, s := range []*model.Secret{
		secret("basic", model.CredTypeGit, map[string]string{"repoURL": "https://x/y.git", "username": "u", "password": "p"}),
		secret("regex", model.CredTypeImage, map[string]string{"repoURL": `^ghcr\.io/.*`, "repoURLIsRegex": "true"}),
		secret("generic", model.CredTypeGeneric, map[string]string{"sshPrivateKey": "anything"}),
		secret("docker", model.CredTypeImage, map[string]string{".dockerconfigjson": `{"auths":{}}`}),
		secret("ecr", model.CredTypeImage, map[string]string{"awsAccessKeyID": "a", "awsSecretAccessKey": "b"}),
	} {
		if p := Check(s); len(p) > 0 {
			t.Errorf("%s: %+v", s.Name, p)
		}
	}
	if p := Check(secret("bad-regex", model.CredTypeGit, map[string]string{"repoURL": "^(", "repoURLIsRegex": "true"})); len(p) != 1 || p[0].Field != "repoURL" {
		t.Errorf("bad regex: %+v", p)
	}
}
