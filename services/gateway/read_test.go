package gateway_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"

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
	put(&model.Freight{TypeMeta: kargo("Freight"), ObjectMeta: model.ObjectMeta{Name: "f1", Namespace: "demo"}, Alias: "brave-fox",
		Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"}})
	put(&model.Freight{TypeMeta: kargo("Freight"), ObjectMeta: model.ObjectMeta{Name: "f2", Namespace: "demo"}, Alias: "calm-owl",
		Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "other"}})
	put(&model.Promotion{TypeMeta: kargo("Promotion"), ObjectMeta: model.ObjectMeta{Name: "p1", Namespace: "demo"},
		Spec: model.PromotionSpec{Stage: "dev", Freight: "f1"}, Status: model.PromotionStatus{Phase: "Succeeded"}})
	put(&model.Promotion{TypeMeta: kargo("Promotion"), ObjectMeta: model.ObjectMeta{Name: "p2", Namespace: "demo"},
		Spec: model.PromotionSpec{Stage: "staging", Freight: "f1"}, Status: model.PromotionStatus{Phase: "Running"}})

	lists := []struct {
		path  string
		names []string
	}{
		{"/v1/projects/demo/freight", []string{"f1", "f2"}},
		{"/v1/projects/demo/freight?warehouse=app", []string{"f1"}},
		{"/v1/projects/demo/freight?warehouse=app&limit=1", []string{"f1"}},
		{"/v1/projects/demo/promotions", []string{"p1", "p2"}},
		{"/v1/projects/demo/promotions?stage=staging", []string{"p2"}},
		{"/v1/projects/demo/promotions?phase=Succeeded", []string{"p1"}},
		{"/v1/projects/demo/promotions?stage=dev&phase=Running", nil},
	}
	for _, tt := range lists {
		t.Run(tt.path, func(t *testing.T) {
			var l struct {
				Items []struct {
					Metadata model.ObjectMeta `json:"metadata"`
				} `json:"items"`
			}
			if st := h.get(tt.path, &l); st != http.StatusOK {
				t.Fatalf("%d", st)
			}
			var names []string
			for _, it := range l.Items {
				names = append(names, it.Metadata.Name)
			}
			if len(names) != len(tt.names) || (len(names) > 0 && names[0] != tt.names[0]) {
				t.Errorf("names %v, want %v", names, tt.names)
			}
		})
	}
	for _, nameOrAlias := range []string{"f1", "brave-fox"} {
		var f model.Freight
		if st := h.get("/v1/projects/demo/freight/"+nameOrAlias, &f); st != http.StatusOK || f.Name != "f1" || f.Alias != "brave-fox" || f.Origin.Name != "app" {
			t.Errorf("GET freight %s: %d %+v", nameOrAlias, st, f)
		}
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
