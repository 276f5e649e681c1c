package engine

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/promoter/internal/steps"
)

var imageVars = []model.PromotionVariable{{Name: "image", Value: imageRepo}}

func TestKustomizeImagePipeline(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := f.git.CreateRepo(t, "app")
	f.git.Seed(t, "app", map[string]string{"env/dev/kustomization.yaml": kustomization, "env/dev/deployment.yaml": "kind: Deployment\n"}, "init")

	p := f.promotion("dev.01.f012345", imageVars, imagePipeline(url)...)
	res, rec := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s (steps %v)", res.Phase, res.Message, statuses(p))
	}
	got := f.git.Show(t, "app", "main", "env/dev/kustomization.yaml")
	if !strings.Contains(got, "newTag: 1.4.0") || strings.Contains(got, "1.3.0") {
		t.Fatalf("kustomization after promotion:\n%s", got)
	}
	head := f.git.Head(t, "app")
	if c := p.Status.State["commit"].(map[string]any)["commit"]; c != head {
		t.Fatalf("outputs.commit.commit = %v, remote main = %s", c, head)
	}
	if c := p.Status.State["push"].(map[string]any)["commit"]; c != head {
		t.Fatalf("outputs.push.commit = %v, remote main = %s", c, head)
	}
	msg := f.git.Run(t, f.git.Path("app"), "log", "-1", "--format=%B", "main")
	if !strings.Contains(msg, "Updated ./src/env/dev to use new image") || !strings.Contains(msg, imageRepo+":1.4.0") {
		t.Fatalf("commit message %q", msg)
	}
	if p.Status.CurrentStep != 4 {
		t.Fatalf("CurrentStep = %d, want 4", p.Status.CurrentStep)
	}
	for i, md := range p.Status.StepExecutionMetadata {
		if md.StartedAt == nil || md.FinishedAt == nil || md.Status != model.PromotionStepStatusSucceeded {
			t.Fatalf("step %d metadata %+v", i, md)
		}
	}
	if strings.Contains(rec.all(), gitPass) {
		t.Fatal("the git password reached a saved promotion")
	}
	entries, _ := os.ReadDir(f.engine.workRoot)
	if len(entries) != 0 {
		t.Fatalf("work dir left behind: %v", entries)
	}
}

// raceStep pushes a commit to the remote behind the promotion's back.
type raceStep struct {
	f    *fixture
	t    testing.TB
	done atomic.Bool
}

func (r *raceStep) Run(context.Context, *steps.Context) (steps.Result, error) {
	if !r.done.Swap(true) {
		r.f.git.Seed(r.t, "app", map[string]string{"README.md": "someone else was here\n"}, "concurrent change")
	}
	return steps.Result{}, nil
}

func TestPushRaceResolvedByRefetchAndRebase(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := f.git.CreateRepo(t, "app")
	f.git.Seed(t, "app", map[string]string{"env/dev/kustomization.yaml": kustomization}, "init")
	f.engine.Register("test-race", &raceStep{f: f, t: t})

	pipeline := imagePipeline(url)
	// The remote moves on after the commit, before the push.
	pipeline = append(pipeline[:3], append([]model.PromotionStep{step("test-race", "race", nil)}, pipeline[3:]...)...)
	p := f.promotion("dev.02.f012345", imageVars, pipeline...)
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s", res.Phase, res.Message)
	}
	if got := f.git.Show(t, "app", "main", "README.md"); got != "someone else was here" {
		t.Fatalf("the concurrent change was lost: %q", got)
	}
	if got := f.git.Show(t, "app", "main", "env/dev/kustomization.yaml"); !strings.Contains(got, "1.4.0") {
		t.Fatalf("the promotion's change was lost:\n%s", got)
	}
	parent := f.git.Run(t, f.git.Path("app"), "log", "-1", "--format=%s", "main~1")
	if parent != "concurrent change" {
		t.Fatalf("the promotion's commit is not on top of the concurrent one: parent %q", parent)
	}
	if c := p.Status.State["push"].(map[string]any)["commit"]; c != f.git.Head(t, "app") {
		t.Fatalf("outputs.push.commit = %v, want the rebased head", c)
	}
}

func TestResumeDoesNotPushTwice(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := f.git.CreateRepo(t, "app")
	f.git.Seed(t, "app", map[string]string{"env/dev/kustomization.yaml": kustomization}, "init")
	p := f.promotion("dev.03.f012345", imageVars, imagePipeline(url)...)
	if res, _ := runPromotion(t, f.engine, p); res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s", res.Phase, res.Message)
	}
	head := f.git.Head(t, "app")
	// The process died after the push landed but before it was saved:
	// another replica resumes at the push step.
	p.Status.CurrentStep = 3
	p.Status.StepExecutionMetadata[3].Status = model.PromotionStepStatusRunning
	p.Status.StepExecutionMetadata[3].FinishedAt = nil
	delete(p.Status.State, "push")
	other, err := New(Options{DataDir: t.TempDir(), Store: f.store})
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := runPromotion(t, other, p); res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("resumed phase %s: %s", res.Phase, res.Message)
	}
	if got := f.git.Head(t, "app"); got != head {
		t.Fatalf("resuming pushed again: main moved from %s to %s", head, got)
	}
	if n := f.git.Run(t, f.git.Path("app"), "rev-list", "--count", "main"); n != "2" {
		t.Fatalf("main has %s commits, want 2", n)
	}
}

// countStep counts its runs.
type countStep struct{ n atomic.Int32 }

func (c *countStep) Run(context.Context, *steps.Context) (steps.Result, error) {
	c.n.Add(1)
	return steps.Result{Output: map[string]any{"n": float64(c.n.Load())}}, nil
}

func TestResumeSkipsFinishedSteps(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	counter := &countStep{}
	f.engine.Register("test-count", counter)
	p := f.promotion("dev.04.f012345", nil,
		step("test-count", "a", nil),
		step("compose-output", "b", map[string]any{"fromA": "${{ outputs.a.n }}"}),
	)
	p.Status.CurrentStep = 1
	p.Status.State = map[string]any{"a": map[string]any{"n": 41.0}}
	p.Status.StepExecutionMetadata = []model.StepExecutionMetadata{{Alias: "a", Status: model.PromotionStepStatusSucceeded}}
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s", res.Phase, res.Message)
	}
	if counter.n.Load() != 0 {
		t.Fatal("a step before CurrentStep ran again")
	}
	if got := p.Status.State["b"].(map[string]any)["fromA"]; got != 41.0 {
		t.Fatalf("outputs.b.fromA = %v, want the saved 41", got)
	}
}

func TestHelmValuesYAMLUpdate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := f.git.CreateRepo(t, "values")
	f.git.Seed(t, "values", map[string]string{"charts/guestbook/values-dev.yaml": "# dev values\nreplicaCount: 1\nimage:\n  repository: ghcr.io/acme/guestbook\n  tag: \"1.3.0\" # pinned\n"}, "init")
	p := f.promotion("dev.05.f012345", imageVars,
		step("git-clone", "clone", map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./src"}}}),
		step("yaml-update", "values", map[string]any{
			"path": "./src/charts/guestbook/values-${{ ctx.stage }}.yaml",
			"updates": []any{
				map[string]any{"key": "image.tag", "value": "${{ quote(imageFrom(vars.image).tag) }}"},
				map[string]any{"key": "replicaCount", "value": "${{ 2 }}"},
			},
		}),
		step("git-commit", "", map[string]any{"path": "./src", "message": "${{ outputs['values'].commitMessage }}"}),
		step("git-push", "", map[string]any{"path": "./src"}),
	)
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s", res.Phase, res.Message)
	}
	got := f.git.Show(t, "values", "main", "charts/guestbook/values-dev.yaml")
	want := "# dev values\nreplicaCount: 2\nimage:\n  repository: ghcr.io/acme/guestbook\n  tag: \"1.4.0\" # pinned\n"
	if got != strings.TrimSpace(want) {
		t.Fatalf("values after promotion:\n%s\nwant:\n%s", got, want)
	}
}

func TestPromotionTaskWithVars(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := f.git.CreateRepo(t, "app")
	f.git.Seed(t, "app", map[string]string{"env/dev/kustomization.yaml": kustomization}, "init")
	f.put(t, &model.PromotionTask{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotionTask},
		ObjectMeta: model.ObjectMeta{Name: "update-image", Namespace: project},
		Spec: model.PromotionTaskSpec{
			Vars: []model.PromotionVariable{{Name: "repoURL"}, {Name: "branch", Value: "main"}},
			Steps: []model.PromotionStep{
				step("git-clone", "clone", map[string]any{"repoURL": "${{ vars.repoURL }}", "checkout": []any{map[string]any{"branch": "${{ vars.branch }}", "path": "./task"}}}),
				step("kustomize-set-image", "update", map[string]any{"path": "./task/env/${{ ctx.stage }}", "images": []any{map[string]any{"image": imageRepo}}}),
				step("git-commit", "commit", map[string]any{"path": "./task", "message": "${{ task.outputs.update.commitMessage }}"}),
				step("git-push", "push", map[string]any{"path": "./task"}),
			},
		},
	})
	p := f.promotion("dev.06.f012345", nil,
		model.PromotionStep{Task: &model.PromotionTaskRef{Name: "update-image"}, As: "deploy", Vars: []model.PromotionVariable{{Name: "repoURL", Value: url}}},
		step("compose-output", "summary", map[string]any{"commit": "${{ outputs['deploy::push'].commit }}", "viaTask": "${{ outputs.deploy.commit.commit }}"}),
	)
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s (%v)", res.Phase, res.Message, statuses(p))
	}
	head := f.git.Head(t, "app")
	summary := p.Status.State["summary"].(map[string]any)
	if summary["commit"] != head || summary["viaTask"] != head {
		t.Fatalf("summary %v, head %s", summary, head)
	}
	var aliases, kinds []string
	for _, md := range p.Status.StepExecutionMetadata {
		aliases = append(aliases, md.Alias)
		kinds = append(kinds, md.Uses)
	}
	want := []string{"deploy::clone", "deploy::update", "deploy::commit", "deploy::push", "summary"}
	if !reflect.DeepEqual(aliases, want) {
		t.Fatalf("aliases %v, want %v", aliases, want)
	}
	// Each step, of a task too, records its kind.
	if want := []string{"git-clone", "kustomize-set-image", "git-commit", "git-push", "compose-output"}; !reflect.DeepEqual(kinds, want) {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}
	// A task variable without a default must be passed.
	p2 := f.promotion("dev.07.f012345", nil, model.PromotionStep{Task: &model.PromotionTaskRef{Name: "update-image"}})
	if res, _ := runPromotion(t, f.engine, p2); res.Phase != model.PromotionPhaseErrored || !strings.Contains(res.Message, "repoURL") {
		t.Fatalf("missing task var: %s %q", res.Phase, res.Message)
	}
}

func TestIfFailurePath(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := f.promotion("dev.08.f012345", nil,
		step("fail", "boom", map[string]any{"message": "nope"}),
		step("compose-output", "skipped", map[string]any{"x": "1"}),
		model.PromotionStep{Uses: "compose-output", As: "cleanup", If: "${{ failure() }}", Config: map[string]any{"failed": "${{ status('boom') }}"}},
		model.PromotionStep{Uses: "compose-output", As: "always", If: "${{ always() }}", Config: map[string]any{"ok": true}},
	)
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseFailed || !strings.Contains(res.Message, "nope") {
		t.Fatalf("phase %s %q", res.Phase, res.Message)
	}
	want := []model.PromotionStepStatus{model.PromotionStepStatusFailed, model.PromotionStepStatusSkipped, model.PromotionStepStatusSucceeded, model.PromotionStepStatusSucceeded}
	if got := statuses(p); !reflect.DeepEqual(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	if got := p.Status.State["cleanup"].(map[string]any)["failed"]; got != "Failed" {
		t.Fatalf("status('boom') = %v", got)
	}
}

// flakyStep errors until its n-th run.
type flakyStep struct {
	okAt int32
	n    atomic.Int32
}

func (s *flakyStep) Run(context.Context, *steps.Context) (steps.Result, error) {
	if s.n.Add(1) < s.okAt {
		return steps.Result{}, errors.New("temporary trouble")
	}
	return steps.Result{}, nil
}

func TestRetryAndContinueOnError(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	flaky := &flakyStep{okAt: 3}
	f.engine.Register("test-flaky", flaky)
	p := f.promotion("dev.09.f012345", nil,
		model.PromotionStep{Uses: "test-flaky", As: "flaky", Retry: &model.PromotionStepRetry{ErrorThreshold: 3}},
		model.PromotionStep{Uses: "fail", As: "tolerated", ContinueOnError: true},
		step("compose-output", "after", map[string]any{"ran": true}),
	)
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s %q (%v)", res.Phase, res.Message, statuses(p))
	}
	if md := p.Status.StepExecutionMetadata[0]; md.ErrorCount != 2 || md.Status != model.PromotionStepStatusSucceeded {
		t.Fatalf("flaky metadata %+v", md)
	}
	// Without a threshold the first error is final, and terminal errors
	// are never retried.
	p2 := f.promotion("dev.10.f012345", nil, model.PromotionStep{Uses: "test-flaky", As: "flaky"})
	flaky.n.Store(0)
	if res, _ := runPromotion(t, f.engine, p2); res.Phase != model.PromotionPhaseErrored {
		t.Fatalf("phase %s", res.Phase)
	}
	p3 := f.promotion("dev.11.f012345", nil, model.PromotionStep{Uses: "git-push", Retry: &model.PromotionStepRetry{ErrorThreshold: 5}, Config: map[string]any{"path": "./nowhere"}})
	if res, _ := runPromotion(t, f.engine, p3); res.Phase != model.PromotionPhaseErrored || p3.Status.StepExecutionMetadata[0].ErrorCount != 1 {
		t.Fatalf("terminal error: phase %s, metadata %+v", res.Phase, p3.Status.StepExecutionMetadata[0])
	}
}

// blockStep blocks until ctx ends.
type blockStep struct{ started chan struct{} }

func (b *blockStep) Run(ctx context.Context, _ *steps.Context) (steps.Result, error) {
	close(b.started)
	<-ctx.Done()
	return steps.Result{}, ctx.Err()
}

func TestAbortAndShutdown(t *testing.T) {
	t.Parallel()
	for _, abort := range []bool{true, false} {
		f := newFixture(t)
		b := &blockStep{started: make(chan struct{})}
		f.engine.Register("test-block", b)
		p := f.promotion("dev.12.f012345", nil, step("test-block", "wait", nil), step("compose-output", "never", nil))
		ctx, cancel := context.WithCancelCause(context.Background())
		go func() {
			<-b.started
			if abort {
				cancel(ErrAborted)
			} else {
				cancel(nil)
			}
		}()
		rec := &recorder{}
		res, err := f.engine.Run(ctx, p, rec.save)
		if abort {
			if err != nil || res.Phase != model.PromotionPhaseAborted {
				t.Fatalf("abort: %v %+v", err, res)
			}
			if got := p.Status.StepExecutionMetadata[0].Status; got != model.PromotionStepStatusAborted {
				t.Fatalf("aborted step status %s", got)
			}
		} else if !errors.Is(err, context.Canceled) {
			t.Fatalf("shutdown: want context.Canceled, got %v %+v", err, res)
		}
		if p.Status.CurrentStep != 0 {
			t.Fatalf("CurrentStep %d", p.Status.CurrentStep)
		}
	}
}

func TestSaveErrorStopsTheRun(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := f.promotion("dev.13.f012345", nil, step("compose-output", "a", nil), step("compose-output", "b", nil))
	boom := errors.New("kv down")
	rec := &recorder{fail: func(*model.Promotion) error { return boom }}
	if _, err := f.engine.Run(context.Background(), p, rec.save); !errors.Is(err, boom) {
		t.Fatalf("want the save error, got %v", err)
	}
}

func TestPathSafety(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	outside := t.TempDir()
	for name, steps := range map[string][]model.PromotionStep{
		"dot-dot":  {step("file-write", "w", map[string]any{"path": "../escape.txt", "contents": "x"})},
		"absolute": {step("file-write", "w", map[string]any{"path": filepath.Join(outside, "abs.txt"), "contents": "x"})},
		"symlink": {
			step("test-symlink", "link", map[string]any{"target": outside}),
			step("file-write", "w", map[string]any{"path": "./out/escape.txt", "contents": "x"}),
		},
	} {
		f.engine.Register("test-symlink", steps0(func(_ context.Context, sc *stepsContext) (stepsResult, error) {
			return stepsResult{}, os.Symlink(sc.Config["target"].(string), filepath.Join(sc.Workspace.Dir.Path(), "out"))
		}))
		p := f.promotion("dev.14."+name, nil, steps...)
		res, _ := runPromotion(t, f.engine, p)
		if res.Phase != model.PromotionPhaseErrored {
			t.Fatalf("%s: phase %s", name, res.Phase)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("%s: wrote outside the work dir", name)
		}
	}
}

type (
	stepsContext = steps.Context
	stepsResult  = steps.Result
)

func steps0(fn func(context.Context, *steps.Context) (steps.Result, error)) steps.Step {
	return steps.Func(fn)
}

// TestSecretsStayOutOfOutputsAndMessages: a secret read by an expression
// is hidden from outputs, step messages, the result and the log, also when
// an expression changed its case or encoded it.
func TestSecretsStayOutOfOutputsAndMessages(t *testing.T) {
	t.Parallel()
	const value = "tok-3f9a8b7c/Zq+"
	f := newFixture(t)
	var logs testenv.SyncBuffer
	eng, err := New(Options{DataDir: t.TempDir(), Store: f.store, PollInterval: 50 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	f.put(t, &model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "token", Namespace: project},
		StringData: map[string]string{"value": value},
	})
	p := f.promotion("dev.15.f012345", nil,
		step("compose-output", "leak", map[string]any{
			"t":     "${{ secret('token').value }}",
			"upper": "${{ upper(secret('token').value) }}",
			"b64":   "${{ toBase64(secret('token').value) }}",
			"list":  []any{"x ${{ lower(secret('token').value) }}"},
		}),
		step("fail", "say", map[string]any{"message": "token is ${{ upper(secret('token').value) }} (${{ toBase64(secret('token').value) }})"}),
	)
	res, rec := runPromotion(t, eng, p)
	forms := []string{value, strings.ToUpper(value), strings.ToLower(value), base64.StdEncoding.EncodeToString([]byte(value))}
	for _, form := range forms {
		for where, text := range map[string]string{"saved promotion": rec.all(), "result": res.Message, "log": logs.String()} {
			if strings.Contains(text, form) {
				t.Errorf("%q reached the %s", form, where)
			}
		}
	}
	out := p.Status.State["leak"].(map[string]any)
	if out["t"] != "***" || out["upper"] != "***" || out["b64"] != "***" {
		t.Fatalf("outputs %v, want them redacted", out)
	}
	if !strings.Contains(res.Message, "token is *** (***)") || !strings.Contains(logs.String(), "token is *** (***)") {
		t.Errorf("result %q / log: the redacted message is missing", res.Message)
	}
}

func TestSetMetadataAndLookups(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := f.promotion("dev.16.f012345", nil,
		step("set-metadata", "md", map[string]any{"updates": []any{
			map[string]any{"kind": "Stage", "name": "dev", "values": map[string]any{"deployedBy": "${{ ctx.promotion }}"}},
			map[string]any{"kind": "Freight", "name": "${{ ctx.targetFreight.name }}", "values": map[string]any{"checked": true}},
		}}),
		step("compose-output", "read", map[string]any{
			"stage":   "${{ stageMetadata('dev', 'deployedBy') }}",
			"freight": "${{ freightMetadata(ctx.targetFreight.name, 'checked') }}",
			"alias":   "${{ ctx.targetFreight.alias }}",
		}),
		step("set-freight-alias", "", map[string]any{"alias": "brave-owl"}),
	)
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s %q", res.Phase, res.Message)
	}
	want := map[string]any{"stage": "dev.16.f012345", "freight": true, "alias": "wild-cat"}
	if got := p.Status.State["read"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	fr, _, err := state.GetAs[*model.Freight](context.Background(), f.store, project, model.KindFreight, f.freight.Name)
	if err != nil || fr.Alias != "brave-owl" {
		t.Fatalf("alias %q, %v", fr.Alias, err)
	}
}

func TestHTTPStepPolls(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var calls atomic.Int32
	srv := httpServer(t, func() (int, string) {
		if calls.Add(1) < 3 {
			return 200, `{"state":"pending"}`
		}
		return 200, `{"state":"done","version":"7"}`
	})
	p := f.promotion("dev.17.f012345", nil, model.PromotionStep{Uses: "http", As: "check", Retry: &model.PromotionStepRetry{Timeout: model.NewDuration(30 * time.Second)}, Config: map[string]any{
		"url":               srv + "/status",
		"successExpression": "response.body.state == 'done'",
		"failureExpression": "response.status >= 500",
		"outputs":           []any{map[string]any{"name": "version", "fromExpression": "response.body.version"}},
	}})
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s %q", res.Phase, res.Message)
	}
	if calls.Load() != 3 || p.Status.State["check"].(map[string]any)["version"] != "7" {
		t.Fatalf("calls %d, state %v", calls.Load(), p.Status.State)
	}
}

func TestHealthWithoutChecks(t *testing.T) {
	t.Parallel()
	e, err := New(Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if h := e.Health(context.Background(), project, nil); h.Status != model.HealthStateHealthy {
		t.Fatalf("health %+v", h)
	}
	_ = time.Second
}

// conflictStep changes, on the remote, the very file the promotion changed.
type conflictStep struct{ f *fixture }

func (c conflictStep) Run(_ context.Context, sc *steps.Context) (steps.Result, error) {
	// The same line the promotion changes: a real conflict.
	c.f.git.Seed(c.f.t, "app", map[string]string{"env/dev/kustomization.yaml": strings.Replace(kustomization, "newTag: 1.3.0", "newTag: 9.9.9", 1)}, "hand edit")
	return steps.Result{}, nil
}

func TestPushConflictIsTerminal(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.t = t
	url := f.git.CreateRepo(t, "app")
	f.git.Seed(t, "app", map[string]string{"env/dev/kustomization.yaml": kustomization}, "init")
	f.engine.Register("test-conflict", conflictStep{f: f})
	pipeline := imagePipeline(url)
	pipeline = append(pipeline[:3], append([]model.PromotionStep{step("test-conflict", "conflict", nil)}, pipeline[3:]...)...)
	p := f.promotion("dev.20.f012345", imageVars, pipeline...)
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseErrored || !strings.Contains(res.Message, "env/dev/kustomization.yaml") {
		t.Fatalf("phase %s %q", res.Phase, res.Message)
	}
	if got := f.git.Run(t, f.git.Path("app"), "log", "-1", "--format=%s", "main"); got != "hand edit" {
		t.Fatalf("main moved to %q", got)
	}
}

func TestWrongCredentialsStaySecret(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	url := f.git.CreateRepo(t, "app")
	f.git.Seed(t, "app", map[string]string{"README.md": "x"}, "init")
	f.put(t, &model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "exact", Namespace: project, Labels: map[string]string{model.LabelCredType: model.CredTypeGit}},
		StringData: map[string]string{"repoURL": url, "username": gitUser, "password": "wrong-password-123"},
	})
	p := f.promotion("dev.21.f012345", nil, step("git-clone", "", map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./src"}}}))
	res, rec := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseErrored {
		t.Fatalf("phase %s: the exact-match secret (with a wrong password) should win over the regex one", res.Phase)
	}
	if strings.Contains(rec.all()+res.Message, "wrong-password-123") {
		t.Fatal("the password reached the saved promotion or the message")
	}
}

func TestVarsAtEveryLevel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.put(t, &model.Stage{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindStage},
		ObjectMeta: model.ObjectMeta{Name: "dev", Namespace: project},
		Spec: model.StageSpec{
			Vars:             []model.PromotionVariable{{Name: "fromStage", Value: "s"}, {Name: "shadowed", Value: "stage"}},
			RequestedFreight: []model.FreightRequest{{Origin: f.freight.Origin, Sources: model.FreightSources{Direct: true}}},
		},
	})
	p := f.promotion("dev.22.f012345", []model.PromotionVariable{{Name: "shadowed", Value: "template"}, {Name: "derived", Value: "${{ vars.fromStage }}-${{ ctx.stage }}"}},
		model.PromotionStep{Uses: "compose-output", As: "out", Vars: []model.PromotionVariable{{Name: "step", Value: "${{ vars.shadowed }}!"}},
			Config: map[string]any{"fromStage": "${{ vars.fromStage }}", "shadowed": "${{ vars.shadowed }}", "derived": "${{ vars.derived }}", "step": "${{ vars.step }}"}},
	)
	res, _ := runPromotion(t, f.engine, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s %q", res.Phase, res.Message)
	}
	want := map[string]any{"fromStage": "s", "shadowed": "template", "derived": "s-dev", "step": "template!"}
	if got := p.Status.State["out"]; !reflect.DeepEqual(got, want) {
		t.Fatalf("out %v, want %v", got, want)
	}
}

// Steps without an alias are step-1, step-2, ... and task steps task-N,
// counted from 1 as in Kargo; each step sees its alias as
// ctx.meta.step.alias, with ctx.meta.promotion.rollback and ctx.uiBaseUrl.
func TestDefaultAliasesAndStepContext(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	eng, err := New(Options{DataDir: t.TempDir(), Store: f.store, PollInterval: 50 * time.Millisecond, UIBaseURL: "https://caravan.example.com/"})
	if err != nil {
		t.Fatal(err)
	}
	f.put(t, &model.PromotionTask{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotionTask},
		ObjectMeta: model.ObjectMeta{Name: "notify", Namespace: project},
		Spec: model.PromotionTaskSpec{Steps: []model.PromotionStep{
			step("compose-output", "", map[string]any{"alias": "${{ ctx.meta.step.alias }}"}),
		}},
	})
	p := f.promotion("dev.09.f012345", nil,
		step("compose-output", "", map[string]any{"alias": "${{ ctx.meta.step.alias }}", "rollback": "${{ ctx.meta.promotion.rollback }}",
			"ui": "${{ ctx.uiBaseUrl }}/projects/${{ ctx.project }}"}),
		model.PromotionStep{Task: &model.PromotionTaskRef{Name: "notify"}},
		step("compose-output", "", map[string]any{"first": "${{ outputs['step-1'].alias }}"}),
	)
	res, _ := runPromotion(t, eng, p)
	if res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s", res.Phase, res.Message)
	}
	var aliases []string
	for _, md := range p.Status.StepExecutionMetadata {
		aliases = append(aliases, md.Alias)
	}
	if want := []string{"step-1", "task-2::step-1", "step-3"}; !reflect.DeepEqual(aliases, want) {
		t.Fatalf("aliases %v, want %v", aliases, want)
	}
	first := p.Status.State["step-1"].(map[string]any)
	if first["alias"] != "step-1" || first["rollback"] != false || first["ui"] != "https://caravan.example.com/projects/"+project {
		t.Fatalf("step-1 saw %v", first)
	}
	if got := p.Status.State["task-2::step-1"].(map[string]any)["alias"]; got != "task-2::step-1" {
		t.Fatalf("the task's step saw alias %v", got)
	}
	if got := p.Status.State["step-3"].(map[string]any)["first"]; got != "step-1" {
		t.Fatalf("step-3 saw %v", got)
	}
}

// oci-push run by the engine authenticates with image credentials the
// kargo-shared-resources project holds (the project has none), and a
// wrong password stays out of the promotion's record.
func TestOCIPushWithSharedCredentials(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	backend := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "robot" || p != "registry-s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(128, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host+"/team/app:1.0.0", name.Insecure)
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "robot", Password: "registry-s3cret"})); err != nil {
		t.Fatal(err)
	}
	secret := &model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "registry", Namespace: model.SharedResourcesProject, Labels: map[string]string{model.LabelCredType: model.CredTypeImage}},
		StringData: map[string]string{"repoURL": host + "/team/app", "username": "robot", "password": "registry-s3cret"},
	}
	f.put(t, secret)
	push := step("oci-push", "", map[string]any{"srcRef": host + "/team/app:1.0.0", "destRef": host + "/team/app:prod"})
	if res, _ := runPromotion(t, f.engine, f.promotion("dev.31.a012345", nil, push)); res.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("phase %s: %s", res.Phase, res.Message)
	}
	secret.StringData["password"] = "wrong-password-456"
	f.put(t, secret)
	res, rec := runPromotion(t, f.engine, f.promotion("dev.32.b012345", nil, push))
	if res.Phase != model.PromotionPhaseErrored {
		t.Fatalf("phase %s with a wrong password", res.Phase)
	}
	if strings.Contains(rec.all()+res.Message, "wrong-password-456") {
		t.Fatal("the password reached the saved promotion or the message")
	}
}
