package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

func TestPromoteDryRunSendsRequest(t *testing.T) {
	t.Parallel()
	dry := `{"stage":"prod","freight":"f00d","phase":"Succeeded","steps":[{"alias":"clone","uses":"git-clone","status":"Succeeded"},{"alias":"push","uses":"git-push"}],` +
		`"outputs":{"clone":{"commits":{"src":"abc"}}},"stoppedAt":{"index":1,"alias":"push","uses":"git-push","reason":"it pushes"},` +
		`"diffs":[{"repoURL":"https://git.example.com/app.git","path":"src","branch":"main","base":"0123456789abcdef","files":[{"path":"values.yaml","additions":1,"deletions":1}],"patch":"diff --git a/values.yaml b/values.yaml\n-tag: 1\n+tag: 2\n"}]}`
	rec := newRecorder(t, map[string]http.HandlerFunc{"POST /v1/projects/demo/stages/prod/promotions": answer(http.StatusOK, dry)})
	r := must(t, run(t, "", recEnv(rec), "promote", "--stage", "prod", "--freight", "f00d", "--dry-run"))
	got := rec.all()
	if len(got) != 1 || got[0].path != "/v1/projects/demo/stages/prod/promotions?dryRun=true" || got[0].body != `{"freight":"f00d"}` {
		t.Fatalf("sent %+v", got)
	}
	for _, want := range []string{
		"dry run of stage prod to freight f00d: Succeeded",
		"[1/2] clone (git-clone): Succeeded",
		"[2/2] push (git-push): stopped here, not run: it pushes",
		`"src": "abc"`,
		"repository https://git.example.com/app.git (path src, branch main, from 0123456): 1 file changed",
		"-tag: 1\n+tag: 2\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	r = must(t, run(t, "", recEnv(rec), "promote", "--stage", "prod", "--freight", "f00d", "--dry-run", "-o", "json"))
	var d model.PromotionDryRun
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || len(d.Diffs) != 1 {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	for _, args := range [][]string{
		{"--dry-run", "--wait"},
		{"--dry-run", "--override-window", "why"},
		{"-o", "json"},
		{"--dry-run", "-o", "table"},
	} {
		r := run(t, "", recEnv(rec), append([]string{"promote", "--stage", "prod", "--freight", "f00d"}, args...)...)
		if r.code != 2 {
			t.Errorf("%v: exit %d (%s), want a usage error", args, r.code, r.stderr)
		}
	}
}

// TestPromoteDryRunRealServer: against the real server the dry run runs
// the steps before the http step on a promoter and stops there; the http
// endpoint is not called and no promotion is stored.
func TestPromoteDryRunRealServer(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { calls.Add(1); _, _ = w.Write([]byte(`{}`)) }))
	t.Cleanup(hook.Close)
	p := uniqueProject("dry-run")
	manifests := strings.NewReplacer("PROJECT", p, "HOOK", hook.URL).Replace(`apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: PROJECT
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: app
  namespace: PROJECT
spec:
  subscriptions:
  - image:
      repoURL: 127.0.0.1:1/example/app
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: dev
  namespace: PROJECT
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: compose-output
        as: note
        config:
          tag: ${{ imageFrom("127.0.0.1:1/example/app").tag }}
      - uses: http
        as: notify
        config:
          url: HOOK
          method: POST
`)
	must(t, run(t, manifests, nil, "apply", "-f", "-"))
	seedFreight(t, &model.Freight{
		ObjectMeta: model.ObjectMeta{Namespace: p},
		Alias:      "calm-heron",
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images:     []model.Image{{RepoURL: "127.0.0.1:1/example/app", Tag: "1.2.3", Digest: "sha256:0b"}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := runCtx(ctx, t, "", map[string]string{"CARAVAN_PROJECT": p}, "promote", "--stage", "dev", "--freight-alias", "calm-heron", "--dry-run")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{": Succeeded", "[1/2] note (compose-output): Succeeded", "[2/2] notify (http): stopped here", `"tag": "1.2.3"`, "no git repository checked out"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	if calls.Load() != 0 {
		t.Error("the dry run called the http step's endpoint")
	}
	objs, _, err := srv.store.ListObjects(context.Background(), p, model.KindPromotion, 0, "")
	if err != nil || len(objs) != 0 {
		t.Fatalf("promotions stored: %d (%v)", len(objs), err)
	}
	// Unknown freight: a 4xx naming it, exit 1.
	r = runCtx(ctx, t, "", map[string]string{"CARAVAN_PROJECT": p}, "promote", "--stage", "dev", "--freight", "nope", "--dry-run")
	if r.code != 1 || !strings.Contains(r.stderr, `freight "nope" not found`) {
		t.Errorf("unknown freight: exit %d, stderr %s", r.code, r.stderr)
	}
}
