// Package demo runs the demo pipeline beside `caravan server` (make run):
// an in-process OCI registry serving the demo image, a git server holding a
// kustomize deployment repository, the Kargo manifests of examples/demo
// applied through the API, and a publisher pushing a new image tag now and
// then so freight appears and moves by itself.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/client"
)

// Project is the demo's project.
const Project = "demo"

// Warehouse is the demo's warehouse.
const Warehouse = "app"

// Config configures the demo (prefix CARAVAN_).
type Config struct {
	// Enabled loads the demo; `make run` sets it.
	Enabled bool `envconfig:"DEMO" default:"false" desc:"run the demo pipeline beside the server (make run sets it)"`
	// Dir holds manifests/ (Kargo manifests with ${DEMO_*} placeholders)
	// and repo/ (the deployment repository's first commit).
	Dir string `envconfig:"DEMO_DIR" default:"examples/demo" desc:"the demo's manifests and repository content"`
	// PushInterval is how often the publisher pushes a new tag (0: never).
	PushInterval time.Duration `envconfig:"DEMO_PUSH_INTERVAL" default:"30s" desc:"how often the demo pushes a new image tag (0 turns it off)"`
	// RegistryAddr is where the demo registry listens (a free port when taken).
	RegistryAddr string `envconfig:"DEMO_REGISTRY_ADDR" default:"127.0.0.1:4280" desc:"listen address of the demo OCI registry"`
	// GitAddr is where the demo git server listens (a free port when taken).
	GitAddr string `envconfig:"DEMO_GIT_ADDR" default:"127.0.0.1:4281" desc:"listen address of the demo git server"`
}

// Demo is a started demo.
type Demo struct {
	// LoginURL, when set, is printed in the guide as the way into the web
	// UI (caravan server's one-time admin link).
	LoginURL string

	cfg      Config
	log      *slog.Logger
	dir      string // <data dir>/demo
	image    string // host:port/demo/app
	gitURL   string
	appURL   string // the demo application (its /healthz), on the git server
	addrs    []string
	bareRepo string
	servers  []*http.Server
	// endpoints are recorded for `caravan demo example`.
	endpoints Endpoints
}

// Dir is the demo's folder in the data dir.
func Dir(dataDir string) string { return filepath.Join(dataDir, "demo") }

// imageFile records the demo image repository for `caravan demo push`.
func imageFile(dir string) string { return filepath.Join(dir, "image") }

// Start starts the registry and the git server, creates the deployment
// repository on first use and pushes the demo image's recent tags.
func Start(ctx context.Context, cfg Config, dataDir string, log *slog.Logger) (_ *Demo, err error) {
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("the demo needs the git CLI: %w", err)
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	dir := Dir(abs)
	gitRoot := filepath.Join(dir, "git")
	if err := os.MkdirAll(gitRoot, 0o750); err != nil {
		return nil, fmt.Errorf("create demo dir: %w", err)
	}
	d := &Demo{cfg: cfg, log: log, dir: dir, bareRepo: filepath.Join(gitRoot, RepoName)}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	reg, regLn, err := newRegistry(cfg.RegistryAddr)
	if err != nil {
		return nil, err
	}
	d.servers = append(d.servers, reg)
	d.addrs = append(d.addrs, regLn.Addr().String())
	d.image = regLn.Addr().String() + "/" + Repository
	warnMoved(log, "registry", cfg.RegistryAddr, regLn.Addr().String())

	gs, gitLn, err := gitServer(gitPath, gitRoot, cfg.GitAddr)
	if err != nil {
		return nil, err
	}
	d.servers = append(d.servers, gs)
	d.addrs = append(d.addrs, gitLn.Addr().String())
	d.appURL = "http://" + gitLn.Addr().String()
	d.gitURL = d.appURL + "/" + RepoName
	warnMoved(log, "git server", cfg.GitAddr, gitLn.Addr().String())

	g := git{path: gitPath, home: dir}
	created, err := initRepo(ctx, g, d.bareRepo, filepath.Join(cfg.Dir, "repo"), d.replacer())
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("demo: created the deployment repository", "path", d.bareRepo)
	}
	if err := writeFileAtomic(imageFile(dir), []byte(d.image+"\n"), 0o644); err != nil {
		return nil, err
	}
	// The registry keeps images in memory: push the recent tags again.
	last := firstOf(readLastTag(dir), firstTag)
	for _, tag := range previousTags(last, keepTags) {
		if _, err := Push(ctx, d.image, tag); err != nil {
			return nil, err
		}
	}
	if err := writeLastTag(dir, last); err != nil {
		return nil, err
	}
	// And what `caravan demo example` pushed.
	if err := repushArtifacts(ctx, dir, regLn.Addr().String()); err != nil {
		return nil, err
	}
	d.endpoints = Endpoints{Registry: regLn.Addr().String(), Git: "http://" + gitLn.Addr().String()}
	if err := writeEndpoints(dir, d.endpoints); err != nil {
		return nil, err
	}
	log.Info("demo: registry and git server started", "image", d.image, "newest", last, "git", d.gitURL)
	return d, nil
}

// Image is the demo image repository (host:port/demo/app).
func (d *Demo) Image() string { return d.image }

// GitURL is the clone URL of the deployment repository.
func (d *Demo) GitURL() string { return d.gitURL }

// BareRepo is the deployment repository's directory.
func (d *Demo) BareRepo() string { return d.bareRepo }

// EgressAllow are the demo's servers (host:port), which the egress policy
// refuses by default (they listen on loopback): caravan server adds them
// to CARAVAN_EGRESS_ALLOW when it runs the demo.
func (d *Demo) EgressAllow() []string { return slices.Clone(d.addrs) }

// replacer fills the manifests' placeholders.
func (d *Demo) replacer() *strings.Replacer {
	return Replacer(d.image, d.gitURL, d.appURL)
}

// Replacer fills the ${DEMO_*} placeholders of the demo's files: the
// image repository, the deployment repository and the demo application
// whose /healthz the smoke test measures.
func Replacer(image, gitURL, appURL string) *strings.Replacer {
	return strings.NewReplacer(
		"${DEMO_IMAGE}", image,
		"${DEMO_GIT_URL}", gitURL,
		"${DEMO_APP_URL}", appURL,
	)
}

// Manifests reads dir/manifests/*.yaml in lexical order and joins them into
// one multi-document body with the placeholders filled.
func Manifests(dir string, r *strings.Replacer) ([]byte, error) {
	files, err := filepath.Glob(filepath.Join(dir, "manifests", "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no manifests in %s (set CARAVAN_DEMO_DIR, or run from the repository root)", filepath.Join(dir, "manifests"))
	}
	slices.Sort(files)
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		b.WriteString("---\n# " + filepath.Base(f) + "\n")
		b.WriteString(r.Replace(string(data)))
		b.WriteString("\n")
	}
	return []byte(b.String()), nil
}

// Load waits for the API, applies the demo manifests, asks for a first
// discovery and writes the newcomer's guide to guide.
func (d *Demo) Load(ctx context.Context, apiURL, token string, guide io.Writer) error {
	c, err := client.New(apiURL, token, client.WithUserAgent("caravan-demo"))
	if err != nil {
		return err
	}
	if err := waitReady(ctx, c); err != nil {
		return err
	}
	body, err := Manifests(d.cfg.Dir, d.replacer())
	if err != nil {
		return err
	}
	d.endpoints.API = apiURL
	if err := writeEndpoints(d.dir, d.endpoints); err != nil {
		return err
	}
	out, err := c.Apply(ctx, body)
	if err != nil {
		return fmt.Errorf("apply the demo manifests: %w", err)
	}
	for _, r := range out.Results {
		d.log.Debug("demo: applied", "kind", r.Kind, "name", r.Name, "action", r.Action)
	}
	d.log.Info("demo: manifests applied", "project", Project, "objects", len(out.Results))
	d.refresh(ctx, c, "the demo started")
	d.writeGuide(guide, apiURL)
	return nil
}

func waitReady(ctx context.Context, c *client.Client) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		err := c.Ready(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: the API did not become ready: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// refresh asks discovery to look at the warehouse now, saying why; the
// warehouse's own interval catches up if the route or discovery is not
// there.
func (d *Demo) refresh(ctx context.Context, c *client.Client, reason string) {
	if err := c.Refresh(ctx, Project, Warehouse, reason); err != nil && ctx.Err() == nil {
		d.log.Debug("demo: refresh the warehouse", "err", err)
	}
}

// Run pushes a new tag every PushInterval until ctx ends, then stops the
// registry and the git server.
func (d *Demo) Run(ctx context.Context, apiURL, token string) error {
	defer d.close()
	if d.cfg.PushInterval <= 0 {
		<-ctx.Done()
		return nil
	}
	c, err := client.New(apiURL, token, client.WithUserAgent("caravan-demo"))
	if err != nil {
		return err
	}
	t := time.NewTicker(d.cfg.PushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		tag, digest, err := PushNext(ctx, d.dir)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.log.Warn("demo: push a new tag", "err", err)
			continue
		}
		d.log.Info("demo: pushed a new image tag", "image", d.image+":"+tag, "digest", digest)
		d.refresh(ctx, c, "the demo pushed "+d.image+":"+tag)
	}
}

// PushNext pushes the next patch tag of the demo image of the demo dir
// dir (as `caravan demo push` does) and returns the tag and its digest.
func PushNext(ctx context.Context, dir string) (tag, digest string, err error) {
	b, err := os.ReadFile(imageFile(dir))
	if errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("no demo in %s: start it with 'make run' (CARAVAN_DEMO=true caravan server)", dir)
	}
	if err != nil {
		return "", "", err
	}
	image := strings.TrimSpace(string(b))
	tag, err = NextTag(ctx, image)
	if err != nil {
		return "", "", fmt.Errorf("%w (is the demo server running?)", err)
	}
	if digest, err = Push(ctx, image, tag); err != nil {
		return "", "", err
	}
	if err := writeLastTag(dir, tag); err != nil {
		return "", "", err
	}
	return tag, digest, nil
}

// ImageOf returns the demo image repository recorded in the demo dir.
func ImageOf(dir string) (string, error) {
	b, err := os.ReadFile(imageFile(dir))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func (d *Demo) close() {
	for _, s := range d.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.Shutdown(ctx)
		cancel()
	}
	d.servers = nil
}

func (d *Demo) writeGuide(w io.Writer, apiURL string) {
	if w == nil {
		return
	}
	interval := "never (CARAVAN_DEMO_PUSH_INTERVAL=0)"
	if d.cfg.PushInterval > 0 {
		interval = "every " + d.cfg.PushInterval.String()
	}
	repo := relative(d.bareRepo)
	env := ""
	if apiURL != "http://127.0.0.1:8080" {
		env += "   export CARAVAN_SERVER=" + apiURL + "\n"
	}
	if dataDir := filepath.Dir(d.dir); relative(dataDir) != ".caravan" {
		env += "   export CARAVAN_DATA_DIR=" + dataDir + "\n"
	}
	ui := apiURL + "/projects/" + Project
	if d.LoginURL != "" {
		ui = d.LoginURL + "  (one-time sign-in link; then " + apiURL + "/projects/" + Project + ")"
	}
	fmt.Fprintf(w, `
──────────────────────────────────────────────────────────────────────────
 Caravan demo: project %[1]q, pipeline dev → staging → prod
   web UI   %[8]s
   api      %[6]s
   image    %[2]s  (a new tag %[3]s; 'make demo-push' pushes one now)
   git      %[4]s  (bare repository: %[5]s)
   dev is promoted automatically, staging once dev is verified, prod by hand.

 In another terminal:
%[7]s   bin/caravan get freight -p demo        # what was discovered, and where it is
   bin/caravan get stages -p demo         # what each stage runs
   bin/caravan watch -p demo              # events as they happen
   bin/caravan promote -p demo --stage prod --freight-alias <ALIAS> --wait
   git --git-dir %[5]s log --oneline --stat
──────────────────────────────────────────────────────────────────────────

`, Project, d.image, interval, d.gitURL, repo, apiURL, env, ui)
}

// warnMoved warns when a demo server could not listen where it was asked
// to: freight and commits of earlier runs name the old address.
func warnMoved(log *slog.Logger, what, want, got string) {
	if _, port, err := net.SplitHostPort(want); err == nil && port != "0" && want != got {
		log.Warn("demo: address taken, listening elsewhere; freight from earlier runs names the old address",
			"server", what, "wanted", want, "address", got)
	}
}

// relative is path relative to the working directory when it is below it.
func relative(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	if rel, err := filepath.Rel(wd, abs); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return path
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
