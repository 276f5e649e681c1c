package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/caravan-cd/caravan/pkg/model"
)

func TestExecute(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "version", args: []string{"version"}, wantOut: "caravan "},
		{name: "unknown flag", args: []string{"version", "--nope"}, wantCode: 2, wantErr: "unknown flag"},
		{name: "unknown verb", args: []string{"frobnicate"}, wantCode: 2, wantErr: "unknown command"},
		{name: "bad config names the variable", args: []string{"server"}, env: map[string]string{"CARAVAN_LOG_LEVEL": "loud", "CARAVAN_DATA_DIR": "x"}, wantCode: 2, wantErr: "CARAVAN_LOG_LEVEL"},
		{name: "unparsable config", args: []string{"server"}, env: map[string]string{"CARAVAN_JS_REPLICAS": "three"}, wantCode: 2, wantErr: "JS_REPLICAS"},
		{name: "a service setting is read and checked", args: []string{"server"}, env: map[string]string{"CARAVAN_REGISTRY_RPS": "fast"}, wantCode: 2, wantErr: "REGISTRY_RPS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			r := run(t, "", nil, tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, tt.wantCode, r.stderr)
			}
			if !strings.Contains(r.stdout, tt.wantOut) {
				t.Errorf("stdout %q, want %q", r.stdout, tt.wantOut)
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr %q, want %q", r.stderr, tt.wantErr)
			}
		})
	}
}

// pipeline is a small project in Kargo's manifests, split over files the
// way a repository keeps them.
func pipeline(project string) map[string]string {
	r := strings.NewReplacer("PROJECT", project)
	return map[string]string{
		"00-project.yaml": r.Replace(`apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: PROJECT
`),
		"10-warehouse.yaml": r.Replace(`apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: app
  namespace: PROJECT
spec:
  subscriptions:
  - image:
      repoURL: ghcr.io/example/app
      constraint: ^1.0.0
`),
		"stages/20-stages.yaml": r.Replace(`apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: smoke
  namespace: PROJECT
spec:
  metrics:
  - name: http
    provider:
      web:
        url: http://127.0.0.1:1/healthz
---
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionTask
metadata:
  name: bump
  namespace: PROJECT
spec:
  vars:
  - name: env
  steps:
  - uses: git-clone
    config:
      repoURL: http://127.0.0.1:1/repo.git
      checkout:
      - branch: main
        path: ./src
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
        config: {stage: dev}
  verification:
    analysisTemplates:
    - name: smoke
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: prod
  namespace: PROJECT
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {stages: [dev]}
  promotionTemplate:
    spec:
      steps:
      - uses: compose-output
        config: {stage: prod}
`),
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestApplyDirectoryGetDelete(t *testing.T) {
	t.Parallel()
	p := uniqueProject("apply-dir")
	dir := writeFiles(t, pipeline(p))

	r := must(t, run(t, "", nil, "apply", "-f", dir))
	for _, want := range []string{"project/" + p + " created", "warehouse/app created (project " + p + ")", "stage/prod created", "analysistemplate/smoke created", "promotiontask/bump created"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("apply output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = must(t, run(t, "", nil, "apply", "-f", dir))
	if strings.Contains(r.stdout, "created") || !strings.Contains(r.stdout, "unchanged") {
		t.Errorf("re-apply:\n%s", r.stdout)
	}

	// Tables, kubectl style.
	r = must(t, run(t, "", nil, "get", "stages", "-p", p))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME   FREIGHT") || !strings.HasPrefix(lines[1], "dev ") || !strings.HasPrefix(lines[2], "prod ") {
		t.Errorf("get stages:\n%s", r.stdout)
	}
	r = must(t, run(t, "", nil, "get", "stages", "-p", p, "-o", "wide"))
	if !strings.Contains(r.stdout, "SOURCES") || !strings.Contains(r.stdout, "smoke") {
		t.Errorf("get stages -o wide:\n%s", r.stdout)
	}
	r = must(t, run(t, "", nil, "get", "warehouses", "-p", p))
	if !strings.Contains(r.stdout, "image:app") {
		t.Errorf("get warehouses:\n%s", r.stdout)
	}
	r = must(t, run(t, "", nil, "get", "warehouses", "-p", p, "-o", "wide"))
	if !strings.Contains(r.stdout, "image:ghcr.io/example/app") || !strings.Contains(r.stdout, "5m0s") || !strings.Contains(r.stdout, "Automatic") {
		t.Errorf("get warehouses -o wide:\n%s", r.stdout)
	}
	r = must(t, run(t, "", nil, "get", "analysistemplates", "-p", p, "-o", "wide"))
	if !strings.Contains(r.stdout, "smoke") || !strings.Contains(r.stdout, "web") {
		t.Errorf("get analysistemplates:\n%s", r.stdout)
	}
	r = must(t, run(t, "", nil, "get", "promotiontasks", "-p", p, "-o", "wide"))
	if !strings.Contains(r.stdout, "bump") || !strings.Contains(r.stdout, "git-clone") || !strings.Contains(r.stdout, "env") {
		t.Errorf("get promotiontasks:\n%s", r.stdout)
	}
	r = must(t, run(t, "", nil, "get", "projects"))
	if !strings.Contains(r.stdout, p) {
		t.Errorf("get projects:\n%s", r.stdout)
	}
	r = must(t, run(t, "", nil, "get", "promotions", "-p", p))
	if !strings.Contains(r.stderr, "No promotions found in project "+p) {
		t.Errorf("empty list: %q", r.stderr)
	}

	// One object as YAML and JSON, in the API's shape.
	r = must(t, run(t, "", nil, "get", "stage", "prod", "-p", p, "-o", "yaml"))
	var st model.Stage
	if err := yaml.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("yaml: %v\n%s", err, r.stdout)
	}
	if !strings.HasPrefix(r.stdout, "apiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\n") || !strings.Contains(r.stdout, "  name: prod\n") {
		t.Errorf("get -o yaml:\n%s", r.stdout)
	}
	r = must(t, run(t, "", nil, "get", "stage", "prod", "-p", p, "-o", "json"))
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Name != "prod" || st.Spec.RequestedFreight[0].Sources.Stages[0] != "dev" {
		t.Errorf("get -o json: %v\n%s", err, r.stdout)
	}
	// A list as a List.
	r = must(t, run(t, "", nil, "get", "stages", "-p", p, "-o", "json"))
	var list struct {
		Kind  string        `json:"kind"`
		Items []model.Stage `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || list.Kind != "List" || len(list.Items) != 2 {
		t.Errorf("get stages -o json: %v\n%s", err, r.stdout)
	}
	r = must(t, run(t, "", nil, "get", "stages", "-p", p, "-o", "yaml"))
	if !strings.HasPrefix(r.stdout, "apiVersion: v1\nitems:\n") && !strings.Contains(r.stdout, "kind: List") {
		t.Errorf("get stages -o yaml:\n%s", r.stdout)
	}

	// Every kind in every format.
	for _, res := range resources {
		for _, format := range []string{"table", "wide", "yaml", "json"} {
			r := run(t, "", nil, "get", res.name, "-p", p, "-o", format)
			if r.code != 0 {
				t.Errorf("get %s -o %s: exit %d: %s", res.name, format, r.code, r.stderr)
			}
			if format == "json" && !json.Valid([]byte(r.stdout)) {
				t.Errorf("get %s -o json: not JSON:\n%s", res.name, r.stdout)
			}
		}
	}

	// Delete in reverse order: stages before the warehouse and the project.
	r = must(t, run(t, "", nil, "delete", "-f", dir))
	if !strings.Contains(r.stdout, "stage/prod deleted") || !strings.Contains(r.stdout, "project/"+p+" deleted") {
		t.Errorf("delete:\n%s", r.stdout)
	}
	if r := run(t, "", nil, "get", "project", p); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("get after delete: %+v", r)
	}
}

func TestApplyStdinAndFile(t *testing.T) {
	t.Parallel()
	files := pipeline(uniqueProject("apply-stdin"))
	must(t, run(t, files["00-project.yaml"]+"---\n"+files["10-warehouse.yaml"], nil, "apply", "-f", "-"))
	dir := writeFiles(t, map[string]string{"stages.yaml": files["stages/20-stages.yaml"]})
	r := must(t, run(t, "", nil, "apply", "-f", filepath.Join(dir, "stages.yaml")))
	if !strings.Contains(r.stdout, "stage/dev created") {
		t.Errorf("apply file:\n%s", r.stdout)
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	invalid := `apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata:
  name: api-errors
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: prod
  namespace: api-errors
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: nowhere}
    sources: {direct: true}
`
	tests := []struct {
		name     string
		stdin    string
		env      map[string]string
		args     []string
		wantCode int
		wantErr  []string
	}{
		{name: "invalid manifest shows field paths", stdin: invalid, args: []string{"apply", "-f", "-"}, wantCode: 1,
			wantErr: []string{"1 document is invalid; nothing was written", `document 2, Stage/prod: spec.requestedFreight[0].origin.name: warehouse "nowhere" does not exist`}},
		{name: "unknown field", stdin: strings.Replace(invalid, "spec:\n", "spec:\n  bogus: 1\n", 1), args: []string{"apply", "-f", "-"}, wantCode: 1,
			wantErr: []string{"document 2, Stage/prod: spec.bogus: unknown field"}},
		{name: "not found", args: []string{"get", "stage", "nope", "-p", "default-missing"}, wantCode: 1, wantErr: []string{"not found"}},
		{name: "bad token", env: map[string]string{"CARAVAN_TOKEN": "wrong"}, args: []string{"get", "projects"}, wantCode: 1, wantErr: []string{"Error:"}},
		{name: "no project", args: []string{"get", "stages"}, wantCode: 2, wantErr: []string{"no project"}},
		{name: "unknown kind", args: []string{"get", "gizmos", "-p", "x"}, wantCode: 2, wantErr: []string{"unknown kind"}},
		{name: "bad output", args: []string{"get", "stages", "-p", "x", "-o", "xml"}, wantCode: 2, wantErr: []string{"want table"}},
		{name: "missing -f", args: []string{"apply"}, wantCode: 2, wantErr: []string{"filename"}},
		{name: "missing file", args: []string{"apply", "-f", "/does/not/exist.yaml"}, wantCode: 2, wantErr: []string{"no such file"}},
		{name: "promote needs one source", args: []string{"promote", "--stage", "dev", "-p", "x"}, wantCode: 2, wantErr: []string{"exactly one"}},
		{name: "promote two sources", args: []string{"promote", "--stage", "dev", "--freight", "a", "--warehouse", "w", "-p", "x"}, wantCode: 2, wantErr: []string{"exactly one"}},
		{name: "refresh a stage", args: []string{"refresh", "stage", "dev", "-p", "x"}, wantCode: 2, wantErr: []string{"only warehouses"}},
		{name: "too many args", args: []string{"get", "stages", "a", "b"}, wantCode: 2, wantErr: []string{"accepts between 1 and 2 arg(s)"}},
		{name: "bad server URL", env: map[string]string{"CARAVAN_SERVER": "ftp://x"}, args: []string{"get", "projects"}, wantCode: 2, wantErr: []string{"want http(s)"}},
		{name: "completion shell", args: []string{"completion", "tcsh"}, wantCode: 2, wantErr: []string{"invalid argument"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, tt.stdin, tt.env, tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstderr: %s", r.code, tt.wantCode, r.stderr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
		})
	}
}

func TestFreightTable(t *testing.T) {
	t.Parallel()
	p := uniqueProject("freight-table")
	files := pipeline(p)
	must(t, run(t, files["00-project.yaml"]+"---\n"+files["10-warehouse.yaml"]+"---\n"+files["stages/20-stages.yaml"], nil, "apply", "-f", "-"))
	now := model.NewTime(time.Now())
	f := &model.Freight{
		ObjectMeta: model.ObjectMeta{Namespace: p},
		Alias:      "brave-otter",
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images:     []model.Image{{RepoURL: "ghcr.io/example/app", Tag: "1.2.3", Digest: "sha256:abc"}},
		Status: model.FreightStatus{
			CurrentlyIn: map[string]model.CurrentStage{"dev": {Since: now}},
			VerifiedIn:  map[string]model.VerifiedStage{"dev": {VerifiedAt: now}},
			ApprovedFor: map[string]model.ApprovedStage{"prod": {ApprovedAt: now}},
		},
	}
	seedFreight(t, f)

	r := must(t, run(t, "", nil, "get", "freight", "-p", p))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	want := []string{"NAME", "ALIAS", "ORIGIN", "ARTIFACTS", "CURRENTLY IN", "VERIFIED IN", "AGE"}
	for _, h := range want {
		if !strings.Contains(lines[0], h) {
			t.Errorf("header lacks %s: %q", h, lines[0])
		}
	}
	if len(lines) != 2 {
		t.Fatalf("get freight:\n%s", r.stdout)
	}
	fields := strings.Fields(lines[1])
	if got := strings.Join(fields, " "); got != f.Name[:7]+" brave-otter Warehouse/app app:1.2.3 dev dev 10d" {
		t.Errorf("freight row %q", got)
	}
	r = must(t, run(t, "", nil, "get", "freight", "-p", p, "-o", "wide"))
	if !strings.Contains(r.stdout, f.Name) || !strings.Contains(r.stdout, "ghcr.io/example/app:1.2.3") || !strings.Contains(r.stdout, "APPROVED FOR") {
		t.Errorf("get freight -o wide:\n%s", r.stdout)
	}
	// By alias.
	r = must(t, run(t, "", nil, "get", "freight", "brave-otter", "-p", p, "-o", "json"))
	var got model.Freight
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Name != f.Name {
		t.Errorf("get freight by alias: %v\n%s", err, r.stdout)
	}
	r = must(t, run(t, "", nil, "get", "freight", "-p", p, "--warehouse", "other"))
	if !strings.Contains(r.stderr, "No freight found") {
		t.Errorf("filter: %+v", r)
	}
}

func TestLoginConfig(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "sub", "config.yaml")
	base := map[string]string{"CARAVAN_SERVER": "", "CARAVAN_TOKEN": "", "CARAVAN_CONFIG": cfg, "CARAVAN_DATA_DIR": t.TempDir()}

	// A wrong token is refused and nothing is saved.
	r := run(t, "", base, "login", "--server", srv.url, "--token", "wrong")
	if r.code != 1 {
		t.Fatalf("login with a wrong token: %+v", r)
	}
	if _, err := os.Stat(cfg); err == nil {
		t.Error("config saved after a failed login")
	}

	p := uniqueProject("login-proj")
	r = must(t, run(t, "", base, "login", "--server", srv.url, "--token", srv.token, "-p", p))
	if !strings.Contains(r.stdout, "Logged in to "+srv.url) {
		t.Errorf("login: %s", r.stdout)
	}
	info, err := os.Stat(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600", info.Mode().Perm())
	}
	b, _ := os.ReadFile(cfg)
	if !strings.Contains(string(b), "project: "+p) || !strings.Contains(string(b), "token: "+srv.token) {
		t.Errorf("config:\n%s", b)
	}

	// Later verbs use it: project from the config.
	files := pipeline(p)
	must(t, run(t, files["00-project.yaml"]+"---\n"+files["10-warehouse.yaml"], base, "apply", "-f", "-"))
	r = must(t, run(t, "", base, "get", "warehouses"))
	if !strings.Contains(r.stdout, "app") {
		t.Errorf("get with the saved project:\n%s", r.stdout)
	}
	// CARAVAN_TOKEN overrides the config.
	env := map[string]string{"CARAVAN_TOKEN": "wrong"}
	for k, v := range base {
		if k != "CARAVAN_TOKEN" {
			env[k] = v
		}
	}
	if r := run(t, "", env, "get", "warehouses"); r.code != 1 {
		t.Errorf("CARAVAN_TOKEN did not override the config: %+v", r)
	}
	// -p overrides the config's project.
	if r := run(t, "", base, "get", "warehouses", "-p", "no-such-project"); r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("-p did not override: %+v", r)
	}
}

func TestLocalAdminToken(t *testing.T) {
	t.Parallel()
	// No token configured anywhere: a local server's admin token is found
	// in $CARAVAN_DATA_DIR/admin-token.
	env := map[string]string{"CARAVAN_TOKEN": "", "CARAVAN_DATA_DIR": srv.dataDir, "CARAVAN_CONFIG": filepath.Join(t.TempDir(), "config.yaml")}
	r := must(t, run(t, "", env, "get", "projects", "-o", "json"))
	if !strings.Contains(r.stdout, `"kind": "List"`) {
		t.Errorf("get projects:\n%s", r.stdout)
	}
	// Without it, the CLI says where it looked and how to log in.
	env["CARAVAN_DATA_DIR"] = t.TempDir()
	r = run(t, "", env, "get", "projects")
	for _, want := range []string{
		"no API token for " + srv.url,
		"--token and $CARAVAN_TOKEN: not set",
		env["CARAVAN_CONFIG"],
		filepath.Join(env["CARAVAN_DATA_DIR"], "admin-token") + ": not there",
		"caravan login --server " + srv.url + " --token <TOKEN>",
		`--token "$(cat D/.caravan/admin-token)"`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("no-token error lacks %q:\n%s", want, r.stderr)
		}
	}
	if r.code != 1 {
		t.Errorf("without a token: exit %d", r.code)
	}
	// A remote server: no local token is looked for.
	env["CARAVAN_SERVER"] = "https://caravan.example.com"
	if r := run(t, "", env, "get", "projects"); r.code != 1 || !strings.Contains(r.stderr, "not used for https://caravan.example.com") || strings.Contains(r.stderr, "$(cat") {
		t.Errorf("remote server without a token: %+v", r)
	}
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := must(t, run(t, "", nil, "completion", sh))
		if !strings.Contains(r.stdout, "caravan") {
			t.Errorf("completion %s: %.200s", sh, r.stdout)
		}
	}
	// Names come from the server: the shell scripts call the hidden
	// __complete command.
	p := uniqueProject("complete")
	files := pipeline(p)
	must(t, run(t, files["00-project.yaml"]+"---\n"+files["10-warehouse.yaml"]+"---\n"+files["stages/20-stages.yaml"], nil, "apply", "-f", "-"))
	seedFreight(t, &model.Freight{
		ObjectMeta: model.ObjectMeta{Namespace: p}, Alias: "odd-yak",
		Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images: []model.Image{{RepoURL: "ghcr.io/example/app", Tag: "1.0.0", Digest: "sha256:cc"}},
	})
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"promote", "-p", p, "--stage", ""}, []string{"dev", "prod"}},
		{[]string{"promote", "-p", p, "--stage", "dev", "--freight-alias", ""}, []string{"odd-yak"}},
		{[]string{"promote", "-p", p, "--warehouse", ""}, []string{"app"}},
		{[]string{"get", "stages", "-p", p, ""}, []string{"dev", "prod"}},
		{[]string{"get", "freight", "-p", p, ""}, []string{"odd-yak"}},
		{[]string{"verify", "stage", "-p", p, ""}, []string{"dev", "prod"}},
		{[]string{"resume", "stage", "-p", p, ""}, []string{"dev", "prod"}},
		{[]string{"refresh", "warehouse", "-p", p, ""}, []string{"app"}},
		{[]string{"get", "stages", "-p", ""}, []string{p}},
	}
	for _, tt := range tests {
		r := must(t, run(t, "", nil, append([]string{"__complete"}, tt.args...)...))
		for _, w := range tt.want {
			if !strings.Contains("\n"+r.stdout, "\n"+w+"\n") {
				t.Errorf("complete %v: want %s in\n%s", tt.args, w, r.stdout)
			}
		}
	}
}

// TestApplyReportsEveryInvalidFile: apply -f DIR sends every file and
// reports each invalid one, then fails.
func TestApplyReportsEveryInvalidFile(t *testing.T) {
	t.Parallel()
	p := uniqueProject("apply-all")
	files := pipeline(p)
	files["15-bad.yaml"] = strings.Replace(files["10-warehouse.yaml"], "name: app", "name: bad1", 1) + "  bogus: 1\n"
	files["stages/30-bad.yaml"] = strings.NewReplacer("name: dev", "name: bad2", "name: app}", "name: nowhere}").Replace(strings.Split(files["stages/20-stages.yaml"], "---\n")[2])
	dir := writeFiles(t, files)
	r := run(t, "", nil, "apply", "-f", dir)
	if r.code != 1 {
		t.Errorf("exit %d", r.code)
	}
	for _, want := range []string{"15-bad.yaml: ", "spec.bogus: unknown field", "30-bad.yaml: ", `warehouse "nowhere" does not exist`, "2 of 5 files failed"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, "stage/prod created") {
		t.Errorf("the valid files were not applied:\n%s", r.stdout)
	}
}

// TestVersion shows the client's and the server's builds.
func TestVersion(t *testing.T) {
	t.Parallel()
	r := must(t, run(t, "", nil, "version"))
	if !strings.HasPrefix(r.stdout, "Client: caravan ") || !strings.Contains(r.stdout, "Server: caravan ") || !strings.Contains(r.stdout, "at "+srv.url) {
		t.Errorf("version:\n%s", r.stdout)
	}
	// Without a token too (/version is public); a server that is not
	// there is reported, not an error.
	r = must(t, run(t, "", map[string]string{"CARAVAN_TOKEN": "", "CARAVAN_DATA_DIR": t.TempDir(), "CARAVAN_SERVER": "http://127.0.0.1:1"}, "version"))
	if !strings.Contains(r.stdout, "Server: http://127.0.0.1:1 unreachable") {
		t.Errorf("version without a server:\n%s", r.stdout)
	}
}

// TestNoTokenFromASubdirectory: run from a folder below a local server's
// directory, the CLI names the admin token it found and the exact login
// command.
func TestNoTokenFromASubdirectory(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, ".caravan"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, ".caravan", "admin-token"), []byte(srv.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "examples", "helm")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	r := run(t, "", map[string]string{"CARAVAN_TOKEN": ""}, "get", "projects")
	want := `caravan login --server ` + srv.url + ` --token "$(cat ` + filepath.Join(root, ".caravan", "admin-token") + `)"`
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("exit %d, stderr lacks %q:\n%s", r.code, want, r.stderr)
	}
}
