package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
)

func TestFreightAndPromotions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	ctx := context.Background()
	put := func(obj model.Object) {
		t.Helper()
		if _, err := h.env.Store.PutObject(ctx, obj, 0); err != nil {
			t.Fatal(err)
		}
	}
	kargo := func(kind string) model.TypeMeta { return model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: kind} }
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(d time.Duration) *model.Time { return model.NewTime(t0.Add(d)) }
	put(&model.Freight{TypeMeta: kargo("Freight"), ObjectMeta: model.ObjectMeta{Name: "f1aaaaaaaa", Namespace: "demo", CreationTimestamp: at(0)}, Alias: "brave-fox",
		Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}})
	put(&model.Freight{TypeMeta: kargo("Freight"), ObjectMeta: model.ObjectMeta{Name: "f2aaaaaaaa", Namespace: "demo", CreationTimestamp: at(time.Minute)}, Alias: "calm-owl",
		Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "other"}})
	put(&model.Freight{TypeMeta: kargo("Freight"), ObjectMeta: model.ObjectMeta{Name: "f2aaaaabbb", Namespace: "demo", CreationTimestamp: at(time.Minute)}, Alias: "dry-elk",
		Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "other"}})
	put(&model.Promotion{TypeMeta: kargo("Promotion"), ObjectMeta: model.ObjectMeta{Name: "p1", Namespace: "demo", CreationTimestamp: at(time.Hour)},
		Spec: model.PromotionSpec{Stage: "dev", Freight: "f1aaaaaaaa"}, Status: model.PromotionStatus{Phase: "Succeeded"}})
	put(&model.Promotion{TypeMeta: kargo("Promotion"), ObjectMeta: model.ObjectMeta{Name: "p2", Namespace: "demo", CreationTimestamp: at(2 * time.Hour)},
		Spec: model.PromotionSpec{Stage: "staging", Freight: "f1aaaaaaaa"}, Status: model.PromotionStatus{Phase: "Running"}})

	// Newest first unless ?sort= says otherwise; ties by name, as
	// model.Newer breaks them.
	lists := []struct {
		path  string
		names []string
	}{
		{"/v1/projects/demo/freight", []string{"f2aaaaabbb", "f2aaaaaaaa", "f1aaaaaaaa"}},
		{"/v1/projects/demo/freight?sort=newest", []string{"f2aaaaabbb", "f2aaaaaaaa", "f1aaaaaaaa"}},
		{"/v1/projects/demo/freight?sort=oldest", []string{"f1aaaaaaaa", "f2aaaaaaaa", "f2aaaaabbb"}},
		{"/v1/projects/demo/freight?sort=name", []string{"f1aaaaaaaa", "f2aaaaaaaa", "f2aaaaabbb"}},
		{"/v1/projects/demo/freight?warehouse=app", []string{"f1aaaaaaaa"}},
		{"/v1/projects/demo/freight?warehouse=app&limit=1", []string{"f1aaaaaaaa"}},
		{"/v1/projects/demo/freight?stage=dev", []string{"f1aaaaaaaa"}},
		{"/v1/projects/demo/promotions", []string{"p2", "p1"}},
		{"/v1/projects/demo/promotions?sort=oldest", []string{"p1", "p2"}},
		{"/v1/projects/demo/promotions?stage=staging", []string{"p2"}},
		{"/v1/projects/demo/promotions?phase=Succeeded", []string{"p1"}},
		{"/v1/projects/demo/promotions?stage=dev&phase=Running", nil},
	}
	names := func(path string) ([]string, string) {
		t.Helper()
		var l struct {
			Items []struct {
				Metadata model.ObjectMeta `json:"metadata"`
			} `json:"items"`
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
		}
		if st := h.get(path, &l); st != http.StatusOK {
			t.Fatalf("GET %s: %d", path, st)
		}
		var out []string
		for _, it := range l.Items {
			out = append(out, it.Metadata.Name)
		}
		return out, l.Metadata.Continue
	}
	for _, tt := range lists {
		t.Run(tt.path, func(t *testing.T) {
			if got, _ := names(tt.path); strings.Join(got, ",") != strings.Join(tt.names, ",") {
				t.Errorf("names %v, want %v", got, tt.names)
			}
		})
	}
	// Paging walks the same order, one page at a time, in every order.
	for _, order := range []string{"newest", "oldest", "name"} {
		var all []string
		next := ""
		for range 5 {
			page, cont := names("/v1/projects/demo/freight?limit=1&sort=" + order + "&continue=" + next)
			all = append(all, page...)
			if next = cont; next == "" {
				break
			}
		}
		want, _ := names("/v1/projects/demo/freight?sort=" + order)
		if strings.Join(all, ",") != strings.Join(want, ",") {
			t.Errorf("sort=%s paged %v, want %v", order, all, want)
		}
	}
	if st, _, _ := h.do("GET", "/v1/projects/demo/freight?sort=random", token, "", nil); st != http.StatusBadRequest {
		t.Errorf("sort=random: %d", st)
	}
	_, cont := names("/v1/projects/demo/freight?limit=1&sort=name")
	if st, _, _ := h.do("GET", "/v1/projects/demo/freight?limit=1&continue="+cont, token, "", nil); st != http.StatusBadRequest {
		t.Errorf("a name-order token in the newest order: %d", st)
	}

	// Freight by name, alias or a unique prefix of at least 7 characters.
	for _, ref := range []string{"f1aaaaaaaa", "brave-fox", "f1aaaaa", "f1aaaaaaa"} {
		var f model.Freight
		if st := h.get("/v1/projects/demo/freight/"+ref, &f); st != http.StatusOK || f.Name != "f1aaaaaaaa" || f.Alias != "brave-fox" || f.Origin.Name != "app" {
			t.Errorf("GET freight %s: %d %+v", ref, st, f)
		}
	}
	if st, b, _ := h.do("GET", "/v1/projects/demo/freight/f2aaaaa", token, "", nil); st != http.StatusBadRequest || !strings.Contains(string(b), "ambiguous") {
		t.Errorf("ambiguous prefix: %d %s", st, b)
	}
	if st, _, _ := h.do("GET", "/v1/projects/demo/freight/f1aaaa", token, "", nil); st != http.StatusNotFound {
		t.Errorf("a prefix of 6: %d", st)
	}
	var p model.Promotion
	if st := h.get("/v1/projects/demo/promotions/p2", &p); st != http.StatusOK || p.Status.Phase != "Running" {
		t.Errorf("GET promotion: %d %+v", st, p)
	}
}

func TestProjectConfig(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	out := h.mustApply([]byte(`apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: demo, namespace: demo}
spec:
  promotionPolicies:
  - stage: dev
    autoPromotionEnabled: true
`))
	if got := actions(out); len(got) != 1 || got[0] != "ProjectConfig/demo=created" {
		t.Fatalf("apply: %v", got)
	}
	var pc model.ProjectConfig
	if st := h.get("/v1/projects/demo/projectconfig", &pc); st != http.StatusOK || pc.Name != "demo" || len(pc.Spec.PromotionPolicies) != 1 {
		t.Errorf("GET projectconfig: %d %+v", st, pc)
	}
}

// Concurrent applies of the same new objects all succeed: exactly one
// creates each object, the others find it unchanged.
func TestConcurrentApply(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	body := readFile(t, "testdata/pipeline.yaml")
	const n = 4
	outs := make(chan outcome, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, b, _ := h.do(http.MethodPost, "/v1/resources", token, "application/yaml", body)
			var out outcome
			if status != http.StatusOK || json.Unmarshal(b, &out) != nil {
				t.Errorf("apply: %d %s", status, b)
			}
			outs <- out
		}()
	}
	wg.Wait()
	close(outs)
	created := map[string]int{}
	for out := range outs {
		for _, r := range out.Results {
			if r.Action == "created" {
				created[r.Kind+"/"+r.Name]++
			}
		}
	}
	if len(created) != 5 {
		t.Errorf("created %v, want each of 5 objects once", created)
	}
	for k, c := range created {
		if c != 1 {
			t.Errorf("%s created %d times", k, c)
		}
	}
}

// TestReadEveryKind lists every kind and reads each listed object back,
// so the contract check sees a real answer of every read route.
func TestReadEveryKind(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	h.mustApply([]byte(`apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: smoke, namespace: demo}
spec:
  metrics:
  - name: up
    count: 1
    provider:
      web: {url: "http://127.0.0.1:1/healthz"}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionTask
metadata: {name: note, namespace: demo}
spec:
  steps:
  - uses: compose-output
    config: {stage: x}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: demo}
stringData: {repoURL: https://example.com/repo.git, password: p}
`))
	for _, kind := range []string{"warehouses", "stages", "promotiontasks", "analysistemplates", "secrets"} {
		var l struct {
			Items []struct {
				Metadata model.ObjectMeta `json:"metadata"`
			} `json:"items"`
		}
		if st := h.get("/v1/projects/demo/"+kind, &l); st != http.StatusOK || len(l.Items) == 0 {
			t.Fatalf("list %s: %d %d items", kind, st, len(l.Items))
		}
		for _, it := range l.Items {
			if st := h.get("/v1/projects/demo/"+kind+"/"+it.Metadata.Name, nil); st != http.StatusOK {
				t.Errorf("get %s/%s: %d", kind, it.Metadata.Name, st)
			}
		}
	}
}
