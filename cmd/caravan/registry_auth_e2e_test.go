//go:build e2e

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// TestRegistryAuthE2E runs the shipped binary against two Debian
// docker-registry processes holding private repositories: one with token
// authentication (`auth: token`, bearer tokens from a token server
// speaking the distribution token spec, which checks a bcrypt htpasswd
// entry), one with `auth: htpasswd`. Kargo-form image Secrets
// (username/password) let discovery find a tag pushed after the first
// discovery, in both; a wrong password and a missing Secret end in
// Warehouse conditions that name the repository and never the password;
// and a promotion's oci-push and oci-download reach the token-auth
// registry with the project's credentials.
func TestRegistryAuthE2E(t *testing.T) {
	bin, root := buildCaravan(t)
	const (
		tokenPassword = "t0ken-s3cret-pw"
		htPassword    = "htpa55wd-s3cret"
		wrongPassword = "wr0ng-s3cret-pw"
	)
	tokenReg := testenv.StartDockerRegistry(t, testenv.WithTokenAuth("robot", tokenPassword))
	htReg := testenv.StartDockerRegistry(t, testenv.WithHtpasswd("robot", htPassword))
	tokenReg.PushImage(t, "team/app", "1.0.0")
	tokenReg.PushImage(t, "team/other", "1.0.0")
	tokenReg.PushImage(t, "team/private", "1.0.0")
	htReg.PushImage(t, "team/app", "1.0.0")

	// The promoter's egress policy refuses loopback unless allowed; discovery
	// has no such policy.
	s := startDemo(t, bin, root, "CARAVAN_EGRESS_ALLOW="+tokenReg.Host()+","+tokenReg.Tokens().Host())
	secret := func(name, repo, password string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: %s
  namespace: regauth
  labels: {kargo.akuity.io/cred-type: image}
stringData:
  repoURL: %s
  username: robot
  password: %s
---
`, name, repo, password)
	}
	warehouse := func(name, repo string) string {
		return fmt.Sprintf(`apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: %s, namespace: regauth}
spec:
  interval: 1h
  subscriptions:
  - image: {repoURL: "%s"}
---
`, name, repo)
	}
	app, released := tokenReg.Repo("team/app"), tokenReg.Repo("team/released")
	manifests := "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: regauth}\n---\n" +
		secret("token-app", app, tokenPassword) +
		secret("token-released", released, tokenPassword) +
		secret("htpasswd-app", htReg.Repo("team/app"), htPassword) +
		secret("wrong", tokenReg.Repo("team/other"), wrongPassword) +
		warehouse("token-app", app) +
		warehouse("htpasswd-app", htReg.Repo("team/app")) +
		warehouse("wrong-password", tokenReg.Repo("team/other")) +
		warehouse("no-credentials", tokenReg.Repo("team/private")) +
		fmt.Sprintf(`apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: release, namespace: regauth}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: token-app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      vars:
      - {name: app, value: "%s"}
      steps:
      - uses: oci-push
        as: push
        config:
          srcRef: ${{ vars.app }}:${{ imageFrom(vars.app).Tag }}
          destRef: %s:${{ imageFrom(vars.app).Tag }}
      - uses: oci-download
        config:
          imageRef: ${{ outputs.push.image }}
          outPath: layer.tar.gz
`, app, released)
	file := filepath.Join(t.TempDir(), "regauth.yaml")
	if err := os.WriteFile(file, []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := s.cli("apply", "-f", file); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	// (a) Discovery with username/password: the first tag, then one pushed
	// later, in both registries.
	waitTag := func(warehouse, tag string) model.Freight {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			for _, f := range s.freight("regauth") {
				if f.Origin.Name == warehouse && len(f.Images) == 1 && f.Images[0].Tag == tag {
					return f
				}
			}
			if time.Now().After(deadline) {
				whs, _ := s.cli("get", "warehouses", "-p", "regauth", "-o", "yaml")
				t.Fatalf("no freight of %s with tag %s within 2 min:\n%s", warehouse, tag, whs)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	waitTag("token-app", "1.0.0")
	waitTag("htpasswd-app", "1.0.0")
	tokenReg.PushImage(t, "team/app", "1.1.0")
	htReg.PushImage(t, "team/app", "1.1.0")
	for _, w := range []string{"token-app", "htpasswd-app"} {
		if out, err := s.cli("refresh", "warehouse", w, "-p", "regauth"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	newest := waitTag("token-app", "1.1.0")
	waitTag("htpasswd-app", "1.1.0")
	if issued, _, _ := tokenReg.Tokens().Counts(); issued == 0 {
		t.Fatal("the token server issued no token to the Secret's user")
	}

	// (b) A wrong password and no Secret at all: the Warehouse's condition
	// names the repository, never a password.
	for name, repo := range map[string]string{"wrong-password": tokenReg.Repo("team/other"), "no-credentials": tokenReg.Repo("team/private")} {
		var msg string
		deadline := time.Now().Add(2 * time.Minute)
		for msg == "" {
			msg = failedCondition(t, s, name)
			if msg == "" && time.Now().After(deadline) {
				whs, _ := s.cli("get", "warehouses", "-p", "regauth", "-o", "yaml")
				t.Fatalf("%s: no failing condition within 2 min:\n%s", name, whs)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if !strings.Contains(msg, repo) || !strings.Contains(strings.ToUpper(msg), "UNAUTHORIZED") {
			t.Errorf("%s: condition %q does not name %s and the refusal", name, msg, repo)
		}
		t.Logf("%s: %s", name, msg)
	}
	whs, _ := s.cli("get", "warehouses", "-p", "regauth", "-o", "yaml")
	for _, pw := range []string{tokenPassword, htPassword, wrongPassword} {
		if strings.Contains(whs, pw) || strings.Contains(s.logs.String(), pw) {
			t.Errorf("a password shows in the warehouses or the server log")
		}
	}

	// (c) A promotion copies the new image within the token-auth registry
	// (oci-push) and downloads its layer (oci-download), each reference
	// with its own Secret.
	pctx, pcancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer pcancel()
	out, err := s.commandContext(pctx, "promote", "-p", "regauth", "--stage", "release", "--freight", newest.Name, "--wait").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "succeeded") {
		promos, _ := s.cli("get", "promotions", "-p", "regauth", "-o", "yaml")
		t.Fatalf("promote: %v\n%s\n%s", err, out, promos)
	}
	if tags := tokenReg.Tags(t, "team/released"); !slices.Contains(tags, "1.1.0") {
		t.Fatalf("team/released tags %v, want 1.1.0", tags)
	}
	if strings.Contains(s.logs.String(), tokenPassword) {
		t.Error("the token registry's password shows in the server log")
	}
}

// failedCondition is the message of the Warehouse's condition that is
// not True (a failed discovery), "" while there is none.
func failedCondition(t *testing.T, s *demoServer, warehouse string) string {
	t.Helper()
	out, err := s.cli("get", "warehouse", warehouse, "-p", "regauth", "-o", "json")
	if err != nil {
		return ""
	}
	var w model.Warehouse
	if err := json.Unmarshal([]byte(out), &w); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, c := range w.Status.Conditions {
		if c.Status != model.ConditionTrue && c.Message != "" {
			return c.Message
		}
	}
	return ""
}
