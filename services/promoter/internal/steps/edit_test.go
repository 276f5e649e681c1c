package steps

import (
	"strings"
	"testing"
)

// The *-update steps change values where they are: every test input is
// written in a style the libraries would not produce themselves (other
// indentation, quoting, comments, unindented lists, key order), and the
// output must be the input with only the changed values replaced.

func TestSetYAMLInPlace(t *testing.T) {
	t.Parallel()
	const values = `# values for the web tier
image:
    repository: "ghcr.io/acme/web"   # pinned by CI
    tag: '1.4.0'
replicas: 2
ports:
- name: http
  port: 8080
- {name: metrics, port: 9090}
labels:
    example.com/team: blue
version: 1.10
enabled: yes
empty:
notes: |
    keep this
    block as it is
`
	tests := []struct {
		name    string
		key     string
		value   any
		want    string // the changed line(s) of values: old => new
		wantErr string
	}{
		{"single quotes kept", "image.tag", "1.5.2", `    tag: '1.4.0'` + "=>" + `    tag: '1.5.2'`, ""},
		{"double quotes and comment kept", "image.repository", "ghcr.io/acme/web2", `    repository: "ghcr.io/acme/web"   # pinned by CI` + "=>" + `    repository: "ghcr.io/acme/web2"   # pinned by CI`, ""},
		{"number", "replicas", 3.0, "replicas: 2=>replicas: 3", ""},
		{"unindented list item", "ports.0.port", 8081.0, "  port: 8080=>  port: 8081", ""},
		{"flow mapping", "ports.1.port", 9191.0, "- {name: metrics, port: 9090}=>- {name: metrics, port: 9191}", ""},
		{"escaped dot", `labels.example\.com/team`, "green", "    example.com/team: blue=>    example.com/team: green", ""},
		{"a plain string that would read as a number is quoted", "version", "1.20", `version: 1.10=>version: "1.20"`, ""},
		{"boolean", "enabled", false, "enabled: yes=>enabled: false", ""},
		{"empty value", "empty", "set", "empty:=>empty: set", ""},
		{"new key added to its mapping, indented as its siblings", "image.pullPolicy", "Always", `    tag: '1.4.0'=>    tag: '1.4.0'` + "\n" + `    pullPolicy: Always`, ""},
		{"new nested keys at the end", "resources.limits.cpu", "500m", "+resources:\n    limits:\n        cpu: 500m", ""},
		{"a key into a flow mapping is refused", "ports.1.protocol", "TCP", "", "flow mapping"},
		{"an index past the end is refused", "ports.5.port", 1.0, "", "not an index"},
		{"below a scalar is refused", "replicas.count", 1.0, "", "is a scalar"},
		{"a mapping is not a value", "image", "x", "", "holds a mapping"},
		{"objects are not values", "replicas", map[string]any{"a": 1.0}, "", "not a string, number or boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := setYAML([]byte(values), tt.key, tt.value)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := values
			if added, ok := strings.CutPrefix(tt.want, "+"); ok {
				want += added + "\n"
			} else {
				old, repl, _ := strings.Cut(tt.want, "=>")
				if !strings.Contains(want, old+"\n") {
					t.Fatalf("test input lacks %q", old)
				}
				want = strings.Replace(want, old+"\n", repl+"\n", 1)
			}
			if string(got) != want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestSetJSONInPlace(t *testing.T) {
	t.Parallel()
	// Keys out of order, four-space indent, a 20-digit integer and an
	// exponent: sjson leaves all of them as written.
	const doc = `{
    "zeta": {"build": 12345678901234567890, "ratio": 1e3},
    "image": {
        "tag": "v1.0.0",
        "repository": "ghcr.io/acme/web"
    },
    "example.com/version": "v1",
    "containers": [ { "name": "web", "image": "web:v1.0" } ]
}
`
	tests := []struct {
		key   string
		value any
		old   string
		new   string
	}{
		{"image.tag", "v1.2.0", `"tag": "v1.0.0"`, `"tag": "v1.2.0"`},
		{`example\.com/version`, "v2", `"example.com/version": "v1"`, `"example.com/version": "v2"`},
		{"containers.0.image", "web:v2.0", `"image": "web:v1.0"`, `"image": "web:v2.0"`},
		{"zeta.ratio", 2.5, `"ratio": 1e3`, `"ratio": 2.5`},
		// A new key goes where sjson puts it, as in Kargo.
		{"image.replicas", 3.0, "\"repository\": \"ghcr.io/acme/web\"\n    }", "\"repository\": \"ghcr.io/acme/web\"\n    ,\"replicas\":3}"},
	}
	for _, tt := range tests {
		got, err := setJSON([]byte(doc), tt.key, tt.value)
		if err != nil {
			t.Fatalf("%s: %v", tt.key, err)
		}
		if want := strings.Replace(doc, tt.old, tt.new, 1); string(got) != want {
			t.Errorf("%s:\ngot:\n%s\nwant:\n%s", tt.key, got, want)
		}
	}
	if _, err := setJSON([]byte("{not json"), "a", "b"); err == nil {
		t.Error("invalid JSON was edited")
	}
}

func TestSetTOMLInPlace(t *testing.T) {
	t.Parallel()
	const doc = `# service settings
title = "web"   # shown in the UI

[image]
tag = 'v1.0.0'  # literal string
digest = "sha256:abc"

[labels]
"example.com/version" = "1.0.0"

[server]
port = 8080
ratio = 0.5
values = [1, 2, 3]

[[backends]]
name = "a"

[[backends]]
name = "b"
`
	tests := []struct {
		key     string
		value   any
		old     string
		new     string
		wantErr string
	}{
		{"image.tag", "v1.1.0", `tag = 'v1.0.0'  # literal string`, `tag = 'v1.1.0'  # literal string`, ""},
		{"image.digest", "sha256:def", `digest = "sha256:abc"`, `digest = "sha256:def"`, ""},
		{`labels.example\.com/version`, "1.1.0", `"example.com/version" = "1.0.0"`, `"example.com/version" = "1.1.0"`, ""},
		{"server.port", 9090.0, "port = 8080", "port = 9090", ""},
		{"server.ratio", 0.75, "ratio = 0.5", "ratio = 0.75", ""},
		{"server.values.1", 20.0, "values = [1, 2, 3]", "values = [1, 20, 3]", ""},
		{"backends.1.name", "c", `name = "b"`, `name = "c"`, ""},
		{"title", "it's", `title = "web"`, `title = "it's"`, ""},
		{"server.host", "x", "", "", "existing keys only"},
		{"server", "x", "", "", "holds a Table"},
	}
	for _, tt := range tests {
		got, err := setTOML([]byte(doc), tt.key, tt.value)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: error %v, want %q", tt.key, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.key, err)
		}
		if want := strings.Replace(doc, tt.old, tt.new, 1); string(got) != want {
			t.Errorf("%s:\ngot:\n%s\nwant:\n%s", tt.key, got, want)
		}
	}
}

func TestSplitKey(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"image.tag":                     "image|tag",
		`example\.com/version`:          "example.com/version",
		`configs.example\.com/x.enable`: "configs|example.com/x|enable",
		`path\\to.file`:                 `path\to|file`,
		"containers.0.image":            "containers|0|image",
	} {
		if got := strings.Join(splitKey(key), "|"); got != want {
			t.Errorf("splitKey(%q) = %q, want %q", key, got, want)
		}
	}
}

// The update steps write the file back and describe the change as
// Kargo's do, in the commit message output.
func TestUpdateSteps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		uses, file, in string
		updates        []any
		out, message   string
	}{
		{
			uses: "yaml-update", file: "values.yaml",
			in:      "image:\n  tag: 1.0.0\nversion: 1.10\n",
			updates: []any{map[string]any{"key": "image.tag", "value": "1.1.0"}, map[string]any{"key": "version", "value": "1.20"}},
			out:     "image:\n  tag: 1.1.0\nversion: \"1.20\"\n",
			message: "Updated values.yaml\n\n- image.tag: 1.1.0\n- version: \"1.20\"",
		},
		{
			uses: "json-update", file: "config.json",
			in:      `{"b": 1, "a": {"tag": "v1"}}`,
			updates: []any{map[string]any{"key": "a.tag", "value": "v2"}, map[string]any{"key": "b", "value": 2.0}},
			out:     `{"b": 2, "a": {"tag": "v2"}}`,
			message: "Updated config.json\n\n- a.tag: \"v2\"\n- b: 2",
		},
		{
			uses: "toml-update", file: "app.toml",
			in:      "[image] # the app\ntag = \"v1\"\n",
			updates: []any{map[string]any{"key": "image.tag", "value": "v2"}},
			out:     "[image] # the app\ntag = \"v2\"\n",
			message: "Updated app.toml\n\n- image.tag: \"v2\"",
		},
	}
	for _, tt := range tests {
		t.Run(tt.uses, func(t *testing.T) {
			t.Parallel()
			sc := newContext(t, map[string]any{"path": tt.file, "updates": tt.updates})
			write(t, sc, tt.file, tt.in)
			res, err := run(t, tt.uses, sc)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := sc.Workspace.Dir.ReadFile(tt.file); string(got) != tt.out {
				t.Errorf("file:\n%s\nwant:\n%s", got, tt.out)
			}
			if res.Output["commitMessage"] != tt.message {
				t.Errorf("commitMessage %q, want %q", res.Output["commitMessage"], tt.message)
			}
		})
	}
}
