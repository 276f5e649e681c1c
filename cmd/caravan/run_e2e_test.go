//go:build e2e

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// listeningPorts are the TCP ports process pid listens on (Linux: its
// socket inodes in /proc/<pid>/fd against /proc/<pid>/net/tcp{,6}).
func listeningPorts(t *testing.T, pid int) map[string]bool {
	t.Helper()
	proc := fmt.Sprintf("/proc/%d", pid)
	owned := map[string]bool{}
	fds, err := os.ReadDir(proc + "/fd")
	if err != nil {
		t.Fatalf("list the server's sockets: %v", err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(filepath.Join(proc, "fd", fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
			owned[strings.TrimSuffix(inode, "]")] = true
		}
	}
	ports := map[string]bool{}
	for _, table := range []string{"/net/tcp", "/net/tcp6"} {
		b, err := os.ReadFile(proc + table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			// sl local_address rem_address st … inode; state 0A is LISTEN.
			if len(f) > 9 && f[3] == "0A" && owned[f[9]] {
				_, hex, _ := strings.Cut(f[1], ":")
				var port int
				_, _ = fmt.Sscanf(hex, "%X", &port)
				ports[fmt.Sprint(port)] = true
			}
		}
	}
	if len(ports) == 0 {
		t.Fatal("found no listening port, not even the API's: the /proc reading is broken")
	}
	return ports
}

// caravanBin is the caravan binary the tests of this package share: built
// once, as `make run` builds it, and removed by TestMain.
var caravanBin struct {
	once sync.Once
	dir  string
	bin  string
	out  []byte
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if caravanBin.dir != "" {
		_ = os.RemoveAll(caravanBin.dir)
	}
	os.Exit(code)
}

// buildCaravan builds the caravan binary as `make run` does, once for the
// whole package.
func buildCaravan(t testing.TB) (bin, repoRoot string) {
	t.Helper()
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	caravanBin.once.Do(func() {
		if caravanBin.dir, caravanBin.err = os.MkdirTemp("", "caravan-e2e-bin-"); caravanBin.err != nil {
			return
		}
		caravanBin.bin = filepath.Join(caravanBin.dir, "caravan")
		build := exec.Command("go", "build", "-o", caravanBin.bin, "./cmd/caravan")
		build.Dir = repoRoot
		caravanBin.out, caravanBin.err = build.CombinedOutput()
	})
	if caravanBin.err != nil {
		t.Fatalf("go build: %v\n%s", caravanBin.err, caravanBin.out)
	}
	return caravanBin.bin, repoRoot
}

// demoServer is `caravan server` with the demo, run as a process the way
// `make run` runs it, on free ports, in a working directory of its own.
type demoServer struct {
	t    *testing.T
	bin  string
	work string
	api  string
	// addrs are the API's and the demo registry's and git server's
	// listen addresses.
	addrs []string
	logs  testenv.SyncBuffer
	cmd   *exec.Cmd
	done  chan error
	// exited is set once the process was waited for.
	exited bool
}

func startDemo(t *testing.T, bin, repoRoot string, env ...string) *demoServer {
	t.Helper()
	s := &demoServer{t: t, bin: bin, work: t.TempDir(), done: make(chan error, 1)}
	httpAddr := freePort(t)
	s.api = "http://" + httpAddr
	s.cmd = exec.Command(bin, "server")
	s.cmd.Dir = s.work
	s.addrs = []string{httpAddr, freePort(t), freePort(t)}
	s.cmd.Env = append(append(os.Environ(),
		"CARAVAN_DEMO=true",
		"CARAVAN_DEMO_DIR="+filepath.Join(repoRoot, "examples", "demo"),
		"CARAVAN_DEMO_REGISTRY_ADDR="+s.addrs[1],
		"CARAVAN_DEMO_GIT_ADDR="+s.addrs[2],
		"CARAVAN_HTTP_ADDR="+httpAddr,
	), env...)
	s.cmd.Stdout, s.cmd.Stderr = &s.logs, &s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if !s.exited {
			_ = s.cmd.Process.Kill()
			if err := <-s.done; err != nil {
				t.Logf("server killed: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.logs.String())
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(s.api + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 2 min: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The guide tells the newcomer what to do next.
	for !strings.Contains(s.logs.String(), "bin/caravan get freight -p demo") {
		if time.Now().After(deadline) {
			t.Fatal("no guide in the log")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return s
}

// command is the CLI, as the README has it: the local admin token is
// found in the working directory's ./.caravan (or CARAVAN_DATA_DIR) by
// itself.
func (s *demoServer) command(args ...string) *exec.Cmd {
	return s.commandContext(context.Background(), args...)
}

func (s *demoServer) commandContext(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Dir = s.work
	cmd.Env = append(os.Environ(), "CARAVAN_SERVER="+s.api, "CARAVAN_CONFIG="+filepath.Join(s.work, "config.yaml"))
	if dd := s.dataDir(); dd != "" {
		cmd.Env = append(cmd.Env, "CARAVAN_DATA_DIR="+dd)
	}
	return cmd
}

func (s *demoServer) dataDir() string {
	for _, kv := range s.cmd.Env {
		if v, ok := strings.CutPrefix(kv, "CARAVAN_DATA_DIR="); ok {
			return v
		}
	}
	return ""
}

func (s *demoServer) cli(args ...string) (string, error) {
	cmd := s.command(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("caravan %s: %w: %s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// freight lists the project's freight.
func (s *demoServer) freight(project string) []model.Freight {
	s.t.Helper()
	out, err := s.cli("get", "freight", "-p", project, "-o", "json")
	if err != nil {
		s.t.Fatal(err)
	}
	var list struct {
		Items []model.Freight `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		s.t.Fatal(err)
	}
	return list.Items
}

// waitVerified waits until freight is verified in every stage given.
func (s *demoServer) waitVerified(project string, stages ...string) model.Freight {
	s.t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		for _, f := range s.freight(project) {
			all := true
			for _, st := range stages {
				all = all && f.IsVerifiedIn(st)
			}
			if all {
				return f
			}
		}
		if time.Now().After(deadline) {
			stagesTable, _ := s.cli("get", "stages", "-p", project, "-o", "wide")
			promos, _ := s.cli("get", "promotions", "-p", project, "-o", "wide")
			whs, _ := s.cli("get", "warehouses", "-p", project, "-o", "wide")
			s.t.Fatalf("no freight of %s verified in %v within 4 min:\n%s\n%s\n%s", project, stages, whs, stagesTable, promos)
		}
		time.Sleep(time.Second)
	}
}

// interrupt stops the server as Ctrl-C does and returns how it exited.
func (s *demoServer) interrupt() error {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil {
		s.t.Fatal(err)
	}
	select {
	case err := <-s.done:
		s.exited = true
		return err
	case <-time.After(2 * time.Minute):
		s.t.Fatal("the server did not stop within 2 min of SIGINT")
	}
	return nil
}

// TestMakeRunE2E starts `caravan server` the way `make run` does (the
// binary built with go build, CARAVAN_DEMO=true, data in the relative
// ./.caravan), waits for readiness, watches the demo's freight get
// discovered and dev promoted and verified, and stops the server with
// SIGINT while a watch is open: it exits 0 and the watch is told.
func TestMakeRunE2E(t *testing.T) {
	bin, repoRoot := buildCaravan(t)
	s := startDemo(t, bin, repoRoot, "CARAVAN_DEMO_PUSH_INTERVAL=10s")

	out, err := s.cli("get", "stages", "-p", "demo")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{"dev", "staging", "prod"} {
		if !strings.Contains(out, "\n"+st+" ") {
			t.Errorf("get stages lacks %s:\n%s", st, out)
		}
	}
	// The embedded NATS server has no TCP listener by default: the server
	// listens on the API's port and the demo's two, nothing else.
	want := map[string]bool{}
	for _, a := range s.addrs {
		_, port, _ := net.SplitHostPort(a)
		want[port] = true
	}
	for port := range listeningPorts(t, s.cmd.Process.Pid) {
		if !want[port] {
			t.Errorf("caravan server listens on port %s besides the API and the demo (%v)", port, want)
		}
	}

	// The smoke test (a web metric on the demo application, on loopback)
	// passes under the egress policy: the demo opened its own addresses.
	f := s.waitVerified("demo", "dev")
	t.Logf("freight %s (%s) is verified in dev", f.Alias, f.Name)
	if !strings.Contains(s.logs.String(), "demo: its servers are added to the egress allow list") {
		t.Error("the log does not say the demo opened its addresses in the egress policy")
	}

	// Ctrl-C with a watch open: the server closes the stream and exits 0.
	watch := s.command("watch", "-p", "demo")
	var watchErr testenv.SyncBuffer
	watch.Stderr = &watchErr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
	for !strings.Contains(watchErr.String(), "Watching the events of project demo") {
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.interrupt(); err != nil {
		t.Errorf("server exited with %v after SIGINT", err)
	}
	if !strings.Contains(s.logs.String(), "caravan stopped") {
		t.Errorf("no clean stop in the log")
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(watchErr.String(), "the server is shutting down") {
		if time.Now().After(deadline) {
			t.Fatalf("the watch was not told of the shutdown:\n%s", watchErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestExamplesE2E runs every example of examples/ offline against the
// demo with one command each (`caravan demo example NAME`), as its README
// says, to a verified stage; the fan-out example also fans in to prod.
func TestExamplesE2E(t *testing.T) {
	bin, repoRoot := buildCaravan(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	s := startDemo(t, bin, repoRoot, "CARAVAN_DEMO_PUSH_INTERVAL=0", "CARAVAN_DATA_DIR="+dataDir)
	examples := []struct {
		name, project string
		verified      []string
	}{
		{"kustomize", "kustomize-example", []string{"dev"}},
		{"helm", "helm-example", []string{"test-1"}},
		{"fan-out", "fan-out-example", []string{"test", "uat-eu", "uat-us"}},
	}
	for _, ex := range examples {
		out, err := s.cli("demo", "example", ex.name, "--examples", filepath.Join(repoRoot, "examples"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "project/"+ex.project+" created") {
			t.Errorf("demo example %s:\n%s", ex.name, out)
		}
	}
	for _, ex := range examples {
		f := s.waitVerified(ex.project, ex.verified...)
		t.Logf("%s: freight %s verified in %v", ex.name, f.Alias, ex.verified)
	}
	// Fan-in: prod takes freight verified in both UAT stages.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := s.commandContext(ctx, "promote", "-p", "fan-out-example", "--stage", "prod", "--warehouse", "api", "--wait").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "succeeded") {
		t.Errorf("promote prod: %v\n%s", err, out)
	}
}
