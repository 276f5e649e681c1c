//go:build e2e

package discovery_test

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// Two caravan-discovery processes on one NATS, one named by
// CARAVAN_REPLICA_ID, the other by its pod name (POD_NAME): SIGKILL the one
// working the Warehouse and the other takes over; no Freight is announced
// twice. A variable the replica ID replaced is refused. Each answers
// /readyz on its admin listener: ready while it runs, not ready naming a
// durable consumer deleted under it.
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
	admin := map[string]string{}
	for id, naming := range map[string]string{"p1": "CARAVAN_REPLICA_ID=p1", "p2": "POD_NAME=p2"} {
		admin[id] = freeAddr(t)
		cmd := exec.Command(bin)
		cmd.Env = env("POD_NAME=", naming, "CARAVAN_ADMIN_ADDR="+admin[id])
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
	for id := range procs {
		eventually(t, "replica "+id+" ready", func() bool {
			code, _ := readyz(admin[id])
			return code == http.StatusOK
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

	// A consumer deleted under the survivor: not ready, and it says which.
	survivor := "p1"
	if holder == "p1" {
		survivor = "p2"
	}
	if err := gw.env.JS.DeleteConsumer(t.Context(), events.StreamEvents, events.DiscoveryRefresh.Durable); err != nil {
		t.Fatal(err)
	}
	eventually(t, "not ready, naming the consumer", func() bool {
		code, body := readyz(admin[survivor])
		return code == http.StatusServiceUnavailable && strings.Contains(body, "consumer "+events.DiscoveryRefresh.Durable)
	})
}

// freeAddr is a loopback address nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// readyz asks an admin listener.
func readyz(addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
