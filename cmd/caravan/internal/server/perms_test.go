package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

const permsPipeline = `apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: demo}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: demo}
spec:
  subscriptions:
  - image: {repoURL: %s}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: smoke, namespace: demo}
spec:
  metrics:
  - name: health
    successCondition: result == true
    provider:
      web:
        url: "%s/health"
        jsonPath: "{$.ok}"
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: dev, namespace: demo}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: app}
    sources: {direct: true}
  promotionTemplate:
    spec:
      steps:
      - uses: compose-output
        as: out
        config: {freight: "${{ ctx.targetFreight.name }}"}
  verification:
    analysisTemplates: [{name: smoke}]
`

// violations collects the permission violations NATS reports to any
// connection of the test.
type violations struct {
	mu   sync.Mutex
	seen []string
}

func (v *violations) handler(user string) nats.ErrHandler {
	return func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if err != nil && strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			v.mu.Lock()
			v.seen = append(v.seen, user+": "+err.Error())
			v.mu.Unlock()
		}
	}
}

func (v *violations) list() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.seen...)
}

// TestServicesUnderDocumentedNATSPermissions runs every service as its own
// NATS user holding exactly its permissions of service.NATSRules (the table
// of docs/deploy.md), with the streams and buckets declared by the setup
// user (as caravan setup does), and drives a flow touching
// every subject class: apply (KV), discovery from a registry (events,
// claims, forwards), a promotion (wakes), its verification, and a dry run
// (the gateway's request to the promoter). Any permission violation fails
// the test.
func TestServicesUnderDocumentedNATSPermissions(t *testing.T) {
	users := []*natsserver.User{{Username: "admin", Password: "admin"}}
	for _, name := range service.Users {
		p, err := service.Permissions(name)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, &natsserver.User{Username: name, Password: name + "-pw", Permissions: &natsserver.Permissions{
			Publish:   &natsserver.SubjectPermission{Allow: p.Publish},
			Subscribe: &natsserver.SubjectPermission{Allow: p.Subscribe},
		}})
	}
	ns := testenv.NATS(t, testenv.WithServerOptions(func(o *natsserver.Options) { o.Users = users }))
	var v violations

	// A restricted user is refused what it lacks: the check below can see
	// a violation.
	probe := ns.Conn(t, nats.UserInfo("gateway", "gateway-pw"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		v.handler("probe")(nil, nil, err)
	}))
	if _, err := probe.Subscribe(events.DryRunSubject, func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return len(v.list()) > 0 }, func() string { return "a violation for the gateway subscribing to dry runs" })
	v = violations{}
	probe.Close()

	reg := testenv.Registry(t)
	reg.PushImage(t, "demo/app", "1.0.0")
	metric := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprint(w, `{"ok": true}`)
	}))
	t.Cleanup(metric.Close)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The all-in-one server's own connection runs setup: as the setup user.
	url := strings.Replace(ns.URL(), "nats://", "nats://setup:setup-pw@", 1)
	cfg := testConfig(t.TempDir(), ln)
	cfg.NATSConfig = events.NATSConfig{URL: url, ConnectTimeout: 30 * time.Second}
	cfg.Egress.Allow = "127.0.0.0/8"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{url: "http://" + ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	started := make(chan server.Info, 1)
	go func() {
		r.done <- server.Run(ctx, cfg, server.Options{
			Logger:   slog.New(slog.DiscardHandler),
			Listener: ln,
			Started:  func(i server.Info) { started <- i },
			ServiceConn: func(ctx context.Context, name string) (*nats.Conn, error) {
				return nats.Connect(ns.URL(), nats.Name(name), nats.UserInfo(name, name+"-pw"), nats.MaxReconnects(-1), nats.ErrorHandler(v.handler(name)))
			},
		})
	}()
	select {
	case info := <-started:
		r.info, r.token = info, info.AdminToken
	case err := <-r.done:
		t.Fatalf("server stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("server did not start")
	}
	defer r.stop(t)
	waitReady(t, r.url)

	if code, body := r.do(t, http.MethodPost, "/v1/resources", fmt.Sprintf(permsPipeline, reg.Repo("demo/app"), metric.URL)); code != http.StatusOK {
		t.Fatalf("apply: %d %v", code, body)
	}
	var freight string
	waitFor(t, 2*time.Minute, func() bool {
		var out struct {
			Items []model.Freight `json:"items"`
		}
		r.getJSON(t, "/v1/projects/demo/freight?warehouse=app", &out)
		if len(out.Items) > 0 {
			freight = out.Items[0].Name
		}
		return freight != ""
	}, func() string { return "freight discovered" })

	if code, body := r.postJSON(t, "/v1/projects/demo/stages/dev/promotions?dryRun=true", map[string]string{"freight": freight}); code != http.StatusOK {
		t.Fatalf("dry run: %d %s", code, body)
	}
	if code, body := r.postJSON(t, "/v1/projects/demo/stages/dev/promotions", map[string]string{"freight": freight}); code != http.StatusCreated {
		t.Fatalf("promote: %d %s", code, body)
	}
	waitFor(t, 2*time.Minute, func() bool {
		var st model.Stage
		r.getJSON(t, "/v1/projects/demo/stages/dev", &st)
		if len(st.Status.FreightHistory) == 0 || len(st.Status.FreightHistory[0].VerificationHistory) == 0 {
			return false
		}
		fc := st.Status.FreightHistory[0]
		on := false
		for _, ref := range fc.Freight {
			on = on || ref.Name == freight
		}
		return on && fc.VerificationHistory[0].Phase == model.VerificationPhaseSuccessful
	}, func() string { return "dev on " + freight + ", verified" })

	if seen := v.list(); len(seen) > 0 {
		t.Errorf("permission violations under the documented permissions:\n%s", strings.Join(seen, "\n"))
	}

	// Only caravan setup declares streams: every service's user is
	// refused creating one (the services ran above with no such right).
	admin := ns.Conn(t, nats.UserInfo("admin", "admin"))
	adminJS, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range service.Services {
		var refused violations
		nc := ns.Conn(t, nats.UserInfo(name, name+"-pw"), nats.ErrorHandler(refused.handler(name)))
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		stream := "PROBE_" + strings.ToUpper(name)
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"probe." + name}})
		cancel()
		if err == nil {
			t.Errorf("%s created stream %s", name, stream)
		}
		waitFor(t, 30*time.Second, func() bool {
			for _, s := range refused.list() {
				if strings.Contains(s, "$JS.API.STREAM.CREATE."+stream) {
					return true
				}
			}
			return false
		}, func() string { return name + ": a permissions violation for $JS.API.STREAM.CREATE." + stream })
		if _, err := adminJS.Stream(t.Context(), stream); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("%s: stream %s exists (%v)", name, stream, err)
		}
	}
}
