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
)

// syncBuffer is a bytes.Buffer safe for the process writing and the test
// reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

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

// TestMakeRunE2E starts `caravan server` the way `make run` does (the
// binary built with go build, CARAVAN_DEMO=true), waits for readiness,
// watches the demo's freight get discovered and dev promoted, and stops
// the server with SIGINT.
func TestMakeRunE2E(t *testing.T) {
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "caravan")
	build := exec.Command("go", "build", "-o", bin, "./cmd/caravan")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// A working directory of its own, so ./.caravan is the test's; free
	// ports, so a developer's `make run` does not collide.
	work := t.TempDir()
	httpAddr := freePort(t)
	apiURL := "http://" + httpAddr
	registryAddr, gitAddr := freePort(t), freePort(t)
	env := append(os.Environ(),
		"CARAVAN_DEMO=true",
		"CARAVAN_DEMO_DIR="+filepath.Join(repoRoot, "examples", "demo"),
		"CARAVAN_DEMO_PUSH_INTERVAL=10s",
		"CARAVAN_DEMO_REGISTRY_ADDR="+registryAddr,
		"CARAVAN_DEMO_GIT_ADDR="+gitAddr,
		"CARAVAN_HTTP_ADDR="+httpAddr,
	)
	var logs syncBuffer
	srv := exec.Command(bin, "server")
	srv.Dir, srv.Env, srv.Stdout, srv.Stderr = work, env, &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	exited := false
	defer func() {
		if !exited {
			_ = srv.Process.Kill()
			if err := <-done; err != nil {
				t.Logf("server killed: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	}()

	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(apiURL + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 60 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Under the defaults the process listens on the API and the demo's two
	// servers, and nowhere else: no NATS listener for a local process to
	// read the streams or write a token record through.
	want := map[string]bool{}
	for _, a := range []string{httpAddr, registryAddr, gitAddr} {
		_, port, _ := net.SplitHostPort(a)
		want[port] = true
	}
	for port := range listeningPorts(t, srv.Process.Pid) {
		if !want[port] {
			t.Errorf("caravan server listens on port %s besides the API and the demo (%v)", port, want)
		}
	}

	// The guide tells the newcomer what to do next.
	for !strings.Contains(logs.String(), "bin/caravan get freight -p demo") {
		if time.Now().After(deadline) {
			t.Fatal("no guide in the log")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The CLI, as the README has it: the local admin token is found in
	// ./.caravan by itself.
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "CARAVAN_SERVER="+apiURL, "CARAVAN_CONFIG="+filepath.Join(work, "config.yaml"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil {
			return stdout.String(), fmt.Errorf("caravan %s: %w: %s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String(), nil
	}
	out, err := cli("get", "stages", "-p", "demo")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"dev", "staging", "prod"} {
		if !strings.Contains(out, "\n"+s+" ") {
			t.Errorf("get stages lacks %s:\n%s", s, out)
		}
	}

	t.Run("freight moves", func(t *testing.T) {
		var freight []model.Freight
		deadline := time.Now().Add(60 * time.Second)
		lastMessage := ""
		for {
			out, err := cli("get", "freight", "-p", "demo", "-o", "json")
			if err != nil {
				t.Fatal(err)
			}
			var list struct {
				Items []model.Freight `json:"items"`
			}
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				t.Fatal(err)
			}
			freight = list.Items
			for _, f := range freight {
				if f.IsCurrentlyIn("dev") {
					t.Logf("freight %s (%s) is in dev", f.Alias, f.Name)
					return
				}
			}
			out, err = cli("get", "promotions", "-p", "demo", "--stage", "dev", "-o", "json")
			if err == nil {
				var ps struct {
					Items []model.Promotion `json:"items"`
				}
				if json.Unmarshal([]byte(out), &ps) == nil {
					for _, p := range ps.Items {
						if p.Status.Message != "" {
							lastMessage = fmt.Sprintf("%s %s: %s", p.Name, p.Status.Phase, p.Status.Message)
						}
					}
				}
			}
			if strings.Contains(lastMessage, "no step engine") || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Second)
		}
		if len(freight) == 0 {
			t.Skip("discovery reported no freight within 60 s: the discovery service does not discover the demo image yet")
		}
		if strings.Contains(lastMessage, "no step engine") {
			t.Skipf("freight was discovered but dev was not promoted: the promoter has no step engine yet (%s)", lastMessage)
		}
		t.Errorf("%d freight discovered, but none reached dev within 60 s; last promotion: %s", len(freight), lastMessage)
	})

	// The smoke test (a web metric on the demo application, on loopback)
	// passes under the egress policy: the demo opened its own addresses.
	t.Run("dev verified", func(t *testing.T) {
		deadline := time.Now().Add(90 * time.Second)
		for {
			out, err := cli("get", "freight", "-p", "demo", "-o", "json")
			if err != nil {
				t.Fatal(err)
			}
			var list struct {
				Items []model.Freight `json:"items"`
			}
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				t.Fatal(err)
			}
			for _, f := range list.Items {
				if f.IsVerifiedIn("dev") {
					return
				}
			}
			if time.Now().After(deadline) {
				stages, _ := cli("get", "stages", "-p", "demo", "-o", "yaml")
				t.Fatalf("no freight verified in dev within 90 s:\n%s", stages)
			}
			time.Sleep(time.Second)
		}
	})
	if !strings.Contains(logs.String(), "demo: its servers are added to the egress allow list") {
		t.Error("the log does not say the demo opened its addresses in the egress policy")
	}

	// A clean stop on SIGINT, as Ctrl-C in `make run`.
	if err := srv.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Errorf("server exited with %v after SIGINT", err)
		}
	case <-ctx.Done():
		t.Error("server did not stop within 30 s of SIGINT")
	}
	if !strings.Contains(logs.String(), "caravan stopped") {
		t.Errorf("no clean stop in the log")
	}
}
