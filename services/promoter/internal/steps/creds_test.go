package steps

import (
	"context"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	helmregistry "helm.sh/helm/v3/pkg/registry"

	"github.com/caravan-cd/caravan/pkg/creds"
	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/model"
)

// basicAuth puts HTTP basic authentication in front of h, as a registry or
// chart repository with a robot account does: a request without the
// user's password is answered 401 with a Basic challenge.
func basicAuth(h http.Handler, user, password string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// credSecret is a Secret as a project holds repository credentials.
func credSecret(name, credType, repoURL, user, password string) *model.Secret {
	return &model.Secret{
		ObjectMeta: model.ObjectMeta{Name: name, Labels: map[string]string{model.LabelCredType: credType}},
		StringData: map[string]string{"repoURL": repoURL, "username": user, "password": password},
	}
}

// lookups records the credential lookups of a step and answers them from
// secrets with pkg/creds' matching, as the engine does.
type lookups struct {
	mu      sync.Mutex
	secrets []*model.Secret
	asked   []string // "<type> <repoURL>"
}

func (l *lookups) find(_ context.Context, _, credType, repoURL string) (*creds.Credentials, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked = append(l.asked, credType+" "+repoURL)
	normalize := map[string]func(string) string{model.CredTypeImage: model.NormalizeImageURL, model.CredTypeHelm: model.NormalizeChartURL}[credType]
	return creds.Match(l.secrets, credType, repoURL, normalize), nil
}

// oci-push and oci-download authenticate with the project's credentials:
// of type image for a plain reference, helm for an oci:// one (Kargo's
// rule), each registry of a push with its own.
func TestOCICredentials(t *testing.T) {
	t.Parallel()
	newRegistry := func(user, password string) string {
		srv := httptest.NewServer(basicAuth(registry.New(registry.Logger(log.New(io.Discard, "", 0))), user, password))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	src, dst := newRegistry("puller", "s3cret-src"), newRegistry("pusher", "s3cret-dst")
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(src+"/team/app:1.0.0", name.Insecure)
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "puller", Password: "s3cret-src"})); err != nil {
		t.Fatal(err)
	}
	l := &lookups{secrets: []*model.Secret{
		credSecret("src", model.CredTypeImage, src+"/team/app", "puller", "s3cret-src"),
		credSecret("dst", model.CredTypeHelm, `^oci://`+strings.ReplaceAll(dst, ".", `\.`)+`/.*$`, "pusher", "s3cret-dst"),
	}}
	l.secrets[1].StringData["repoURLIsRegex"] = "true"
	sc := newContext(t, map[string]any{"srcRef": src + "/team/app:1.0.0", "destRef": "oci://" + dst + "/charts/app:prod"})
	sc.Egress = allowLoopback(t, egress.Config{})

	// Without credentials both registries refuse.
	if _, err := run(t, "oci-push", sc); err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
		t.Fatalf("without credentials: %v", err)
	}
	sc.RepoCredentials = l.find
	res, err := run(t, "oci-push", sc)
	if err != nil || res.Output["tag"] != "prod" {
		t.Fatalf("with credentials: %+v %v", res, err)
	}
	want := []string{"image " + src + "/team/app", "helm oci://" + dst + "/charts/app"}
	if strings.Join(l.asked, "|") != strings.Join(want, "|") {
		t.Fatalf("lookups %q, want %q", l.asked, want)
	}
	sc.Config = map[string]any{"imageRef": "oci://" + dst + "/charts/app:prod", "outPath": "chart.tgz"}
	if _, err := run(t, "oci-download", sc); err != nil {
		t.Fatalf("oci-download: %v", err)
	}

	// A wrong password fails, and the error does not carry it.
	l.secrets[0].StringData["password"] = "wrong-password"
	sc.Config = map[string]any{"srcRef": src + "/team/app:1.0.0", "destRef": "oci://" + dst + "/charts/app:again"}
	if _, err := run(t, "oci-push", sc); err == nil || strings.Contains(err.Error(), "wrong-password") {
		t.Fatalf("a wrong password: %v", err)
	}
}

// helm-update-chart and helm-template's dependency build reach a private
// chart repository with the project's helm credentials for it.
func TestHelmCredentials(t *testing.T) {
	t.Parallel()
	dep := t.TempDir()
	for name, content := range map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: dep\nversion: 0.2.0\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dep\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dep, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dep, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	repoURL := chartRepoWith(t, dep, func(h http.Handler) http.Handler { return basicAuth(h, "robot", "chart-s3cret") })
	sc := newContext(t, map[string]any{"path": "charts/app", "charts": []any{map[string]any{"repository": repoURL, "name": "dep", "version": "0.2.0"}}})
	sc.Egress = allowLoopback(t, egress.Config{})
	write(t, sc, "charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n  - name: dep\n    version: 0.1.0\n    repository: "+repoURL+"\n")
	if _, err := run(t, "helm-update-chart", sc); err == nil {
		t.Fatal("without credentials: fetched")
	}
	l := &lookups{secrets: []*model.Secret{credSecret("charts", model.CredTypeHelm, repoURL, "robot", "chart-s3cret")}}
	sc.RepoCredentials = l.find
	if _, err := run(t, "helm-update-chart", sc); err != nil {
		t.Fatalf("with credentials: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sc.Workspace.Dir.Path(), "charts/app/charts/dep-0.2.0.tgz")); err != nil {
		t.Fatalf("dependency not fetched: %v", err)
	}
	if len(l.asked) != 1 || l.asked[0] != "helm "+repoURL {
		t.Fatalf("lookups %q", l.asked)
	}
	if err := os.RemoveAll(filepath.Join(sc.Workspace.Dir.Path(), "charts/app/charts")); err != nil {
		t.Fatal(err)
	}
	sc.Config = map[string]any{"path": "charts/app", "outPath": "out.yaml", "buildDependencies": true}
	if _, err := run(t, "helm-template", sc); err != nil {
		t.Fatalf("helm-template building dependencies: %v", err)
	}
	l.secrets[0].StringData["password"] = "wrong-password"
	sc.Config = map[string]any{"path": "charts/app", "charts": []any{map[string]any{"repository": repoURL, "name": "dep", "version": "0.2.0"}}}
	if _, err := run(t, "helm-update-chart", sc); err == nil || strings.Contains(err.Error(), "wrong-password") {
		t.Fatalf("a wrong password: %v", err)
	}
}

// An OCI chart dependency is fetched with the project's helm credentials
// for the chart's repository (oci://<registry>/<path>/<name>).
func TestHelmOCICredentials(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(basicAuth(registry.New(registry.Logger(log.New(io.Discard, "", 0))), "robot", "oci-s3cret"))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	dep := t.TempDir()
	if err := os.WriteFile(filepath.Join(dep, "Chart.yaml"), []byte("apiVersion: v2\nname: dep\nversion: 0.2.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ch, err := loader.Load(dep)
	if err != nil {
		t.Fatal(err)
	}
	tgz, err := chartutil.Save(ch, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(tgz)
	if err != nil {
		t.Fatal(err)
	}
	auth := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(auth, []byte(`{"auths":{"`+host+`":{"auth":"`+base64.StdEncoding.EncodeToString([]byte("robot:oci-s3cret"))+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	pusher, err := helmregistry.NewClient(helmregistry.ClientOptCredentialsFile(auth), helmregistry.ClientOptPlainHTTP())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pusher.Push(data, host+"/charts/dep:0.2.0"); err != nil {
		t.Fatal(err)
	}

	repoURL := "oci://" + host + "/charts"
	sc := newContext(t, map[string]any{"path": "charts/app", "charts": []any{map[string]any{"repository": repoURL, "name": "dep", "version": "0.2.0"}}})
	sc.Egress = allowLoopback(t, egress.Config{})
	write(t, sc, "charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n  - name: dep\n    version: 0.1.0\n    repository: "+repoURL+"\n")
	if _, err := run(t, "helm-update-chart", sc); err == nil {
		t.Fatal("without credentials: fetched")
	}
	l := &lookups{secrets: []*model.Secret{credSecret("charts", model.CredTypeHelm, repoURL+"/dep", "robot", "oci-s3cret")}}
	sc.RepoCredentials = l.find
	if _, err := run(t, "helm-update-chart", sc); err != nil {
		t.Fatalf("with credentials: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sc.Workspace.Dir.Path(), "charts/app/charts/dep-0.2.0.tgz")); err != nil {
		t.Fatalf("dependency not fetched: %v", err)
	}
}
