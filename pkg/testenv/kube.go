package testenv

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Kube is a real Kubernetes API server (kube-apiserver, built by
// scripts/tool.sh kube-apiserver) backed by Debian's etcd, on loopback.
// No controllers run: tests set the status of Jobs and Deployments
// themselves.
type Kube struct {
	// URL is the API server's https URL (self-signed certificate).
	URL string
	// Token is a bearer token of a cluster admin.
	Token string
	// Kubeconfig is the path of a kubeconfig for the server.
	Kubeconfig string
}

// KubeAPIServer starts etcd and kube-apiserver and stops them at test
// cleanup. The binary comes from $KUBE_APISERVER or from
// scripts/tool.sh kube-apiserver (built on first use, minutes); etcd from
// $PATH (apt-get install etcd-server).
func KubeAPIServer(t testing.TB) *Kube {
	t.Helper()
	apiserver := os.Getenv("KUBE_APISERVER")
	if apiserver == "" {
		out, err := exec.Command("bash", filepath.Join(repoRoot(t), "scripts", "tool.sh"), "kube-apiserver").Output()
		if err != nil {
			t.Fatalf("testenv: build kube-apiserver: %v", err)
		}
		apiserver = strings.TrimSpace(string(out))
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		t.Fatalf("testenv: etcd not installed (apt-get install etcd-server): %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	client, peer := freePort(t), freePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	start(ctx, t, nil, etcd,
		"--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", peer),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", peer),
		fmt.Sprintf("--initial-cluster=default=http://127.0.0.1:%d", peer))

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	write(t, filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	token := randomHex(16)
	write(t, filepath.Join(dir, "tokens.csv"), []byte(token+",admin,admin,system:masters\n"))

	port := freePort(t)
	start(ctx, t, nil, apiserver,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--endpoint-reconciler-type=none",
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--disable-admission-plugins=ServiceAccount")

	k := &Kube{URL: fmt.Sprintf("https://127.0.0.1:%d", port), Token: token, Kubeconfig: filepath.Join(dir, "kubeconfig")}
	write(t, k.Kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, k.URL, token))

	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed test server
	deadline := time.Now().Add(90 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, k.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return k
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: kube-apiserver not ready in 90s (last: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// started is a server process start began: its log file, and done,
// closed when it has exited.
type started struct {
	log  string
	done <-chan struct{}
}

// start runs a server process with env (nil: the test's) until ctx ends
// (killed at cleanup); its output goes to a log file in a temp dir of the
// test.
func start(ctx context.Context, t testing.TB, env []string, bin string, args ...string) started {
	t.Helper()
	log, err := os.CreateTemp(t.TempDir(), filepath.Base(bin)+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = log.Close()
	})
	return started{log: log.Name(), done: done}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

func write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// repoRoot finds the repository root (the folder holding go.work) from
// the working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("testenv: no go.work above %s", dir)
		}
	}
}
