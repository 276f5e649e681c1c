package discovery_test

import (
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery"
)

// Without any event, discovery's reconciler discovers a Warehouse whose
// spec changed (its ResourceApplied lost) and one whose last discovery is
// older than its interval (a timer lost).
func TestReconcileWithoutEvents(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	reg := testenv.Registry(t)
	reg.PushImage(t, "team/app", "v1.0.0")
	reg.PushImage(t, "team/other", "v2.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)
	startReplica(t, srv, "r1", func(c *discovery.Config) { c.ReconcileInterval = 200 * time.Millisecond })

	w := imageWarehouse("app", model.ImageSubscription{RepoURL: reg.Repo("team/app")})
	w.Generation = 1
	gw.put(t, w) // no ResourceApplied: the scan finds it
	eventually(t, "the first freight", func() bool { return fw.count() == 1 })

	// The spec changes, its event is lost.
	w = imageWarehouse("app", model.ImageSubscription{RepoURL: reg.Repo("team/other")})
	w.Generation = 2
	gw.put(t, w)
	eventually(t, "the changed warehouse discovered", func() bool {
		return gw.status(t, "app").ObservedGeneration == 2 && fw.count() == 2
	})

	// The last discovery looks older than the interval (an hour here). A
	// discovery of the change above still running (the watch and the
	// reconciler may both have asked for one) may write its own time
	// over it after listing the tags before the push: then it is made
	// to look old again.
	reg.PushImage(t, "team/other", "v2.1.0")
	backdate := func(st model.WarehouseStatus, _ bool) (model.WarehouseStatus, error) {
		if st.LastRunAt != nil && time.Since(st.LastRunAt.Time) > time.Hour {
			return st, state.ErrNoChange
		}
		st.LastRunAt = model.NewTime(time.Now().Add(-2 * time.Hour))
		return st, nil
	}
	eventually(t, "the overdue warehouse discovered", func() bool {
		if fw.count() == 3 {
			return true
		}
		if _, _, err := state.Update(t.Context(), gw.env.Store.KV(state.Warehouses), state.Key(project, "app"), backdate); err != nil {
			t.Fatal(err)
		}
		return false
	})
	if f := gw.freight(t, fw.events()[2].Event.Freight); f.Images[0].Tag != "v2.1.0" {
		t.Fatalf("freight %+v", f.Images)
	}
}

// Two live processes cannot share a replica ID.
func TestDuplicateReplicaIDRefused(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	a := startReplica(t, srv, "same", nil)
	nc := srv.Conn(t)
	eventually(t, "the first replica claimed its ID", func() bool {
		_, err := nc.Request(lease.ClaimPrefix+".discovery.same", nil, 100*time.Millisecond)
		return err == nil
	})
	b := startReplica(t, srv, "same", nil)
	select {
	case <-b.done:
		if b.err == nil {
			t.Fatal("a duplicate replica ran")
		}
	case <-time.After(waitTimeout):
		t.Fatal("the duplicate replica did not stop")
	}
	a.stop(t)
}
