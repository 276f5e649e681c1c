//go:build e2e

package discovery_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// Two caravan-discovery processes on one NATS, one named by
// CARAVAN_REPLICA_ID, the other by its pod name (POD_NAME): SIGKILL the one
// working the Warehouse and the other takes over; no Freight is announced
// twice. A variable the replica ID replaced is refused.
func TestE2EKillReplicaProcess(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "caravan-discovery")
	build := exec.Command("go", "build", "-o", bin, "./cmd/caravan-discovery")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	srv := testenv.NATS(t)
	reg := testenv.Registry(t)
	reg.PushImage(t, "team/proc", "v1.0.0")
	gw := newGateway(t, srv)
	fw := watchFreight(t, gw.env.JS)

	env := func(extra ...string) []string {
		return append(append(os.Environ(),
			"CARAVAN_NATS_URL="+srv.URL(),
			"CARAVAN_DATA_DIR="+t.TempDir(),
			"CARAVAN_SECRET_KEY="+common(t).SecretKey,
			"CARAVAN_DISCOVERY_LEASE_TTL=1s",
			"CARAVAN_LOG_LEVEL=error",
		), extra...)
	}
	retired := exec.Command(bin)
	retired.Env = env("CARAVAN_DISCOVERY_REPLICA_ID=old")
	out, err := retired.CombinedOutput()
	if code := retired.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "CARAVAN_REPLICA_ID") {
		t.Fatalf("CARAVAN_DISCOVERY_REPLICA_ID: exit %d (%v), want 2 naming CARAVAN_REPLICA_ID:\n%s", code, err, out)
	}

	procs := map[string]*exec.Cmd{}
	for id, naming := range map[string]string{"p1": "CARAVAN_REPLICA_ID=p1", "p2": "POD_NAME=p2"} {
		cmd := exec.Command(bin)
		cmd.Env = env("POD_NAME=", naming)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[id] = cmd
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	nc := srv.Conn(t)
	for id := range procs {
		eventually(t, "replica "+id+" claimed its ID", func() bool {
			_, err := nc.Request(lease.ClaimPrefix+".discovery."+id, nil, 200*time.Millisecond)
			return err == nil
		})
	}
	gw.apply(t, imageWarehouse("proc", model.ImageSubscription{RepoURL: reg.Repo("team/proc")}))
	eventually(t, "the first freight", func() bool { return fw.count() == 1 })

	leases := lease.NewRing(gw.env.Store.KV(state.DiscoveryLeases), "observer", 0)
	holder, err := leases.Current(t.Context(), state.Key(project, "proc"))
	if err != nil || procs[holder] == nil {
		t.Fatalf("holder %q, %v", holder, err)
	}
	if err := procs[holder].Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = procs[holder].Wait()
	reg.PushImage(t, "team/proc", "v1.1.0")
	gw.refresh(t, "proc", nil)
	eventually(t, "freight after the takeover", func() bool { return fw.count() == 2 })
	if now, _ := leases.Current(t.Context(), state.Key(project, "proc")); now == holder || now == "" {
		t.Fatalf("lease held by %q after killing %q", now, holder)
	}
	assertUnique(t, fw.events())
}
