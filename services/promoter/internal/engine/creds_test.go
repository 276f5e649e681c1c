package engine

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// A promotion clones, commits and pushes over SSH with the project's
// sshPrivateKey Secret, the server's host key checked against the known
// hosts; against a server not in them, it errors saying so, and the key
// stays out of the record.
func TestGitOverSSH(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.git.CreateRepo(t, "app")
	f.git.Seed(t, "app", map[string]string{"env/dev/kustomization.yaml": kustomization}, "init")
	pemKey, pub := testenv.NewSSHKey(t)
	known := testenv.SSHGitServer(t, f.git, pub)
	unknown := testenv.SSHGitServer(t, f.git, pub)
	khFile := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(khFile, []byte(known.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kh, err := creds.KnownHosts(khFile)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := New(Options{DataDir: t.TempDir(), Store: f.store, PollInterval: 50 * time.Millisecond, Egress: loopback(t),
		Credentials: creds.NewFinder(creds.Store{Store: f.store}, creds.Options{KnownHosts: kh})})
	if err != nil {
		t.Fatal(err)
	}
	f.put(t, &model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "deploy-key", Namespace: project, Labels: map[string]string{model.LabelCredType: model.CredTypeGit}},
		StringData: map[string]string{"repoURL": `^ssh://git@127\.0\.0\.1:\d+/app\.git$`, "repoURLIsRegex": "true", "sshPrivateKey": string(pemKey)},
	})
	res, rec := runPromotion(t, eng, f.promotion("dev.30.f012345", imageVars, imagePipeline(known.URL("app"))...))
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s", res.Phase, res.Message)
	}
	if got := f.git.Show(t, "app", "main", "env/dev/kustomization.yaml"); !strings.Contains(got, "newTag: 1.4.0") {
		t.Fatalf("pushed kustomization:\n%s", got)
	}
	if known.Sessions() < 2 {
		t.Errorf("%d git commands over SSH, want a fetch and a push", known.Sessions())
	}
	res, rec2 := runPromotion(t, eng, f.promotion("dev.31.f012345", imageVars, imagePipeline(unknown.URL("app"))...))
	if res.Phase != model.PromotionPhaseErrored || !strings.Contains(res.Message, "is not in the known hosts") {
		t.Fatalf("unknown host: phase %s: %s", res.Phase, res.Message)
	}
	if unknown.Sessions() != 0 {
		t.Errorf("%d git commands ran on an unknown host", unknown.Sessions())
	}
	for _, r := range []*recorder{rec, rec2} {
		if strings.Contains(r.all()+res.Message, string(pemKey[40:80])) {
			t.Fatal("the private key reached a saved promotion")
		}
	}
}

// A promotion clones and pushes with a GitHub App Secret: the engine
// exchanges the App's key for an installation token (through the egress
// policy) at the GitHub API beside the repository, and uses it as
// x-access-token; the token stays out of the record.
func TestGitHubAppPromotion(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	api := &testenv.GitHubAppAPI{Key: &key.PublicKey, Issuer: "Iv23liCaravan", Installation: "31337"}
	g := testenv.GitServer(t, testenv.WithBasicAuth("x-access-token", "ghs_token1"), testenv.WithAPI(api))
	url := g.CreateRepo(t, "app")
	g.Seed(t, "app", map[string]string{"env/dev/kustomization.yaml": kustomization}, "init")
	store := openStore(t)
	eng, err := New(Options{DataDir: t.TempDir(), Store: store, PollInterval: 50 * time.Millisecond, Egress: loopback(t)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: store, git: g, engine: eng}
	f.freight = &model.Freight{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
		ObjectMeta: model.ObjectMeta{Name: "f0123456789", Namespace: project},
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images:     []model.Image{{RepoURL: imageRepo, Tag: "1.4.0", Digest: "sha256:abc"}},
	}
	f.put(t, f.freight)
	f.put(t, &model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "github-app", Namespace: project, Labels: map[string]string{model.LabelCredType: model.CredTypeGit}},
		StringData: map[string]string{"repoURL": url, "githubAppClientID": "Iv23liCaravan", "githubAppInstallationID": "31337",
			"githubAppPrivateKey": string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))},
	})
	res, rec := runPromotion(t, eng, f.promotion("dev.32.f012345", imageVars, imagePipeline(url)...))
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s", res.Phase, res.Message)
	}
	if got := g.Show(t, "app", "main", "env/dev/kustomization.yaml"); !strings.Contains(got, "newTag: 1.4.0") {
		t.Fatalf("pushed kustomization:\n%s", got)
	}
	if api.Calls() != 1 {
		t.Errorf("%d installation tokens, want 1 (clone and push share the cached one)", api.Calls())
	}
	if strings.Contains(rec.all(), "ghs_token1") {
		t.Fatal("the installation token reached the saved promotion")
	}
}
