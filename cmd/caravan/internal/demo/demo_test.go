package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/services/gateway"
)

// examples is the demo's folder in the repository.
const examples = "../../../../examples/demo"

func testConfig() Config {
	return Config{Enabled: true, Dir: examples, PushInterval: 0, RegistryAddr: "127.0.0.1:0", GitAddr: "127.0.0.1:0"}
}

func TestManifestsDecodeAndValidate(t *testing.T) {
	t.Parallel()
	body, err := Manifests(examples, Replacer("127.0.0.1:4280/demo/app", "http://127.0.0.1:4281/deploy.git", "http://127.0.0.1:8080"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(body, []byte("${DEMO_")) {
		t.Errorf("a placeholder was left:\n%s", body)
	}
	dec, err := model.Decode(body)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(dec.Warnings) > 0 {
		t.Errorf("warnings: %v", dec.Warnings)
	}
	if issues := model.Validate(dec.Documents, nil); len(issues) > 0 {
		t.Fatalf("validate: %v", issues)
	}
	kinds := map[string][]string{}
	for _, d := range dec.Documents {
		k := d.Object.GetTypeMeta().Kind
		kinds[k] = append(kinds[k], d.Object.GetObjectMeta().Name)
	}
	if got := strings.Join(kinds[model.KindStage], ","); got != "dev,staging,prod" {
		t.Errorf("stages %s", got)
	}
	for _, d := range dec.Documents {
		switch o := d.Object.(type) {
		case *model.ProjectConfig:
			auto := map[string]bool{}
			for _, p := range o.Spec.PromotionPolicies {
				auto[p.Stage] = p.AutoPromotionEnabled
			}
			if !auto["dev"] || !auto["staging"] || auto["prod"] {
				t.Errorf("auto-promotion %v: want dev and staging, not prod", auto)
			}
		case *model.Warehouse:
			if o.Spec.Subscriptions[0].Image.RepoURL != "127.0.0.1:4280/demo/app" {
				t.Errorf("warehouse image %q", o.Spec.Subscriptions[0].Image.RepoURL)
			}
		}
	}
}

func TestImagesAreReproducible(t *testing.T) {
	t.Parallel()
	a, err := Image("1.0.7")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Image("1.0.7")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Image("1.0.8")
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	dc, _ := c.Digest()
	if da != db || da == dc {
		t.Errorf("digests %s %s %s: want the same tag to give the same image", da, db, dc)
	}
	if got := previousTags("1.0.3", 20); strings.Join(got, ",") != "1.0.0,1.0.1,1.0.2,1.0.3" {
		t.Errorf("previousTags = %v", got)
	}
	if got := previousTags("1.0.30", 3); strings.Join(got, ",") != "1.0.28,1.0.29,1.0.30" {
		t.Errorf("previousTags = %v", got)
	}
	if got := nextAfter([]string{"1.0.9", "latest", "1.0.10", "0.9.0"}); got != "1.0.11" {
		t.Errorf("nextAfter = %s", got)
	}
}

// TestStart starts the demo's registry and git server for real and checks
// the image and the repository, then pushes as `caravan demo push` does.
func TestStart(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("the demo needs the git CLI: install it (apt-get install git)")
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	d, err := Start(ctx, testConfig(), dataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()

	tags, err := remote.List(mustRepo(t, d.Image()))
	if err != nil || strings.Join(tags, ",") != "1.0.0" {
		t.Fatalf("tags %v, %v", tags, err)
	}
	tag, digest, err := PushNext(ctx, Dir(dataDir))
	if err != nil || tag != "1.0.1" || !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("PushNext = %s %s %v", tag, digest, err)
	}
	if got := readLastTag(Dir(dataDir)); got != "1.0.1" {
		t.Errorf("last tag %q", got)
	}

	// The repository is served over HTTP, and takes pushes.
	work := t.TempDir()
	g := git{path: "git", home: t.TempDir()}
	if _, err := g.run(ctx, "", "clone", "--quiet", d.GitURL(), work); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(work, "base", "deployment.yaml"))
	if err != nil || !strings.Contains(string(b), "image: "+d.Image()+":1.0.0") {
		t.Errorf("base/deployment.yaml: %v\n%s", err, b)
	}
	for _, s := range []string{"dev", "staging", "prod"} {
		if _, err := os.Stat(filepath.Join(work, "overlays", s, "kustomization.yaml")); err != nil {
			t.Error(err)
		}
	}
	if err := os.WriteFile(filepath.Join(work, "overlays", "dev", "note.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"add", "--all"}, {"commit", "--quiet", "-m", "test"}, {"push", "--quiet", "origin", "main"}} {
		if _, err := g.run(ctx, work, args...); err != nil {
			t.Fatal(err)
		}
	}
	log, err := g.run(ctx, "", "--git-dir", d.BareRepo(), "log", "--oneline")
	if err != nil || len(strings.Split(log, "\n")) != 2 {
		t.Errorf("log after push: %v\n%s", err, log)
	}
	d.close()

	// A restart keeps the repository and serves the recent tags again.
	d2, err := Start(ctx, testConfig(), dataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d2.close()
	tags, err = remote.List(mustRepo(t, d2.Image()))
	if err != nil || strings.Join(tags, ",") != "1.0.0,1.0.1" {
		t.Errorf("tags after restart %v, %v", tags, err)
	}
	log2, err := g.run(ctx, "", "--git-dir", d2.BareRepo(), "log", "--oneline")
	if err != nil || log2 != log {
		t.Errorf("repository changed across a restart: %v\n%s", err, log2)
	}
}

func mustRepo(t *testing.T, repo string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestLoadOnServer applies the demo to a real in-process caravan server.
func TestLoadOnServer(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("the demo needs the git CLI: install it (apt-get install git)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dataDir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		Config: gateway.Config{
			Common: service.Common{
				DataDir:      dataDir,
				StreamConfig: events.DefaultStreamConfig(),
				LogConfig:    telemetry.LogConfig{Level: "info", Format: "text"},
			},
			HTTPAddr:        ln.Addr().String(),
			MaxBodyBytes:    10 << 20,
			ShutdownTimeout: 5 * time.Second,
		},
	}
	d, err := Start(ctx, testConfig(), dataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	started := make(chan server.Info, 1)
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, cfg, server.Options{Logger: slog.New(slog.DiscardHandler), Listener: ln, Started: func(i server.Info) { started <- i }})
	}()
	var info server.Info
	select {
	case info = <-started:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(60 * time.Second):
		t.Fatal("server did not start")
	}
	var guide bytes.Buffer
	if err := d.Load(ctx, info.APIURL, info.AdminToken, &guide); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bin/caravan get freight -p demo", d.GitURL(), d.Image(), "make demo-push"} {
		if !strings.Contains(guide.String(), want) {
			t.Errorf("guide lacks %q:\n%s", want, guide.String())
		}
	}
	req, _ := http.NewRequest(http.MethodGet, info.APIURL+"/v1/projects/demo/stages", nil)
	req.Header.Set("Authorization", "Bearer "+info.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var list struct {
		Items []model.Stage `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Items) != 3 {
		t.Errorf("stages: %v %+v", err, list)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("server: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Error("server did not stop")
	}
}
