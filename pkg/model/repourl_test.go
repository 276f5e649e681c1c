package model

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckRepoURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind RepoKind
		url  string
		ok   bool
	}{
		{RepoGit, "https://github.com/acme/deploy.git", true},
		{RepoGit, "http://127.0.0.1:4281/deploy.git", true},
		{RepoGit, "HTTPS://GitHub.com/acme/deploy", true},
		{RepoGit, "ssh://git@github.com:22/acme/deploy.git", true},
		{RepoGit, "git@github.com:acme/deploy.git", true},
		{RepoGit, "https://user@git.example.com/x", true},
		{RepoGit, "https://ghp_0123456789abcdefABCDEF0123456789abcd@github.com/acme/deploy.git", false},
		{RepoGit, "https://glpat-0123456789abcdefABCD@gitlab.com/acme/deploy.git", false},
		{RepoGit, "https://ghpx@github.com/acme/deploy.git", true},
		{RepoGit, "https://user:token@git.example.com/x", false},
		{RepoGit, "ssh://git:pw@github.com/acme/deploy.git", false},
		{RepoChart, "https://user:token@charts.example.com/", false},
		{RepoImage, "oci://user:token@registry.example.com/app", false},
		{RepoGit, "https://[::1]:8080/x.git", true},
		{RepoGit, "file:///var/lib/caravan/discovery/git/0a1b", false},
		{RepoGit, "FILE:///etc", false},
		{RepoGit, "/var/lib/caravan/promoter/git/0a1b", false},
		{RepoGit, "./.caravan/discovery/git/0a1b", false},
		{RepoGit, "../other", false},
		{RepoGit, "~/repo", false},
		{RepoGit, "deploy.git", false},
		{RepoGit, "github.com/acme/deploy", false},
		{RepoGit, "git://github.com/acme/deploy", false},
		{RepoGit, "ext::sh -c touch% /tmp/pwned", false},
		{RepoGit, "ext::sh", false},
		{RepoGit, "fd::17", false},
		{RepoGit, "https:///no-host", false},
		{RepoGit, "https://-oProxyCommand=x/y", false},
		{RepoGit, "git@-oProxyCommand=x:y", false},
		{RepoGit, "git@host:\\path", false},
		{RepoGit, "host:path", false},
		{RepoGit, " https://github.com/acme/deploy", false},
		{RepoGit, "https://github.com/acme/deploy\n", false},
		{RepoGit, "", false},
		{RepoImage, "nginx", true},
		{RepoImage, "ghcr.io/acme/app", true},
		{RepoImage, "127.0.0.1:4280/demo/app", true},
		{RepoImage, "localhost:5000/app:1.2.3", true},
		{RepoImage, "oci://ghcr.io/acme/app:v1", true},
		{RepoImage, "ghcr.io/acme/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true},
		{RepoImage, "[::1]:5000/app", true},
		{RepoImage, "file:///var/lib/caravan/oci", false},
		{RepoImage, "https://ghcr.io/acme/app", false},
		{RepoImage, "/var/lib/images/app", false},
		{RepoImage, "./app", false},
		{RepoImage, "ghcr.io/../app", false},
		{RepoImage, "ghcr.io/acme/App", false},
		{RepoImage, "ghcr.io//app", false},
		{RepoChart, "https://charts.example.com", true},
		{RepoChart, "http://127.0.0.1:8879/charts", true},
		{RepoChart, "oci://ghcr.io/stefanprodan/charts/podinfo", true},
		{RepoChart, "file://../dep", false},
		{RepoChart, "ghcr.io/stefanprodan/charts", false},
		{RepoChart, "oci:///abs/path", false},
		{RepoChart, "@local-repo-alias", false},
		{RepoChart, "s3://bucket/charts", false},
		{"svn", "https://example.com", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind)+" "+tt.url, func(t *testing.T) {
			t.Parallel()
			err := CheckRepoURL(tt.kind, tt.url)
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok {
				if err == nil {
					t.Fatal("accepted")
				}
				if !errors.Is(err, ErrRepoURL) {
					t.Fatalf("%v does not wrap ErrRepoURL", err)
				}
			}
		})
	}
}

// TestRepoURLFieldErrors checks that apply refuses local repositories with
// an issue naming the field, in subscriptions and in step configs.
func TestRepoURLFieldErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, input, field string
	}{
		{"git subscription", project + warehouse("  - git: {repoURL: 'file:///data/discovery/git/abc'}\n"), "spec.subscriptions[0].git.repoURL"},
		{"git path", project + warehouse("  - image: {repoURL: nginx}\n  - git: {repoURL: /var/lib/caravan/promoter/git/abc}\n"), "spec.subscriptions[1].git.repoURL"},
		{"image subscription", project + warehouse("  - image: {repoURL: 'file:///images/app'}\n"), "spec.subscriptions[0].image.repoURL"},
		{"chart subscription", project + warehouse("  - chart: {repoURL: 'file://../charts', name: x}\n"), "spec.subscriptions[0].chart.repoURL"},
		{"git-clone step", project + stageSteps(`{uses: git-clone, config: {repoURL: 'file:///data', checkout: [{branch: main, path: src}]}}`), "spec.promotionTemplate.spec.steps[0].config.repoURL"},
		{"oci-push step", project + stageSteps(`{uses: oci-push, config: {srcRef: ghcr.io/a/b:1, destRef: /tmp/out}}`), "spec.promotionTemplate.spec.steps[0].config.destRef"},
		{"helm-update-chart step", project + stageSteps(`{uses: helm-update-chart, config: {path: c, charts: [{repository: 'file:///srv/charts/x', name: x, version: 1.0.0}]}}`), "spec.promotionTemplate.spec.steps[0].config.charts[0].repository"},
		{"http step", project + stageSteps(`{uses: http, config: {url: 'file:///etc/passwd'}}`), "spec.promotionTemplate.spec.steps[0].config.url"},
		{"git password", project + warehouse("  - git: {repoURL: 'https://bot:s3cret-tok@git.example.com/app.git'}\n"), "spec.subscriptions[0].git.repoURL"},
		{"git-clone password", project + stageSteps(`{uses: git-clone, config: {repoURL: 'https://bot:s3cret-tok@git.example.com/app.git', checkout: [{branch: main, path: src}]}}`), "spec.promotionTemplate.spec.steps[0].config.repoURL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dec, err := Decode([]byte(tt.input))
			if err != nil {
				t.Fatal(err)
			}
			issues := Validate(dec.Documents, nil)
			for _, is := range issues {
				if is.Field == tt.field {
					if !strings.Contains(is.Message, "refused") && !strings.Contains(is.Message, "http") {
						t.Errorf("message %q does not say why", is.Message)
					}
					if strings.Contains(is.Message, "s3cret") {
						t.Errorf("message %q shows the password", is.Message)
					}
					return
				}
			}
			t.Fatalf("no issue on %s in:\n%v", tt.field, issues)
		})
	}

	// An expression is checked when the step runs.
	dec, err := Decode([]byte(project + stageSteps(`{uses: git-clone, config: {repoURL: '${{ vars.repo }}', checkout: [{branch: main, path: src}]}}`)))
	if err != nil {
		t.Fatal(err)
	}
	if issues := Validate(dec.Documents, nil); len(issues) > 0 {
		t.Fatalf("an expression was refused:\n%v", issues)
	}
}

func stageSteps(steps string) string {
	return `apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: dev
  namespace: p
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: w}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - ` + steps + `
---
`
}

// FuzzRepoURL checks the URL policy's promises on any input: no panic, and
// nothing it accepts names a local path or a non-network scheme.
func FuzzRepoURL(f *testing.F) {
	for _, s := range []string{
		"https://github.com/acme/deploy.git", "git@github.com:acme/deploy.git", "ssh://git@h:22/x",
		"file:///etc/passwd", "/abs/path", "./rel", "~/home", "ext::sh -c x", "oci://ghcr.io/a/b:1",
		"ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef", "localhost:5000/app", "git@[::1]:x",
		"http://[::1]:80/x", "https://a%2f..%2f/x", "x@y:z", "HTTP://H/", "oci:///x",
	} {
		for _, k := range []byte{0, 1, 2} {
			f.Add(k, s)
		}
	}
	kinds := []RepoKind{RepoGit, RepoImage, RepoChart}
	f.Fuzz(func(t *testing.T, k byte, s string) {
		kind := kinds[int(k)%len(kinds)]
		err := CheckRepoURL(kind, s)
		if err != nil {
			if !errors.Is(err, ErrRepoURL) {
				t.Fatalf("%q: %v does not wrap ErrRepoURL", s, err)
			}
			return
		}
		lower := strings.ToLower(s)
		for _, p := range []string{"/", ".", "~", "\\", "file:", "-"} {
			if strings.HasPrefix(lower, p) {
				t.Fatalf("%s %q accepted: starts with %q", kind, s, p)
			}
		}
		if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			t.Fatalf("%s %q accepted with a space or control character", kind, s)
		}
		scheme, hasScheme := schemeOf(s)
		switch kind {
		case RepoGit:
			if hasScheme && scheme != "https" && scheme != "http" && scheme != "ssh" {
				t.Fatalf("git %q accepted with scheme %s", s, scheme)
			}
			if !hasScheme && !scpGitURL.MatchString(s) {
				t.Fatalf("git %q accepted: neither a URL nor user@host:path", s)
			}
			if n := NormalizeGitURL(s); strings.HasPrefix(n, "file:") || strings.HasPrefix(n, "/") {
				t.Fatalf("git %q normalizes to local %q", s, n)
			}
		case RepoChart:
			if !hasScheme || scheme != "https" && scheme != "http" && scheme != "oci" {
				t.Fatalf("chart %q accepted without https, http or oci", s)
			}
		case RepoImage:
			if hasScheme && scheme != "oci" || strings.Contains(strings.TrimPrefix(lower, "oci://"), "://") {
				t.Fatalf("image %q accepted with a scheme", s)
			}
			if strings.Contains(s, "..") || strings.Contains(s, "//") && !strings.HasPrefix(lower, "oci://") {
				t.Fatalf("image %q accepted with a dot-dot or empty path component", s)
			}
		}
	})
}

// A password written in a repository URL is refused, and the refusal shows
// the URL with the password masked and says where credentials go.
func TestCheckRepoURLPassword(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind RepoKind
		url  string
		want string
	}{
		{RepoGit, "https://bot:s3cret-tok@git.example.com/team/app.git", "https://bot:***@git.example.com/team/app.git holds a password"},
		{RepoGit, "ssh://git:s3cret-tok@git.example.com/team/app.git", "ssh://git:***@git.example.com/team/app.git holds a password"},
		{RepoGit, "https://bot:s3cret@tok@git.example.com/x?y=@z", "https://bot:***@git.example.com/x?y=@z holds a password"},
		{RepoGit, "https://bot:s3cret-tok@git.example.com/team app", `"https://bot:***@git.example.com/team app" contains a space`},
		{RepoGit, "https://github_pat_11AAs3cret_tok@github.com/acme/app.git", "https://***@github.com/acme/app.git holds a password or an access token"},
		{RepoChart, "https://bot:s3cret-tok@charts.example.com/", "kargo.akuity.io/cred-type: helm"},
		{RepoImage, "oci://bot:s3cret-tok@registry.example.com/app", "kargo.akuity.io/cred-type: image"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			err := CheckRepoURL(tt.kind, tt.url)
			if err == nil || !errors.Is(err, ErrRepoURL) {
				t.Fatalf("CheckRepoURL = %v, want a refusal", err)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "s3cret") {
				t.Errorf("refusal %q: want it to hold %q and no password", msg, tt.want)
			}
		})
	}
}
