package discovery_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery"
)

func errorsIsNotFound(err error) bool { return errors.Is(err, state.ErrNotFound) }

func TestImageWarehouseMakesFreight(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	reg := testenv.Registry(t)
	reg.PushImage(t, "team/app", "v1.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	startReplica(t, srv, "r1", nil)

	gw.apply(t, imageWarehouse("app", model.ImageSubscription{RepoURL: reg.Repo("team/app")}))
	eventually(t, "the first freight", func() bool { return fw.count() == 1 })
	first := fw.events()[0]
	eventually(t, "the announced mark", func() bool {
		return gw.freight(t, first.Event.Freight).Annotations[discovery.AnnouncedAnnotation] != ""
	})
	f := gw.freight(t, first.Event.Freight)
	if f.Images[0].Tag != "v1.0.0" || f.Alias == "" || f.Alias != first.Event.Alias || f.Labels[model.LabelAlias] != f.Alias {
		t.Fatalf("freight %+v, event %+v", f, first.Event)
	}
	if first.ID != discovery.EventID(project, f.Name) || f.Annotations[discovery.AnnouncedAnnotation] == "" {
		t.Fatalf("event id %s, annotations %v", first.ID, f.Annotations)
	}
	st := gw.status(t, "app")
	if st.LastFreightID != f.Name || st.DiscoveredArtifacts == nil || len(st.DiscoveredArtifacts.Images[0].References) != 1 || !ready(st) {
		t.Fatalf("status %+v", st)
	}

	// A refresh that finds nothing new makes no freight.
	rev := gw.statusRev(t, "app")
	gw.refresh(t, "app", nil)
	eventually(t, "the refresh", func() bool { return gw.statusRev(t, "app") > rev })
	if n := fw.count(); n != 1 {
		t.Fatalf("%d FreightDiscovered events after an idle refresh, want 1", n)
	}

	// A new tag makes new freight.
	reg.PushImage(t, "team/app", "v1.1.0")
	gw.refresh(t, "app", nil)
	eventually(t, "the second freight", func() bool { return fw.count() == 2 })
	second := gw.freight(t, fw.events()[1].Event.Freight)
	if second.Images[0].Tag != "v1.1.0" || second.Alias == f.Alias {
		t.Fatalf("second freight %+v", second)
	}
}

func ready(st model.WarehouseStatus) bool {
	for _, c := range st.Conditions {
		if c.Type == discovery.ConditionReady {
			return c.Status == model.ConditionTrue
		}
	}
	return false
}

func condition(st model.WarehouseStatus) model.Condition {
	for _, c := range st.Conditions {
		if c.Type == discovery.ConditionReady {
			return c
		}
	}
	return model.Condition{}
}

// A hint with tag and digest reaches FreightDiscovered without any
// registry request; without the digest, with one HEAD.
func TestHintedRefresh(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	reg := testenv.Registry(t)
	reg.PushImage(t, "team/hinted", "v1.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	startReplica(t, srv, "r1", nil)
	// Stored without an event, so only the scan starts it: no second full
	// discovery runs beside the hints.
	gw.put(t, imageWarehouse("hinted", model.ImageSubscription{RepoURL: reg.Repo("team/hinted")}))
	eventually(t, "the first freight", func() bool { return fw.count() == 1 })

	d := reg.PushImage(t, "team/hinted", "v1.1.0")
	reg.ResetRequests()
	gw.refresh(t, "hinted", &events.ArtifactHint{RepoURL: reg.Repo("team/hinted"), Tag: "v1.1.0", Digest: d.String()})
	eventually(t, "the hinted freight", func() bool { return fw.count() == 2 })
	if reqs := reg.Requests(); len(reqs) != 0 {
		t.Fatalf("hint with digest: %d registry requests %v, want 0", len(reqs), reqs)
	}

	reg.PushImage(t, "team/hinted", "v1.2.0")
	reg.ResetRequests()
	gw.refresh(t, "hinted", &events.ArtifactHint{RepoURL: reg.Repo("team/hinted"), Tag: "v1.2.0"})
	eventually(t, "the third freight", func() bool { return fw.count() == 3 })
	if reqs := reg.Requests(); len(reqs) > 2 {
		t.Fatalf("hint without digest: %d registry requests %v, want at most 2", len(reqs), reqs)
	}
	st := gw.status(t, "hinted")
	if got := st.DiscoveredArtifacts.Images[0].References; len(got) != 3 || got[0].Tag != "v1.2.0" {
		t.Fatalf("discovered %+v", got)
	}
	// A hint the filters reject changes nothing and costs nothing.
	reg.ResetRequests()
	rev := gw.statusRev(t, "hinted")
	gw.refresh(t, "hinted", &events.ArtifactHint{RepoURL: reg.Repo("team/hinted"), Tag: "latest"})
	gw.refresh(t, "hinted", nil)
	eventually(t, "the full refresh", func() bool { return gw.statusRev(t, "hinted") > rev })
	if n := fw.count(); n != 3 {
		t.Fatalf("%d events, want 3", n)
	}
}

// A broken subscription shows as a readable condition; other Warehouses
// keep working.
func TestRegistryErrorsShowInStatus(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	reg := testenv.Registry(t)
	reg.PushImage(t, "team/ok", "v1.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	startReplica(t, srv, "r1", nil)
	gw.apply(t, imageWarehouse("broken", model.ImageSubscription{RepoURL: reg.Repo("team/missing")}))
	gw.apply(t, imageWarehouse("fine", model.ImageSubscription{RepoURL: reg.Repo("team/ok")}))
	eventually(t, "the broken condition", func() bool { return condition(gw.status(t, "broken")).Status == model.ConditionFalse })
	if c := condition(gw.status(t, "broken")); !strings.Contains(c.Message, "not found") || c.Reason != discovery.ReasonDiscoveryFailed {
		t.Fatalf("condition %+v", c)
	}
	eventually(t, "freight of the fine warehouse", func() bool { return fw.count() == 1 })
	// A password written in a URL stored before the URL policy refused it
	// is refused before any request, and the status does not show it.
	pw := imageWarehouse("password", model.ImageSubscription{RepoURL: reg.Repo("team/ok")})
	pw.Spec.Subscriptions = append(pw.Spec.Subscriptions, model.RepoSubscription{Git: &model.GitSubscription{RepoURL: "https://bot:s3cret-tok@git.example.com/app.git"}})
	gw.apply(t, pw)
	eventually(t, "the password's condition", func() bool { return condition(gw.status(t, "password")).Status == model.ConditionFalse })
	if c := condition(gw.status(t, "password")); !strings.Contains(c.Message, "spec.subscriptions[1].git.repoURL") || !strings.Contains(c.Message, "https://bot:***@git.example.com/app.git holds a password") ||
		strings.Contains(c.Message, "s3cret") {
		t.Fatalf("condition %+v", c)
	}
	// The broken warehouse is retried with backoff and recovers once the
	// image exists.
	reg.PushImage(t, "team/missing", "v0.1.0")
	eventually(t, "recovery", func() bool { return ready(gw.status(t, "broken")) })
	eventually(t, "freight of the recovered warehouse", func() bool { return fw.count() == 2 })
}

// Two Warehouses subscribed to the same image each get their own Freight,
// two replicas never announce one twice, and when one replica dies the
// other takes its Warehouses over.
func TestTwoReplicas(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	reg := testenv.Registry(t)
	reg.PushImage(t, "team/shared", "v1.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	a := startReplica(t, srv, "a", nil)
	b := startReplica(t, srv, "b", nil)
	// Rendezvous hashing gives these two names one replica each.
	if lease.Rendezvous([]string{"a", "b"}, state.Key(project, "one")) == lease.Rendezvous([]string{"a", "b"}, state.Key(project, "alpha")) {
		t.Fatal("pick Warehouse names that hash to different replicas")
	}
	sub := model.ImageSubscription{RepoURL: reg.Repo("team/shared")}
	gw.apply(t, imageWarehouse("one", sub))
	gw.apply(t, imageWarehouse("alpha", sub))
	eventually(t, "freight of both", func() bool { return fw.count() == 2 })
	evs := fw.events()
	if evs[0].Event.Freight == evs[1].Event.Freight {
		t.Fatalf("both warehouses made freight %s", evs[0].Event.Freight)
	}
	// The replicas share the Warehouses out.
	leases := lease.NewRing(gw.env.Store.KV(state.DiscoveryLeases), "observer", 0)
	holders := func() (string, string) {
		h1, _ := leases.Current(t.Context(), state.Key(project, "one"))
		h2, _ := leases.Current(t.Context(), state.Key(project, "alpha"))
		return h1, h2
	}
	eventually(t, "one Warehouse each", func() bool {
		h1, h2 := holders()
		return h1 != "" && h2 != "" && h1 != h2
	})
	// Refreshes land on either replica; each new freight is announced once.
	reg.PushImage(t, "team/shared", "v1.1.0")
	for range 5 {
		gw.refresh(t, "one", nil)
		gw.refresh(t, "alpha", nil)
	}
	eventually(t, "freight of v1.1.0", func() bool { return fw.count() == 4 })
	assertUnique(t, fw.events())

	// Kill a (it cannot release its leases); b takes over after the TTL.
	start := time.Now()
	a.kill(t)
	t.Logf("killed in %s", time.Since(start))
	reg.PushImage(t, "team/shared", "v1.2.0")
	for _, w := range []string{"one", "alpha"} {
		gw.refresh(t, w, nil)
	}
	eventually(t, "freight of v1.2.0 after the takeover", func() bool { return fw.count() == 6 })
	t.Logf("took over after %s", time.Since(start))
	if h1, h2 := holders(); h1 != "b" || h2 != "b" {
		t.Fatalf("holders %q and %q, want b for both", h1, h2)
	}
	assertUnique(t, fw.events())
	b.stop(t)
}

// A replica joining takes its share of the Warehouses over without
// discovering them again: their last discovery is recent.
func TestHandoverKeepsRecentDiscovery(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	reg := testenv.Registry(t)
	reg.PushImage(t, "team/app", "v1.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	a := startReplica(t, srv, "a", nil)
	// With b live, "alpha" is b's.
	if lease.Rendezvous([]string{"a", "b"}, state.Key(project, "alpha")) != "b" {
		t.Fatal("pick a Warehouse name that hashes to b")
	}
	gw.apply(t, imageWarehouse("alpha", model.ImageSubscription{RepoURL: reg.Repo("team/app")}))
	eventually(t, "the first freight", func() bool { return fw.count() == 1 })
	before := gw.statusRev(t, "alpha")
	leases := lease.NewRing(gw.env.Store.KV(state.DiscoveryLeases), "observer", 0)
	if h, _ := leases.Current(t.Context(), state.Key(project, "alpha")); h != "a" {
		t.Fatalf("holder %q, want a", h)
	}
	startReplica(t, srv, "b", nil)
	eventually(t, "b holds alpha", func() bool {
		h, _ := leases.Current(t.Context(), state.Key(project, "alpha"))
		return h == "b"
	})
	// b's worker runs; a rediscovery would write the status at once.
	time.Sleep(time.Second)
	if after := gw.statusRev(t, "alpha"); after != before {
		t.Fatalf("status rewritten after the handover (revision %d → %d): discovered again", before, after)
	}
	// b works it: a refresh reaches it and is discovered.
	reg.PushImage(t, "team/app", "v1.1.0")
	gw.refresh(t, "alpha", nil)
	eventually(t, "freight of v1.1.0", func() bool { return fw.count() == 2 })
	assertUnique(t, fw.events())
	a.stop(t)
}

func assertUnique(t *testing.T, evs []discoveredEvent) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.Event.Freight] {
			t.Fatalf("freight %s announced twice: %+v", e.Event.Freight, evs)
		}
		seen[e.Event.Freight] = true
	}
}

// Manual creation discovers artifacts but makes no freight; criteria
// block freight whose artifacts do not fit together.
func TestCreationPolicyAndCriteria(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	reg := testenv.Registry(t)
	reg.PushImage(t, "team/front", "v1.0.0")
	reg.PushImage(t, "team/back", "v1.0.0")
	reg.PushImage(t, "team/back", "v1.1.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	startReplica(t, srv, "r1", nil)
	front, back := reg.Repo("team/front"), reg.Repo("team/back")

	manual := imageWarehouse("manual", model.ImageSubscription{RepoURL: front})
	manual.Spec.FreightCreationPolicy = model.FreightCreationPolicyManual
	gw.apply(t, manual)
	criteria := imageWarehouse("matched", model.ImageSubscription{RepoURL: front}, model.ImageSubscription{RepoURL: back})
	criteria.Spec.FreightCreationCriteria = &model.FreightCreationCriteria{Expression: "imageFrom('" + front + "').Tag == imageFrom('" + back + "').Tag"}
	gw.apply(t, criteria)
	eventually(t, "both discovered", func() bool {
		return gw.status(t, "manual").DiscoveredArtifacts != nil && gw.status(t, "matched").DiscoveredArtifacts != nil
	})
	if n := fw.count(); n != 0 {
		t.Fatalf("%d freight, want none (manual; back-end ahead of front-end)", n)
	}
	reg.PushImage(t, "team/front", "v1.1.0")
	gw.refresh(t, "matched", nil)
	eventually(t, "matching freight", func() bool { return fw.count() == 1 })
	f := gw.freight(t, fw.events()[0].Event.Freight)
	if f.Images[0].Tag != "v1.1.0" || f.Images[1].Tag != "v1.1.0" || f.Origin.Name != "matched" {
		t.Fatalf("freight %+v", f)
	}
}

// Credentials come from project Secrets labelled cred-type image.
func TestImageCredentialsFromSecret(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	host := pushPrivate(t, "bot", "s3cret", "private/app", "v1.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	startReplica(t, srv, "r1", nil)
	gw.apply(t, imageWarehouse("private", model.ImageSubscription{RepoURL: host + "/private/app"}))
	eventually(t, "the 401 condition", func() bool { return strings.Contains(condition(gw.status(t, "private")).Message, "401") })
	gw.apply(t, &model.Secret{
		TypeMeta:   model.TypeMeta{Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "registry", Labels: map[string]string{model.LabelCredType: model.CredTypeImage}},
		StringData: map[string]string{"repoURL": `^127\.0\.0\.1:\d+/private/.*$`, "repoURLIsRegex": "true", "username": "bot", "password": "s3cret"},
	})
	gw.refresh(t, "private", nil)
	eventually(t, "freight with credentials", func() bool { return fw.count() == 1 })
}

// A Warehouse with a Git and a chart subscription: credentials from a
// cred-type git Secret, a commit hint refreshes the Git subscription.
func TestGitAndChartWarehouse(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	g := testenv.GitServer(t, testenv.WithBasicAuth("bot", "pw"))
	url := g.CreateRepo(t, "config")
	g.Seed(t, "config", map[string]string{"env/values.yaml": "1"}, "first")
	reg := testenv.Registry(t)
	reg.PushImage(t, "charts/app", "1.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	startReplica(t, srv, "r1", nil)

	w := &model.Warehouse{TypeMeta: model.TypeMeta{Kind: model.KindWarehouse}, ObjectMeta: model.ObjectMeta{Name: "gitops"}}
	w.Spec.Subscriptions = []model.RepoSubscription{
		{Git: &model.GitSubscription{RepoURL: url, Branch: "main", IncludePaths: []string{"env"}}},
		{Chart: &model.ChartSubscription{RepoURL: "oci://" + reg.Repo("charts/app")}},
	}
	gw.apply(t, w)
	eventually(t, "the 401 condition", func() bool { return strings.Contains(condition(gw.status(t, "gitops")).Message, "401") })
	gw.apply(t, &model.Secret{
		TypeMeta:   model.TypeMeta{Kind: model.KindSecret},
		ObjectMeta: model.ObjectMeta{Name: "git", Labels: map[string]string{model.LabelCredType: model.CredTypeGit}},
		StringData: map[string]string{"repoURL": url, "username": "bot", "password": "pw"},
	})
	gw.refresh(t, "gitops", nil)
	eventually(t, "the first freight", func() bool { return fw.count() == 1 })
	f := gw.freight(t, fw.events()[0].Event.Freight)
	if len(f.Commits) != 1 || f.Commits[0].Branch != "main" || len(f.Charts) != 1 || f.Charts[0].Version != "1.0.0" {
		t.Fatalf("freight %+v", f)
	}
	// A commit outside includePaths makes no freight; one inside does.
	g.Seed(t, "config", map[string]string{"README.md": "x"}, "docs")
	head := g.Seed(t, "config", map[string]string{"env/values.yaml": "2"}, "second")
	gw.refresh(t, "gitops", &events.ArtifactHint{RepoURL: url, Commit: head})
	eventually(t, "the hinted freight", func() bool { return fw.count() == 2 })
	if f := gw.freight(t, fw.events()[1].Event.Freight); f.Commits[0].ID != head {
		t.Fatalf("freight commit %s, want %s", f.Commits[0].ID, head)
	}
}

// Without any event, a Warehouse is discovered again every interval (never
// below the configured floor).
func TestIntervalDiscovery(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	reg := testenv.Registry(t)
	reg.PushImage(t, "team/polled", "v1.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	startReplica(t, srv, "r1", func(c *discovery.Config) { c.MinInterval = 200 * time.Millisecond })
	w := imageWarehouse("polled", model.ImageSubscription{RepoURL: reg.Repo("team/polled")})
	w.Spec.Interval = model.Duration{Duration: 50 * time.Millisecond} // raised to the 200ms floor
	gw.put(t, w)
	eventually(t, "the first freight", func() bool { return fw.count() == 1 })
	reg.PushImage(t, "team/polled", "v1.1.0")
	eventually(t, "freight found by polling", func() bool { return fw.count() == 2 })
}

func TestConfigFrom(t *testing.T) {
	t.Setenv("CARAVAN_REGISTRY_RPS", "7")
	t.Setenv("CARAVAN_DISCOVERY_MIN_INTERVAL", "45s")
	c := common(t)
	cfg, err := discovery.ConfigFrom(c)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RegistryRPS != 7 || cfg.MinInterval != 45*time.Second || cfg.LeaseTTL != 6*time.Second || cfg.DataDir != c.DataDir {
		t.Fatalf("config %+v", cfg)
	}
	t.Setenv("CARAVAN_DISCOVERY_LEASE_TTL", "1ms")
	if _, err := discovery.ConfigFrom(c); err == nil {
		t.Fatal("a 1ms lease TTL passed validation")
	}
}
