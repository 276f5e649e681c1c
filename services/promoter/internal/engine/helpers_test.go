package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	project   = "demo"
	gitUser   = "caravan"
	gitPass   = "hunter2-very-secret"
	imageRepo = "ghcr.io/acme/guestbook"
)

func openStore(t testing.TB) *state.Store {
	t.Helper()
	js, err := jetstream.New(testenv.NATS(t).Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Setup(context.Background(), js, 1); err != nil {
		t.Fatal(err)
	}
	sealer, err := state.NewSealer(bytes.Repeat([]byte{7}, state.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	s, err := state.Open(context.Background(), js, sealer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fixture is a store with a project's git credentials and one freight, a
// git server with basic auth and an engine.
type fixture struct {
	t       testing.TB
	store   *state.Store
	git     *testenv.Git
	engine  *Engine
	freight *model.Freight
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{store: openStore(t), git: testenv.GitServer(t, testenv.WithBasicAuth(gitUser, gitPass))}
	eng, err := New(Options{DataDir: t.TempDir(), Store: f.store, PollInterval: 50 * time.Millisecond, Egress: loopback(t)})
	if err != nil {
		t.Fatal(err)
	}
	f.engine = eng
	f.put(t, &model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "git-creds", Namespace: project, Labels: map[string]string{model.LabelCredType: model.CredTypeGit}},
		StringData: map[string]string{"repoURL": "^http://127\\.0\\.0\\.1:.*$", "repoURLIsRegex": "true", "username": gitUser, "password": gitPass},
	})
	fr := &model.Freight{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
		ObjectMeta: model.ObjectMeta{Name: "f0123456789", Namespace: project},
		Alias:      "wild-cat",
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images:     []model.Image{{RepoURL: imageRepo, Tag: "1.4.0", Digest: "sha256:abc"}},
	}
	f.put(t, fr)
	f.freight = fr
	return f
}

func (f *fixture) put(t testing.TB, obj model.Object) {
	t.Helper()
	if _, err := f.store.PutObject(context.Background(), obj, 0); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) promotion(name string, vars []model.PromotionVariable, steps ...model.PromotionStep) *model.Promotion {
	return &model.Promotion{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion},
		ObjectMeta: model.ObjectMeta{Name: name, Namespace: project},
		Spec:       model.PromotionSpec{Stage: "dev", Freight: f.freight.Name, Vars: vars, Steps: steps},
		Status:     model.PromotionStatus{Phase: model.PromotionPhaseRunning},
	}
}

// recorder is a save function that keeps every saved version.
type recorder struct {
	mu    sync.Mutex
	saves []string
	fail  func(p *model.Promotion) error
}

func (r *recorder) save(_ context.Context, p *model.Promotion) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.saves = append(r.saves, string(b))
	r.mu.Unlock()
	if r.fail != nil {
		return r.fail(p)
	}
	return nil
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b bytes.Buffer
	for _, s := range r.saves {
		b.WriteString(s)
	}
	return b.String()
}

func step(uses, as string, config map[string]any) model.PromotionStep {
	return model.PromotionStep{Uses: uses, As: as, Config: config}
}

func runPromotion(t testing.TB, e *Engine, p *model.Promotion) (Result, *recorder) {
	t.Helper()
	rec := &recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := e.Run(ctx, p, rec.save)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res, rec
}

func statuses(p *model.Promotion) []model.PromotionStepStatus {
	var out []model.PromotionStepStatus
	for _, md := range p.Status.StepExecutionMetadata {
		out = append(out, md.Status)
	}
	return out
}

const kustomization = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
images:
  - name: ghcr.io/acme/guestbook
    newTag: 1.3.0
`

// imagePipeline is Kargo's documented image-update promotion: clone,
// kustomize-set-image, commit with its message, push.
func imagePipeline(repoURL string) []model.PromotionStep {
	return []model.PromotionStep{
		step("git-clone", "clone", map[string]any{
			"repoURL":  repoURL,
			"checkout": []any{map[string]any{"branch": "main", "path": "./src"}},
		}),
		step("kustomize-set-image", "update", map[string]any{
			"path":   "./src/env/${{ ctx.stage }}",
			"images": []any{map[string]any{"image": imageRepo, "tag": "${{ imageFrom(vars.image).tag }}"}},
		}),
		step("git-commit", "commit", map[string]any{
			"path":    "./src",
			"message": "${{ outputs.update.commitMessage }}",
		}),
		step("git-push", "push", map[string]any{"path": "./src"}),
	}
}

// loopback is an egress policy opening loopback, where the tests' servers
// listen (the default policy refuses it).
func loopback(t testing.TB) *egress.Policy {
	t.Helper()
	p, err := egress.New(egress.Config{Allow: "127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func httpServer(t testing.TB, respond func() (int, string)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		code, body := respond()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
