package promoter

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// TestDryRunOverNATS: a replica with the real step engine answers a
// dry-run request with the diff its steps would push; nothing is pushed,
// stored or published; the real promotion then pushes that diff.
func TestDryRunOverNATS(t *testing.T) {
	t.Parallel()
	g := testenv.GitServer(t, testenv.WithBasicAuth("bot", "git-pw-0815"))
	url := g.CreateRepo(t, "app")
	base := g.Seed(t, "app", map[string]string{"env/dev/kustomization.yaml": "images:\n  - name: example.com/app\n    newTag: 1.0.0\n"}, "init")
	h := newHarness(t)
	h.put(&model.Secret{
		TypeMeta:   model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "git", Namespace: project, Labels: map[string]string{model.LabelCredType: model.CredTypeGit}},
		StringData: map[string]string{"repoURL": url, "username": "bot", "password": "git-pw-0815"},
	})
	st := h.stage("dev", func(s *model.Stage) {
		s.Spec.PromotionTemplate.Spec.Steps = []model.PromotionStep{
			{Uses: "git-clone", As: "clone", Config: map[string]any{"repoURL": url, "checkout": []any{map[string]any{"branch": "main", "path": "./src"}}}},
			{Uses: "kustomize-set-image", As: "update", Config: map[string]any{"path": "./src/env/${{ ctx.stage }}", "images": []any{map[string]any{"image": "example.com/app"}}}},
			{Uses: "git-commit", Config: map[string]any{"path": "./src", "message": "${{ outputs.update.commitMessage }}"}},
			{Uses: "git-push", As: "push", Config: map[string]any{"path": "./src"}},
		}
	})
	f := h.freight("2.0.0", time.Now())
	h.start("a", nil, nil)

	p := h.newPromotion(st, f, "alice")
	data, err := json.Marshal(events.DryRunRequest{Promotion: p, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	msg, err := h.srv.Conn(t).RequestWithContext(ctx, events.DryRunSubject, data)
	if err != nil {
		t.Fatal(err)
	}
	var reply events.DryRunReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.Result == nil {
		t.Fatalf("reply %s (%v)", msg.Data, err)
	}
	dry := reply.Result
	if dry.Phase != model.PromotionPhaseSucceeded || dry.StoppedAt == nil || dry.StoppedAt.Alias != "push" {
		t.Fatalf("dry run %s %q stopped at %+v", dry.Phase, dry.Message, dry.StoppedAt)
	}
	if len(dry.Diffs) != 1 || !strings.Contains(dry.Diffs[0].Patch, "+    newTag: 2.0.0") {
		t.Fatalf("diffs %+v", dry.Diffs)
	}
	if g.Head(t, "app") != base {
		t.Fatal("the dry run pushed")
	}
	objs, _, err := h.env.Store.ListObjects(ctx, project, model.KindPromotion, 0, "")
	if err != nil || len(objs) != 0 {
		t.Fatalf("promotions stored by the dry run: %d (%v)", len(objs), err)
	}
	h.events.mu.Lock()
	n := len(h.events.envs)
	h.events.mu.Unlock()
	if n != 0 {
		t.Fatalf("the dry run published %d events", n)
	}

	// The real promotion pushes the same change.
	p = h.promote(st, f, "alice")
	eventually(t, 90*time.Second, func() bool { return h.promotion(p.Name).Status.Phase.IsTerminal() }, func() string { return "promotion never ended" })
	if got := h.promotion(p.Name); got.Status.Phase != model.PromotionPhaseSucceeded {
		t.Fatalf("promotion %s: %s", got.Status.Phase, got.Status.Message)
	}
	pushed := g.Run(t, g.Path("app"), "diff", base, "main")
	_, hunks, ok := strings.Cut(pushed, "@@")
	if !ok || !strings.Contains(dry.Diffs[0].Patch, "@@"+hunks) {
		t.Fatalf("pushed:\n%s\ndry run:\n%s", pushed, dry.Diffs[0].Patch)
	}
}
