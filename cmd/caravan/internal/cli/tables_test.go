package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// putStatus writes a stage's status as the promoter and verifier would.
func putStatus(t *testing.T, project, stage string, st model.StageStatus) {
	t.Helper()
	if _, err := state.Put(context.Background(), srv.store.KV(state.Stages), state.Key(project, stage), st); err != nil {
		t.Fatal(err)
	}
}

// row returns the table row of name (its first cell), split in cells of
// two or more spaces.
func row(t *testing.T, table, name string) []string {
	t.Helper()
	for _, line := range strings.Split(table, "\n") {
		if strings.HasPrefix(line, name+" ") {
			var cells []string
			for _, c := range strings.Split(line, "   ") {
				if c = strings.TrimSpace(c); c != "" {
					cells = append(cells, c)
				}
			}
			return cells
		}
	}
	t.Fatalf("no row %s in:\n%s", name, table)
	return nil
}

// TestTablesSayWhy: READY and STATUS say why a stage is not ready (a
// failed promotion with its message, a failed verification), a hold shows
// in HOLD and STATUS, a warehouse that cannot discover says why, and the
// step counter of a promotion names the step that failed among the steps
// of its tasks.
func TestTablesSayWhy(t *testing.T) {
	t.Parallel()
	p := uniqueProject("tables")
	files := pipeline(p)
	must(t, run(t, files["00-project.yaml"]+"---\n"+files["10-warehouse.yaml"]+"---\n"+files["stages/20-stages.yaml"], nil, "apply", "-f", "-"))
	f := &model.Freight{
		ObjectMeta: model.ObjectMeta{Namespace: p},
		Alias:      "lazy-newt",
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images:     []model.Image{{RepoURL: "ghcr.io/example/app", Tag: "1.0.0", Digest: "sha256:aa"}},
	}
	seedFreight(t, f)
	ref := model.FreightReference{Name: f.Name, Origin: f.Origin}
	history := []model.FreightCollection{{ID: "c1", Freight: map[string]model.FreightReference{"Warehouse/app": ref}}}
	putStatus(t, p, "dev", model.StageStatus{
		FreightHistory: history,
		LastPromotion: &model.PromotionReference{Name: "dev.01.abc", Status: &model.PromotionStatus{
			Phase: model.PromotionPhaseErrored, Message: `step "render::step-3" errored: kustomize: no such file`}},
		AutoPromotionHolds: model.AutoPromotionHolds{f.Origin.String(): {Origin: f.Origin, FreightName: f.Name, PromotionName: "dev.01.abc", Reason: "promoted by hand"}},
	})
	failedVerification := append([]model.FreightCollection(nil), history...)
	failedVerification[0].VerificationHistory = []model.VerificationInfo{{ID: "v1", Phase: model.VerificationPhaseFailed, Message: "metric http: 3 failed"}}
	putStatus(t, p, "prod", model.StageStatus{FreightHistory: failedVerification, Health: &model.Health{Status: model.HealthStateHealthy}})

	r := must(t, run(t, "", nil, "get", "stages", "-p", p))
	header := strings.Fields(strings.Split(r.stdout, "\n")[0])
	if strings.Join(header, " ") != "NAME FREIGHT HEALTH READY STATUS HOLD AGE" {
		t.Errorf("header %v", header)
	}
	dev := row(t, r.stdout, "dev")
	if dev[1] != "lazy-newt" || dev[3] != "False" || !strings.Contains(dev[4], "Promotion dev.01.abc errored: step \"render::step-3\" errored") || dev[5] != "held" {
		t.Errorf("dev row %q", dev)
	}
	r = must(t, run(t, "", nil, "get", "stages", "-p", p, "-o", "wide"))
	if dev := row(t, r.stdout, "dev"); !strings.Contains(dev[4], "auto-promotion from Warehouse/app held since lazy-newt was promoted by hand (caravan resume stage dev)") {
		t.Errorf("dev row, wide: %q", dev)
	}
	prod := row(t, r.stdout, "prod")
	if prod[3] != "False" || prod[4] != "Verification failed: metric http: 3 failed" || prod[5] != "<none>" {
		t.Errorf("prod row %q", prod)
	}

	// A warehouse that cannot discover says why: the real discovery
	// service of the test server cannot reach ghcr.io (no network here, or
	// no such image there).
	deadline := time.Now().Add(time.Minute)
	for {
		r = must(t, run(t, "", nil, "get", "warehouses", "-p", p, "-o", "wide"))
		wh := row(t, r.stdout, "app")
		if wh[3] == "False" && strings.Contains(wh[4], "ghcr.io/example/app") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("warehouse row %q", wh)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A promotion of one task of 6 steps, failed at the 4th.
	now := model.NewTime(time.Now())
	md := []model.StepExecutionMetadata{
		{Alias: "render::step-0", Uses: "git-clone", Status: "Succeeded"},
		{Alias: "render::step-1", Uses: "git-clear", Status: "Succeeded"},
		{Alias: "render::update-image", Uses: "kustomize-set-image", Status: "Succeeded"},
		{Alias: "render::step-3", Uses: "kustomize-build", Status: "Errored", Message: "no such file"},
		{Alias: "render::commit", Uses: "git-commit", Status: "Skipped"},
		{Alias: "render::step-5", Uses: "git-push", Status: "Skipped"},
	}
	promo := &model.Promotion{
		TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion},
		ObjectMeta: model.ObjectMeta{Name: "dev.01.abc", Namespace: p, CreationTimestamp: now},
		Spec:       model.PromotionSpec{Stage: "dev", Freight: f.Name, Steps: []model.PromotionStep{{Task: &model.PromotionTaskRef{Name: "render"}}}},
		Status:     model.PromotionStatus{Phase: model.PromotionPhaseErrored, Message: `step "render::step-3" errored: no such file`, CurrentStep: 6, StepExecutionMetadata: md},
	}
	if _, err := srv.store.PutObject(context.Background(), promo, 0); err != nil {
		t.Fatal(err)
	}
	r = must(t, run(t, "", nil, "get", "promotions", "-p", p))
	if pr := row(t, r.stdout, "dev.01.abc"); pr[2] != "lazy-newt" || pr[3] != "Errored" || pr[4] != "4/6" || !strings.Contains(pr[5], "no such file") {
		t.Errorf("promotion row %q", pr)
	}
}

// TestListOrder: the table and -o json list in the same order, newest
// first, and --sort chooses another.
func TestListOrder(t *testing.T) {
	t.Parallel()
	p := uniqueProject("order")
	files := pipeline(p)
	must(t, run(t, files["00-project.yaml"]+"---\n"+files["10-warehouse.yaml"], nil, "apply", "-f", "-"))
	base := time.Now().Add(-time.Hour)
	var want []string // newest first
	for i, tag := range []string{"1.0.0", "1.0.1", "1.0.2"} {
		f := &model.Freight{
			ObjectMeta: model.ObjectMeta{Namespace: p, CreationTimestamp: model.NewTime(base.Add(time.Duration(i) * time.Minute))},
			Alias:      "f-" + strings.ReplaceAll(tag, ".", "-"),
			Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
			Images:     []model.Image{{RepoURL: "ghcr.io/example/app", Tag: tag, Digest: "sha256:" + tag}},
		}
		seedFreight(t, f)
		want = append([]string{f.Alias}, want...)
	}
	aliasesOf := func(args ...string) (table, js []string) {
		t.Helper()
		r := must(t, run(t, "", nil, append([]string{"get", "freight", "-p", p}, args...)...))
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n")[1:] {
			table = append(table, strings.Fields(line)[1])
		}
		r = must(t, run(t, "", nil, append([]string{"get", "freight", "-p", p, "-o", "json"}, args...)...))
		var l struct {
			Items []model.Freight `json:"items"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
			t.Fatal(err)
		}
		for _, f := range l.Items {
			js = append(js, f.Alias)
		}
		return table, js
	}
	table, js := aliasesOf()
	if strings.Join(table, ",") != strings.Join(want, ",") || strings.Join(js, ",") != strings.Join(want, ",") {
		t.Errorf("newest first: table %v, json %v, want %v", table, js, want)
	}
	table, js = aliasesOf("--sort", "oldest")
	if table[0] != want[2] || js[0] != want[2] {
		t.Errorf("oldest first: table %v, json %v", table, js)
	}
	if r := run(t, "", nil, "get", "freight", "-p", p, "--sort", "random"); r.code != 2 || !strings.Contains(r.stderr, "--sort") {
		t.Errorf("--sort random: %+v", r)
	}
}
