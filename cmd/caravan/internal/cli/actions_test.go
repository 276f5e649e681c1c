package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/client"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// The gateway's action routes (refresh, promote, approve, verification,
// abort) and its event stream are being built beside this CLI. The tests
// in this file that use a recorder check that the CLI sends the requests
// API.md describes, against an httptest server that records them and
// answers as API.md says; they are not a stand-in for the real server,
// which TestActionsOnRealServer uses for every route it already has.

type recorded struct {
	method, path, body, auth, contentType string
}

// recorder records requests and answers from handlers keyed by
// "METHOD path"; unknown routes get the gateway's JSON 404.
type recorder struct {
	mu       sync.Mutex
	requests []recorded
	handlers map[string]http.HandlerFunc
	srv      *httptest.Server
}

func newRecorder(t *testing.T, handlers map[string]http.HandlerFunc) *recorder {
	t.Helper()
	rec := &recorder{handlers: handlers}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.requests = append(rec.requests, recorded{r.Method, r.URL.RequestURI(), string(b), r.Header.Get("Authorization"), r.Header.Get("Content-Type")})
		rec.mu.Unlock()
		if h, ok := rec.handlers[r.Method+" "+r.URL.Path]; ok {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"code":"not_found","message":"no route for %s %s"}`, r.Method, r.URL.Path)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (rec *recorder) all() []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recorded(nil), rec.requests...)
}

func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func recEnv(rec *recorder) map[string]string {
	return map[string]string{"CARAVAN_SERVER": rec.srv.URL, "CARAVAN_TOKEN": "tok", "CARAVAN_PROJECT": "demo"}
}

const freightJSON = `{"apiVersion":"kargo.akuity.io/v1alpha1","kind":"Freight","metadata":{"name":"f00d","namespace":"demo"},"alias":"brave-otter","origin":{"kind":"Warehouse","name":"app"}}`

func promotionJSON(phase string) string {
	return `{"apiVersion":"kargo.akuity.io/v1alpha1","kind":"Promotion","metadata":{"name":"prod.01j.f00d","namespace":"demo"},"spec":{"stage":"prod","freight":"f00d","steps":[{"uses":"git-clone","as":"clone"},{"uses":"git-push","as":"push"}]},"status":{"phase":"` + phase + `"}}`
}

func TestActionsSendRequests(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, map[string]http.HandlerFunc{
		"POST /v1/projects/demo/warehouses/app/refresh":         answer(http.StatusAccepted, `{}`),
		"POST /v1/projects/demo/stages/prod/verification":       answer(http.StatusAccepted, `{}`),
		"DELETE /v1/projects/demo/stages/prod/verification":     answer(http.StatusAccepted, `{}`),
		"POST /v1/projects/demo/promotions/prod.01j.f00d/abort": answer(http.StatusAccepted, `{}`),
		"GET /v1/projects/demo/freight/brave-otter":             answer(http.StatusOK, freightJSON),
		"POST /v1/projects/demo/freight/f00d/approve":           answer(http.StatusOK, freightJSON),
		"POST /v1/projects/demo/stages/prod/promotions":         answer(http.StatusCreated, promotionJSON("Pending")),
	})
	tests := []struct {
		args    []string
		want    []recorded
		wantOut string
	}{
		{[]string{"refresh", "warehouse", "app"}, []recorded{{method: "POST", path: "/v1/projects/demo/warehouses/app/refresh"}}, "warehouse/app refresh requested"},
		{[]string{"verify", "stage", "prod"}, []recorded{{method: "POST", path: "/v1/projects/demo/stages/prod/verification"}}, "verification requested"},
		{[]string{"verify", "stage", "prod", "--abort"}, []recorded{{method: "DELETE", path: "/v1/projects/demo/stages/prod/verification"}}, "verification abort requested"},
		{[]string{"abort", "promotion", "prod.01j.f00d"}, []recorded{{method: "POST", path: "/v1/projects/demo/promotions/prod.01j.f00d/abort"}}, "abort requested"},
		{[]string{"approve", "--freight", "brave-otter", "--stage", "prod"}, []recorded{
			{method: "GET", path: "/v1/projects/demo/freight/brave-otter"},
			{method: "POST", path: "/v1/projects/demo/freight/f00d/approve", body: `{"stage":"prod"}`, contentType: "application/json"},
		}, "freight/f00d (brave-otter) approved for stage prod"},
		{[]string{"promote", "--stage", "prod", "--freight", "f00d"}, []recorded{{method: "POST", path: "/v1/projects/demo/stages/prod/promotions", body: `{"freight":"f00d"}`, contentType: "application/json"}}, "promotion/prod.01j.f00d created"},
		{[]string{"promote", "--stage", "prod", "--freight-alias", "brave-otter"}, []recorded{{method: "POST", path: "/v1/projects/demo/stages/prod/promotions", body: `{"freight":"brave-otter"}`, contentType: "application/json"}}, "created"},
		{[]string{"promote", "--stage", "prod", "--warehouse", "app"}, []recorded{{method: "POST", path: "/v1/projects/demo/stages/prod/promotions", body: `{"warehouse":"app"}`, contentType: "application/json"}}, "created"},
	}
	for _, tt := range tests {
		before := len(rec.all())
		r := must(t, run(t, "", recEnv(rec), tt.args...))
		if !strings.Contains(r.stdout, tt.wantOut) {
			t.Errorf("%v: stdout %q, want %q", tt.args, r.stdout, tt.wantOut)
		}
		got := rec.all()[before:]
		if len(got) != len(tt.want) {
			t.Errorf("%v: sent %+v, want %+v", tt.args, got, tt.want)
			continue
		}
		for i, w := range tt.want {
			g := got[i]
			if g.method != w.method || g.path != w.path || g.body != w.body || g.contentType != w.contentType || g.auth != "Bearer tok" {
				t.Errorf("%v: request %d = %+v, want %+v", tt.args, i, g, w)
			}
		}
	}
}

// TestActionsOnRealServer runs the action verbs against the real server.
func TestActionsOnRealServer(t *testing.T) {
	t.Parallel()
	p := uniqueProject("actions-real")
	files := pipeline(p)
	must(t, run(t, files["00-project.yaml"]+"---\n"+files["10-warehouse.yaml"]+"---\n"+files["stages/20-stages.yaml"], nil, "apply", "-f", "-"))
	f := &model.Freight{
		ObjectMeta: model.ObjectMeta{Namespace: p},
		Alias:      "calm-heron",
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images:     []model.Image{{RepoURL: "ghcr.io/example/app", Tag: "1.0.0", Digest: "sha256:def"}},
	}
	seedFreight(t, f)
	// dev runs the freight, as the promoter would have recorded it.
	status := model.StageStatus{FreightHistory: []model.FreightCollection{{
		ID:      "c1",
		Freight: map[string]model.FreightReference{"Warehouse/app": {Name: f.Name, Origin: f.Origin, Images: f.Images}},
	}}}
	if _, err := state.Put(context.Background(), srv.store.KV(state.Stages), state.Key(p, "dev"), status); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "refresh", args: []string{"refresh", "warehouse", "app"}, wantOut: "refresh requested"},
		{name: "refresh unknown warehouse", args: []string{"refresh", "warehouse", "nope"}, wantCode: 1, wantErr: "not found"},
		{name: "verify a stage without verification", args: []string{"verify", "stage", "prod"}, wantCode: 1, wantErr: "no verification"},
		// Nothing to abort is an error, as nothing to verify is.
		{name: "verify abort with nothing running", args: []string{"verify", "stage", "dev", "--abort"}, wantCode: 1, wantErr: `stage "dev" has no verification running`},
		{name: "verify abort without verification", args: []string{"verify", "stage", "prod", "--abort"}, wantCode: 1, wantErr: `stage "prod" has no verification`},
		{name: "verify", args: []string{"verify", "stage", "dev"}, wantOut: "verification requested"},
		{name: "abort unknown promotion", args: []string{"abort", "promotion", "nope"}, wantCode: 1, wantErr: "not found"},
		{name: "approve", args: []string{"approve", "--freight", "calm-heron", "--stage", "prod"}, wantOut: "approved for stage prod"},
		// The short name the freight table shows is accepted everywhere.
		{name: "approve by short name", args: []string{"approve", "--freight", f.Name[:7], "--stage", "prod"}, wantOut: "(calm-heron) approved for stage prod"},
		{name: "promote by short name", args: []string{"promote", "--stage", "dev", "--freight", f.Name[:7]}, wantOut: "created"},
		{name: "get freight by short name", args: []string{"get", "freight", f.Name[:7]}, wantOut: "calm-heron"},
		{name: "promote in an unknown project", args: []string{"promote", "-p", "no-such-project", "--stage", "dev", "--freight", f.Name}, wantCode: 1, wantErr: `project "no-such-project" not found`},
		{name: "resume", args: []string{"resume", "stage", "dev"}, wantOut: "stage/dev auto-promotion resumed"},
		{name: "resume a warehouse", args: []string{"resume", "warehouse", "app"}, wantCode: 2, wantErr: "only stages"},
		{name: "approve unknown freight", args: []string{"approve", "--freight", "nope", "--stage", "prod"}, wantCode: 1, wantErr: "not found"},
		{name: "promote", args: []string{"promote", "--stage", "dev", "--freight-alias", "calm-heron"}, wantOut: "created"},
		{name: "promote unknown stage", args: []string{"promote", "--stage", "nope", "--freight", f.Name}, wantCode: 1, wantErr: "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "", map[string]string{"CARAVAN_PROJECT": p}, tt.args...)
			if r.code != tt.wantCode || !strings.Contains(r.stdout, tt.wantOut) || !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("exit %d (want %d)\nstdout: %s\nstderr: %s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
		})
	}
}

// sse writes envelopes as the gateway's event stream does.
func sse(t *testing.T, evs []events.Envelope, hold bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fl := w.(http.Flusher)
		_, _ = io.WriteString(w, ": hello\n\n")
		fl.Flush()
		time.Sleep(100 * time.Millisecond) // the CLI posts after the stream opened
		for i, env := range evs {
			b, err := json.Marshal(env)
			if err != nil {
				t.Error(err)
				return
			}
			fmt.Fprintf(w, "event: %s\nid: %d\ndata: %s\n\n", env.Type, i+1, b)
			fl.Flush()
		}
		if hold {
			<-r.Context().Done()
		}
	}
}

func envelope(t *testing.T, ev events.Event) events.Envelope {
	t.Helper()
	return envelopeAbout(t, events.Ref{Kind: "Promotion", Name: "prod.01j.f00d"}, ev)
}

func envelopeAbout(t *testing.T, ref events.Ref, ev events.Event) events.Envelope {
	t.Helper()
	env, err := events.Seal("", "promoter", "demo", ref, ev)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestPromoteWait(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const name = "prod.01j.f00d"
	started := events.PromotionStarted{Promotion: name, Stage: "prod", Freight: "f00d"}
	clone := events.PromotionStepFinished{Promotion: name, Stage: "prod", Step: 0, Alias: "clone", Uses: "git-clone", Status: "Succeeded", StartedAt: t0, FinishedAt: t0.Add(1500 * time.Millisecond)}
	other := events.PromotionStepFinished{Promotion: "dev.01j.f00d", Stage: "dev", Step: 0, Alias: "other-promotion", Status: "Failed"}
	tests := []struct {
		name      string
		evs       []events.Event
		phase     string
		wantCode  int
		wantOut   []string
		wantErr   string
		notWanted string
	}{
		{
			name: "succeeds",
			evs: []events.Event{started, other, clone,
				events.PromotionStepFinished{Promotion: name, Stage: "prod", Step: 1, Alias: "push", Uses: "git-push", Status: "Succeeded", StartedAt: t0, FinishedAt: t0.Add(200 * time.Millisecond)},
				events.PromotionSucceeded{Promotion: name, Stage: "prod", Freight: "f00d"}},
			phase:     "Running",
			wantOut:   []string{"promotion/" + name + " created", "clone (git-clone): Succeeded in 1.5s", "push (git-push): Succeeded in 200ms", "Promotion " + name + " succeeded"},
			notWanted: "other-promotion",
		},
		{
			name: "fails",
			evs: []events.Event{started, clone,
				events.PromotionStepFinished{Promotion: name, Stage: "prod", Step: 1, Alias: "push", Uses: "git-push", Status: "Errored", Message: "push rejected: non-fast-forward", StartedAt: t0, FinishedAt: t0.Add(time.Second)},
				events.PromotionFailed{Promotion: name, Stage: "prod", Freight: "f00d", Phase: "Errored", Message: "step push errored"}},
			phase:    "Running",
			wantCode: 1,
			wantOut:  []string{"push (git-push): Errored in 1s", "push rejected: non-fast-forward"},
			wantErr:  "promotion " + name + " errored at step 2/2 push (git-push): push rejected: non-fast-forward",
		},
		{
			// The stream says nothing; the stored promotion ends the wait.
			name:     "no events, stored status",
			phase:    "Failed",
			wantCode: 1,
			wantErr:  "promotion " + name + " failed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var envs []events.Envelope
			for _, ev := range tt.evs {
				envs = append(envs, envelope(t, ev))
			}
			rec := newRecorder(t, map[string]http.HandlerFunc{
				"GET /v1/projects/demo/events":                  answer(http.StatusOK, ""),
				"POST /v1/projects/demo/stages/prod/promotions": answer(http.StatusCreated, promotionJSON("Pending")),
				"GET /v1/projects/demo/promotions/" + name:      answer(http.StatusOK, promotionJSON(tt.phase)),
			})
			rec.handlers["GET /v1/projects/demo/events"] = sse(t, envs, true)
			r := run(t, "", recEnv(rec), "promote", "--stage", "prod", "--freight", "f00d", "--wait")
			if r.code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
				}
			}
			if !strings.Contains(r.stderr, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, r.stderr)
			}
			if tt.notWanted != "" && strings.Contains(r.stdout, tt.notWanted) {
				t.Errorf("stdout shows another promotion's step:\n%s", r.stdout)
			}
			// The stream was opened before the promotion was asked for.
			reqs := rec.all()
			if len(reqs) < 2 || reqs[0].path != "/v1/projects/demo/events" || reqs[1].method != "POST" {
				t.Errorf("requests: %+v", reqs)
			}
		})
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	envs := []events.Envelope{
		envelope(t, events.PromotionStarted{Promotion: "prod.01j.f00d", Stage: "prod", Freight: "f00d"}),
		envelope(t, events.PromotionFailed{Promotion: "prod.01j.f00d", Stage: "prod", Phase: "Failed", Message: "boom here"}),
	}
	const freightID = "0123456789abcdef0123456789abcdef01234567"
	aliased := []events.Envelope{
		envelopeAbout(t, events.Ref{Kind: "Freight", Name: freightID}, events.FreightDiscovered{Freight: freightID, Alias: "shy-mole", Origin: events.FreightOrigin{Kind: "Warehouse", Name: "app"}}),
		envelopeAbout(t, events.Ref{Kind: "Promotion", Name: "dev.01j.0123456"}, events.PromotionStarted{Promotion: "dev.01j.0123456", Stage: "dev", Freight: freightID}),
		envelopeAbout(t, events.Ref{Kind: "Stage", Name: "dev"}, events.AutoPromotionHeld{Stage: "dev", Origin: events.FreightOrigin{Kind: "Warehouse", Name: "app"}, Freight: freightID, Promotion: "dev.01j.0123456", Reason: "older freight promoted by hand"}),
	}
	var mu sync.Mutex
	var lastIDs []string
	var reconnected chan struct{}
	rec := newRecorder(t, nil)
	rec.handlers = map[string]http.HandlerFunc{
		"GET /v1/projects/demo/events": func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
			n := len(lastIDs)
			if n == 3 {
				close(reconnected)
			}
			mu.Unlock()
			switch n {
			case 1:
				// The gateway shutting down: a last event, then the end.
				sse(t, envs, false)(w, r)
				_, _ = io.WriteString(w, "event: shutdown\nretry: 2000\ndata: {\"type\":\"shutdown\",\"message\":\"bye\"}\n\n")
			case 2:
				sse(t, aliased, false)(w, r) // ends the stream: the CLI resumes
			default:
				sse(t, nil, true)(w, r)
			}
		},
	}
	for _, format := range []string{"table", "json"} {
		t.Run(format, func(t *testing.T) {
			mu.Lock()
			lastIDs = nil
			reconnected = make(chan struct{})
			done := reconnected
			mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			go func() {
				// The events were printed before the CLI reconnected.
				select {
				case <-done:
				case <-ctx.Done():
				}
				cancel()
			}()
			r := runCtx(ctx, t, "", recEnv(rec), "watch", "-o", format)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if len(lines) != 5 {
				t.Fatalf("watch:\n%s", r.stdout)
			}
			// It says when it is connected, why it reconnects, and that it did.
			for _, want := range []string{"Watching the events of project demo on " + rec.srv.URL, "the server is shutting down; reconnecting", "reconnected to " + rec.srv.URL + "; resuming after event 2"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			if format == "table" {
				if !strings.Contains(lines[0], "PromotionStarted") || !strings.Contains(lines[0], "Promotion/prod.01j.f00d") || !strings.Contains(lines[0], "freight=f00d") {
					t.Errorf("line 1: %q", lines[0])
				}
				if !strings.Contains(lines[1], `message="boom here"`) {
					t.Errorf("line 2: %q", lines[1])
				}
				// Freight by alias, never by its 40-character ID.
				if strings.Contains(r.stdout, freightID) {
					t.Errorf("a freight ID shown:\n%s", r.stdout)
				}
				if !strings.Contains(lines[2], "FreightDiscovered") || !strings.Contains(lines[2], "Freight/shy-mole") {
					t.Errorf("line 3: %q", lines[2])
				}
				if !strings.Contains(lines[3], "freight=shy-mole") {
					t.Errorf("line 4: %q", lines[3])
				}
				if !strings.Contains(lines[4], "AutoPromotionHeld") || !strings.Contains(lines[4], "freight=shy-mole") || !strings.Contains(lines[4], "caravan resume stage dev -p demo") {
					t.Errorf("line 5: %q", lines[4])
				}
			} else {
				var env events.Envelope
				if err := json.Unmarshal([]byte(lines[1]), &env); err != nil || env.Type != events.TypePromotionFailed {
					t.Errorf("json line: %v %q", err, lines[1])
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(lastIDs) < 3 || lastIDs[0] != "" || lastIDs[1] != "2" || lastIDs[2] != "3" {
				t.Errorf("Last-Event-ID of the connections: %q", lastIDs)
			}
		})
	}
}

// TestWatchRealServer reads the real server's stream.
func TestWatchRealServer(t *testing.T) {
	t.Parallel()
	p := uniqueProject("watch-real")
	files := pipeline(p)
	must(t, run(t, files["00-project.yaml"], nil, "apply", "-f", "-"))
	c, err := client.New(srv.url, srv.token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.Events(ctx, p, "")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	// A new warehouse each run, so that the apply is not "unchanged".
	wh := fmt.Sprintf("app-%d", time.Now().UnixNano())
	must(t, run(t, strings.Replace(files["10-warehouse.yaml"], "name: app", "name: "+wh, 1), nil, "apply", "-f", "-"))
	for {
		ev, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == string(events.TypeResourceApplied) && ev.Envelope.Subject.Name == wh {
			return
		}
	}
}

// TestPromoteWaitRealServer promotes with --wait on the real server, to a
// stage whose steps succeed and to one whose step fails.
func TestPromoteWaitRealServer(t *testing.T) {
	t.Parallel()
	p := uniqueProject("wait-real")
	manifests := strings.NewReplacer("PROJECT", p).Replace(`apiVersion: kargo.akuity.io/v1alpha1
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
  name: good
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
          stage: ${{ ctx.stage }}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: bad
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
          stage: ${{ ctx.stage }}
      - uses: fail
        as: boom
        config:
          message: the release train left without us
`)
	must(t, run(t, manifests, nil, "apply", "-f", "-"))
	seedFreight(t, &model.Freight{
		ObjectMeta: model.ObjectMeta{Namespace: p},
		Alias:      "quiet-lynx",
		Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images:     []model.Image{{RepoURL: "127.0.0.1:1/example/app", Tag: "1.0.0", Digest: "sha256:0a"}},
	})
	wait := func(stage string) result {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return runCtx(ctx, t, "", map[string]string{"CARAVAN_PROJECT": p}, "promote", "--stage", stage, "--freight-alias", "quiet-lynx", "--wait")
	}
	r := wait("good")
	if r.code != 0 || !strings.Contains(r.stdout, "[1/1] note (compose-output): Succeeded") || !strings.Contains(r.stdout, "succeeded") {
		t.Errorf("good: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	r = wait("bad")
	if r.code != 1 || !strings.Contains(r.stdout, "[2/2] boom (fail): Failed") || !strings.Contains(r.stderr, "at step 2/2 boom (fail): the release train left without us") {
		t.Errorf("bad: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}
