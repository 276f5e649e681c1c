package freight

import (
	"errors"
	"testing"

	"github.com/caravan-cd/caravan/pkg/model"
)

func warehouse(name string) *model.Warehouse {
	return &model.Warehouse{
		ObjectMeta: model.ObjectMeta{Name: name, Namespace: "demo"},
		Spec: model.WarehouseSpec{Subscriptions: []model.RepoSubscription{
			{Image: &model.ImageSubscription{RepoURL: "example/front-end"}},
			{Image: &model.ImageSubscription{RepoURL: "example/back-end"}},
			{Git: &model.GitSubscription{RepoURL: "https://git.example/app.git"}},
			{Chart: &model.ChartSubscription{RepoURL: "https://charts.example", Name: "app"}},
		}},
	}
}

func artifacts(front, back string) *model.DiscoveredArtifacts {
	return &model.DiscoveredArtifacts{
		Images: []model.ImageDiscoveryResult{
			{RepoURL: "example/front-end", References: []model.DiscoveredImageReference{{Tag: front, Digest: "sha256:f" + front}, {Tag: "old", Digest: "sha256:old"}}},
			{RepoURL: "example/back-end", References: []model.DiscoveredImageReference{{Tag: back, Digest: "sha256:b" + back}}},
		},
		Git:    []model.GitDiscoveryResult{{RepoURL: "https://git.example/app.git", Commits: []model.DiscoveredCommit{{ID: "abc", Branch: "main", Subject: "fix"}}}},
		Charts: []model.ChartDiscoveryResult{{RepoURL: "https://charts.example", Name: "app", Versions: []string{"1.2.0", "1.1.0"}}},
	}
}

func TestBuild(t *testing.T) {
	t.Parallel()
	f, err := Build(warehouse("w1"), artifacts("1.0", "1.0"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Images[0].Tag != "1.0" || f.Commits[0].ID != "abc" || f.Commits[0].Message != "fix" || f.Charts[0].Version != "1.2.0" {
		t.Fatalf("freight %+v does not hold the newest artifacts", f)
	}
	if f.Name != f.GenerateID() || f.Origin.Name != "w1" {
		t.Fatalf("name %s origin %v", f.Name, f.Origin)
	}
	again, _ := Build(warehouse("w1"), artifacts("1.0", "1.0"))
	other, _ := Build(warehouse("w2"), artifacts("1.0", "1.0"))
	if again.Name != f.Name || other.Name == f.Name {
		t.Fatalf("same artifacts: %s vs %s; other warehouse %s", f.Name, again.Name, other.Name)
	}
	// A named subscription's artifact carries its name; the ID does not.
	named := warehouse("w1")
	named.Spec.Subscriptions[0].Name = "front"
	named.Spec.Subscriptions[3].Name = "chart"
	nf, _ := Build(named, artifacts("1.0", "1.0"))
	if nf.Images[0].SubscriptionName != "front" || nf.Images[1].SubscriptionName != "" || nf.Charts[0].SubscriptionName != "chart" || nf.Name != f.Name {
		t.Fatalf("subscription names: %+v %+v, name %s", nf.Images, nf.Charts, nf.Name)
	}
	art := artifacts("1.0", "1.0")
	art.Charts[0].Versions = nil
	if _, err := Build(warehouse("w1"), art); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("incomplete: %v", err)
	}
}

func TestCriteria(t *testing.T) {
	t.Parallel()
	c, err := CompileCriteria(`imageFrom('example/front-end').Tag == imageFrom('example/back-end').Tag && chartFrom('https://charts.example', 'app').Version != '' && commitFrom('https://git.example/app').ID == 'abc'`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		front, back string
		want        bool
	}{{"1.0", "1.0", true}, {"1.1", "1.0", false}} {
		got, err := c.Allows(artifacts(tt.front, tt.back))
		if err != nil || got != tt.want {
			t.Errorf("%s/%s: %t, %v; want %t", tt.front, tt.back, got, err, tt.want)
		}
	}
	if _, err := CompileCriteria(`imageFrom(`); err == nil {
		t.Error("syntax error not reported")
	}
	// Nothing discovered from a repository is nil, as in Kargo: ?. and ??
	// work, a plain field access is an error.
	c, _ = CompileCriteria(`(imageFrom('nope')?.Tag ?? 'none') == 'none'`)
	if ok, err := c.Allows(artifacts("1", "1")); err != nil || !ok {
		t.Errorf("nil image: %t %v", ok, err)
	}
	c, _ = CompileCriteria(`imageFrom('nope').Tag == '1'`)
	if _, err := c.Allows(artifacts("1", "1")); err == nil {
		t.Error("a field of an absent image is not an error")
	}
	// The discovered commit's own fields, Subject among them.
	c, _ = CompileCriteria(`commitFrom('https://git.example/app').Subject != 'wip'`)
	if ok, err := c.Allows(artifacts("1", "1")); err != nil || !ok {
		t.Errorf("commit subject: %t %v", ok, err)
	}
}
