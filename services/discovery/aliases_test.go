package discovery

import (
	"testing"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/telemetry"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// provision declares the streams and buckets on srv and returns the
// discovery service's Env.
func provision(t *testing.T, srv *testenv.Server) *service.Env {
	t.Helper()
	env, err := service.Provision(t.Context(), srv.Conn(t), "discovery", service.Common{
		DataDir: t.TempDir(), StreamConfig: events.DefaultStreamConfig(), LogConfig: telemetry.LogConfig{Level: "info", Format: "text"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestAliasIndex: the aliases in use are per project, show every write
// made before the question (puts, alias changes and deletes), and still
// do after the NATS server restarts: the index's watch is started again
// (before, it ended for good, and an index that had not loaded yet took
// every alias for free).
func TestAliasIndex(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	srv := testenv.NATS(t)
	env := provision(t, srv)
	kv := env.Store.KV(state.Freight)
	put := func(project, name, alias string) {
		t.Helper()
		f := model.Freight{Alias: alias}
		f.Name, f.Namespace = name, project
		if _, err := state.Put(ctx, kv, state.Key(project, name), f); err != nil {
			t.Fatal(err)
		}
	}
	put("demo", "f1", "brave-otter")
	x := newAliasIndex(kv)
	go x.Run(ctx)
	d := &discoverer{store: env.Store, aliasIdx: x}
	check := func(when string, want map[string]bool) {
		t.Helper()
		// While the index reloads, taken refuses (and aliasTaken reads
		// KV): ask again.
		var taken func(string) bool
		testenv.Eventually(t, when, func() (err error) {
			taken, err = x.taken(ctx, "demo")
			return err
		})
		viaKV, err := d.aliases(ctx, "demo")
		if err != nil {
			t.Fatal(err)
		}
		for alias, w := range want {
			if taken(alias) != w || viaKV[alias] != w {
				t.Errorf("%s: %s taken = %v (KV: %v), want %v", when, alias, taken(alias), viaKV[alias], w)
			}
		}
	}
	check("loaded", map[string]bool{"brave-otter": true, "calm-heron": false})
	put("demo", "f2", "calm-heron")
	put("other", "f3", "eager-lynx")
	check("after puts", map[string]bool{"brave-otter": true, "calm-heron": true, "eager-lynx": false})
	put("demo", "f1", "dry-wolf")
	if err := state.Delete(ctx, kv, state.Key("demo", "f2"), 0); err != nil {
		t.Fatal(err)
	}
	check("after change and delete", map[string]bool{"brave-otter": false, "calm-heron": false, "dry-wolf": true})
	srv.Restart(t)
	put("demo", "f4", "fair-crane")
	check("after restart", map[string]bool{"dry-wolf": true, "fair-crane": true})
}
