package model

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestFreightIDs checks GenerateID against vectors whose canonical strings
// were hashed by hand with sha1sum.
func TestFreightIDs(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("testdata/freight-ids.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []struct {
		Name    string  `json:"name"`
		Freight Freight `json:"freight"`
		ID      string  `json:"id"`
	}
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatal(err)
	}
	if len(vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range vectors {
		t.Run(v.Name, func(t *testing.T) {
			t.Parallel()
			if got := v.Freight.GenerateID(); got != v.ID {
				t.Errorf("got %s, want %s", got, v.ID)
			}
		})
	}
}

func TestNormalizeURLs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fn   func(string) string
		in   string
		want string
	}{
		{NormalizeGitURL, "https://User:pw@GitHub.com/Example/Repo.git/", "https://github.com/example/repo"},
		{NormalizeGitURL, "git@github.com:example/repo.git", "ssh://git@github.com/example/repo"},
		{NormalizeGitURL, "ssh://git@github.com/example/repo.git", "ssh://git@github.com/example/repo"},
		{NormalizeGitURL, " https://github.com/example/repo ", "https://github.com/example/repo"},
		{NormalizeChartURL, "oci://GHCR.io/example/charts/app", "ghcr.io/example/charts/app"},
		{NormalizeChartURL, "https://charts.example.com", "https://charts.example.com"},
		{NormalizeImageURL, "docker.io/library/nginx", "nginx"},
		{NormalizeImageURL, "index.docker.io/example/app", "example/app"},
		{NormalizeImageURL, "localhost:5000/app:1.0", "localhost:5000/app"},
		{NormalizeImageURL, "nginx", "nginx"},
	}
	for _, tt := range tests {
		if got := tt.fn(tt.in); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFreightOriginString(t *testing.T) {
	t.Parallel()
	if got := (FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "w"}).String(); got != "Warehouse/w" {
		t.Errorf("got %q", got)
	}
}

var aliasFormat = regexp.MustCompile(`^[a-z]+-[a-z]+(-[0-9]+)?$`)

func TestAlias(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	for range 200 {
		a := NewAlias(r.IntN)
		if !aliasFormat.MatchString(a) {
			t.Fatalf("alias %q has the wrong format", a)
		}
		seen[a] = true
	}
	if len(seen) < 190 {
		t.Errorf("only %d distinct aliases of 200", len(seen))
	}

	taken := map[string]bool{}
	for range 300 {
		a := UniqueAlias(r.IntN, func(s string) bool { return taken[s] })
		if taken[a] || !aliasFormat.MatchString(a) {
			t.Fatalf("alias %q taken or malformed", a)
		}
		taken[a] = true
	}

	// A random source that always says the same thing forces the suffix.
	fixed := func(int) int { return 0 }
	taken = map[string]bool{NewAlias(fixed): true, NewAlias(fixed) + "-2": true}
	if got, want := UniqueAlias(fixed, func(s string) bool { return taken[s] }), NewAlias(fixed)+"-3"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFreightAvailable(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *Time { return NewTime(now.Add(-d)) }
	origin := FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "w"}
	other := FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "other"}
	stageWith := func(src FreightSources) *Stage {
		s := &Stage{Spec: StageSpec{RequestedFreight: []FreightRequest{{Origin: origin, Sources: src}}}}
		s.Name = "prod"
		return s
	}
	verified := func(stages map[string]time.Duration) FreightStatus {
		st := FreightStatus{VerifiedIn: map[string]VerifiedStage{}}
		for s, d := range stages {
			st.VerifiedIn[s] = VerifiedStage{VerifiedAt: ago(d)}
		}
		return st
	}
	tests := []struct {
		name   string
		origin FreightOrigin
		status FreightStatus
		src    FreightSources
		want   bool
		reason string
	}{
		{"origin not requested", other, FreightStatus{}, FreightSources{Direct: true}, false, "does not request"},
		{"direct", origin, FreightStatus{}, FreightSources{Direct: true}, true, "directly"},
		{"not verified upstream", origin, FreightStatus{}, FreightSources{Stages: []string{"a"}}, false, `not verified in "a"`},
		{"verified upstream", origin, verified(map[string]time.Duration{"a": time.Minute}), FreightSources{Stages: []string{"a"}}, true, `"a"`},
		{"one of two", origin, verified(map[string]time.Duration{"b": time.Minute}),
			FreightSources{Stages: []string{"a", "b"}, AvailabilityStrategy: AvailabilityStrategyOneOf}, true, `"b"`},
		{"all needs both", origin, verified(map[string]time.Duration{"b": time.Minute}),
			FreightSources{Stages: []string{"a", "b"}, AvailabilityStrategy: AvailabilityStrategyAll}, false, `not verified in "a"`},
		{"all has both", origin, verified(map[string]time.Duration{"a": time.Minute, "b": time.Minute}),
			FreightSources{Stages: []string{"a", "b"}, AvailabilityStrategy: AvailabilityStrategyAll}, true, "all upstream"},
		{"soak not done", origin, verified(map[string]time.Duration{"a": 10 * time.Minute}),
			FreightSources{Stages: []string{"a"}, RequiredSoakTime: NewDuration(time.Hour)}, false, "soaked 10m0s of 1h0m0s"},
		{"soak done", origin, verified(map[string]time.Duration{"a": 2 * time.Hour}),
			FreightSources{Stages: []string{"a"}, RequiredSoakTime: NewDuration(time.Hour)}, true, `"a"`},
		{"soak from longest soak", origin, FreightStatus{VerifiedIn: map[string]VerifiedStage{
			"a": {VerifiedAt: ago(time.Minute), LongestSoak: NewDuration(3 * time.Hour)}}},
			FreightSources{Stages: []string{"a"}, RequiredSoakTime: NewDuration(time.Hour)}, true, `"a"`},
		{"soak from current stay", origin, FreightStatus{
			VerifiedIn:  map[string]VerifiedStage{"a": {VerifiedAt: ago(time.Minute), LongestSoak: NewDuration(time.Minute)}},
			CurrentlyIn: map[string]CurrentStage{"a": {Since: ago(2 * time.Hour)}}},
			FreightSources{Stages: []string{"a"}, RequiredSoakTime: NewDuration(time.Hour)}, true, `"a"`},
		{"approved", origin, FreightStatus{ApprovedFor: map[string]ApprovedStage{"prod": {ApprovedAt: ago(time.Minute)}}},
			FreightSources{Stages: []string{"a"}}, true, "approved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &Freight{Origin: tt.origin, Status: tt.status}
			got, reason := FreightAvailable(f, stageWith(tt.src), now)
			if got != tt.want || !strings.Contains(reason, tt.reason) {
				t.Errorf("got %v (%s), want %v (…%s…)", got, reason, tt.want, tt.reason)
			}
		})
	}
}

func TestRequestsOrigin(t *testing.T) {
	t.Parallel()
	s := &Stage{Spec: StageSpec{RequestedFreight: []FreightRequest{
		{Origin: FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "a"}, Sources: FreightSources{Stages: []string{"x", "y"}}},
		{Origin: FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "b"}, Sources: FreightSources{Stages: []string{"y", "z"}}},
	}}}
	if !s.RequestsOrigin(FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "b"}) ||
		s.RequestsOrigin(FreightOrigin{Kind: FreightOriginKindWarehouse, Name: "c"}) {
		t.Error("RequestsOrigin")
	}
	if got := strings.Join(s.UpstreamStages(), ","); got != "x,y,z" {
		t.Errorf("UpstreamStages %q", got)
	}
}

func TestObjectFactory(t *testing.T) {
	t.Parallel()
	for kind, info := range kinds {
		obj, ok := NewObject(info.apiVersion, kind)
		if !ok || obj.GetTypeMeta().Kind != kind {
			t.Errorf("NewObject(%q)", kind)
		}
	}
	if _, ok := NewObject("v1", "Stage"); ok {
		t.Error("Stage under v1")
	}
	if !ClusterScoped(KindProject) || ClusterScoped(KindStage) {
		t.Error("ClusterScoped")
	}
	p, _ := NewObject(KargoAPIVersion, KindProject)
	p.GetObjectMeta().Name = "demo"
	if ProjectName(p) != "demo" {
		t.Error("ProjectName of a Project")
	}
}
