package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// RSS scale: what the issue asks the all-in-one server to hold in 100 MiB.
const (
	rssWarehouses = 100
	rssStages     = 1000
	rssFreight    = 10000
	rssTargetMiB  = 100
)

// BenchmarkServerRSS runs `caravan server` as a process (its own
// embedded NATS, a fresh data dir, free ports), fills it with 100
// warehouses, 1,000 stages (applied through the API) and 10,000 freight
// (written to its KV store, as discovery would), puts it under load (four
// clients listing freight, the freight available to stages, stages and
// promotions, for 15 s) and reports its peak RSS beside the RSS of the same
// server idle with no resources, measured first in the same run:
//
//   - peak-rss-MiB: the peak RSS (VmHWM) while it is filled and under load:
//     the benchmark resets the high-water mark once the idle server is
//     measured (/proc/<pid>/clear_refs), so start-up is not in it;
//   - startup-peak-rss-MiB: VmHWM of the idle server, start-up included
//     (the executable's pages the start-up maps before the server can
//     release them, see the server's releaseExecutablePages);
//   - idle-rss-MiB: the idle server's RSS (VmRSS), and ratio-peak-to-idle,
//     ratio-peak-to-target (the 100 MiB target);
//   - the same split into anonymous memory (RssAnon: heap and stacks) and
//     file pages (RssFile: mostly the executable's pages mapped from the
//     page cache, which a kernel with large folios maps whole folios at a
//     time), sampled every 50 ms from the idle point to the end of the
//     load: idle-anon-MiB, peak-anon-MiB, idle-file-MiB, peak-file-MiB.
//
// The log shows /proc/<pid>/smaps_rollup idle and loaded. The server runs
// with its defaults, as `caravan server` does (CARAVAN_MEMORY_LIMIT among
// them).
func BenchmarkServerRSS(b *testing.B) {
	// CARAVAN_RSS_BIN: a caravan binary built beforehand (to compare two
	// builds on one machine); by default this package is built.
	bin := os.Getenv("CARAVAN_RSS_BIN")
	if bin == "" {
		bin = filepath.Join(b.TempDir(), "caravan")
		build := exec.Command("go", "build", "-o", bin, ".")
		if out, err := build.CombinedOutput(); err != nil {
			b.Fatalf("go build: %v\n%s", err, out)
		}
	}
	data := b.TempDir()
	httpAddr, natsAddr := freePort(b), freePort(b)
	api := "http://" + httpAddr
	cmd := exec.Command(bin, "server")
	cmd.Dir = b.TempDir()
	cmd.Env = append(os.Environ(),
		"CARAVAN_DATA_DIR="+data,
		"CARAVAN_HTTP_ADDR="+httpAddr,
		"CARAVAN_EMBEDDED_NATS_ADDR="+natsAddr,
		"CARAVAN_LOG_LEVEL=warn",
	)
	var logs bytes.Buffer
	var logMu sync.Mutex
	cmd.Stdout = lockedWriter{&logs, &logMu}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if b.Failed() {
			logMu.Lock()
			b.Logf("server log:\n%s", logs.String())
			logMu.Unlock()
		}
	})
	pid := cmd.Process.Pid
	waitReady(b, api)
	time.Sleep(3 * time.Second) // settled: the services' first passes done
	startup, idle := procKiB(b, pid, "VmHWM"), procKiB(b, pid, "VmRSS")
	idleAnon, idleFile := procKiB(b, pid, "RssAnon"), procKiB(b, pid, "RssFile")
	idleRollup := readProc(b, pid, "smaps_rollup")
	// From here VmHWM is the peak of filling and load.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		b.Fatalf("reset the peak RSS: %v", err)
	}
	// The peaks of anonymous memory (the heap, stacks) and of file pages,
	// which VmHWM adds up.
	var peakAnon, peakFile atomic.Int64
	sampling, stopSampling := context.WithCancel(context.Background())
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for sampling.Err() == nil {
			if n := procKiB(b, pid, "RssAnon"); n > peakAnon.Load() {
				peakAnon.Store(n)
			}
			if n := procKiB(b, pid, "RssFile"); n > peakFile.Load() {
				peakFile.Store(n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	token, err := os.ReadFile(filepath.Join(data, "admin-token"))
	if err != nil {
		b.Fatal(err)
	}
	client := rssClient{api: api, token: strings.TrimSpace(string(token))}
	client.apply(b, rssResources())
	writeFreight(b, "nats://"+natsAddr, filepath.Join(data, "nats-client.nk"))

	// Load: four clients, 15 s.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	paths := []string{
		"/v1/projects/rss/freight?limit=100",
		"/v1/projects/rss/freight?stage=s0005&limit=100",
		"/v1/projects/rss/freight?stage=s0503&limit=100",
		"/v1/projects/rss/stages?limit=1000",
		"/v1/projects/rss/warehouses",
		"/v1/projects/rss/promotions?stage=s0001",
	}
	var requests atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i++ {
				client.get(b, paths[i%len(paths)])
				requests.Add(1)
			}
		})
	}
	wg.Wait()
	stopSampling()
	sampler.Wait()
	peak := procKiB(b, pid, "VmHWM")
	b.ReportMetric(float64(startup)/1024, "startup-peak-rss-MiB")
	b.ReportMetric(float64(idle)/1024, "idle-rss-MiB")
	b.ReportMetric(float64(peak)/1024, "peak-rss-MiB")
	b.ReportMetric(float64(peak)/float64(idle), "ratio-peak-to-idle")
	b.ReportMetric(float64(peak)/1024/rssTargetMiB, "ratio-peak-to-target")
	b.ReportMetric(float64(idleAnon)/1024, "idle-anon-MiB")
	b.ReportMetric(float64(peakAnon.Load())/1024, "peak-anon-MiB")
	b.ReportMetric(float64(peakAnon.Load())/float64(idleAnon), "ratio-peak-anon-to-idle")
	b.ReportMetric(float64(idleFile)/1024, "idle-file-MiB")
	b.ReportMetric(float64(peakFile.Load())/1024, "peak-file-MiB")
	b.ReportMetric(float64(peakFile.Load())/float64(idleFile), "ratio-peak-file-to-idle")
	b.ReportMetric(float64(requests.Load()), "requests")
	// Where the memory is: the kernel's totals (Rss, Anonymous, the
	// file-backed rest, huge mappings) idle and after the load.
	b.Logf("idle smaps_rollup:\n%s\nloaded smaps_rollup:\n%s\nloaded status:\n%s", idleRollup, readProc(b, pid, "smaps_rollup"), readProc(b, pid, "status"))
}

// readProc reads /proc/<pid>/<name>.
func readProc(b *testing.B, pid int, name string) string {
	b.Helper()
	out, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	if err != nil {
		b.Fatal(err)
	}
	return string(out)
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func waitReady(b *testing.B, api string) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(api + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("not ready after 2 min: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// procKiB reads a field of /proc/<pid>/status (VmHWM: peak RSS) in KiB.
func procKiB(b *testing.B, pid int, field string) int64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

type rssClient struct{ api, token string }

func (c rssClient) do(b *testing.B, method, path, contentType string, body io.Reader) []byte {
	b.Helper()
	req, err := http.NewRequest(method, c.api+path, body)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		b.Fatalf("%s %s: %d %.300s", method, path, resp.StatusCode, out)
	}
	return out
}

func (c rssClient) apply(b *testing.B, yaml string) {
	c.do(b, http.MethodPost, "/v1/resources", "application/yaml", strings.NewReader(yaml))
}

func (c rssClient) get(b *testing.B, path string) {
	c.do(b, http.MethodGet, path, "", nil)
}

// rssResources is project rss: 100 warehouses (their registry refused by
// the egress policy, so discovery finds nothing) and 1,000 stages, ten
// in a chain behind each warehouse.
func rssResources() string {
	var sb strings.Builder
	sb.WriteString("apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata:\n  name: rss\n")
	for w := range rssWarehouses {
		fmt.Fprintf(&sb, `---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata:
  name: w%03d
  namespace: rss
spec:
  subscriptions:
  - image:
      repoURL: 127.0.0.1:9/app%03d
`, w, w)
	}
	per := rssStages / rssWarehouses
	for s := range rssStages {
		w, j := s/per, s%per
		sources := "direct: true"
		if j > 0 {
			sources = fmt.Sprintf("stages: [s%04d]", s-1)
		}
		fmt.Fprintf(&sb, `---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata:
  name: s%04d
  namespace: rss
spec:
  requestedFreight:
  - origin:
      kind: Warehouse
      name: w%03d
    sources:
      %s
  promotionTemplate:
    spec:
      steps:
      - uses: http
        config:
          url: http://127.0.0.1:9/
`, s, w, sources)
	}
	return sb.String()
}

// writeFreight stores 10,000 freight, 100 per warehouse, each verified in
// the first three stages behind its warehouse, straight into the
// server's freight bucket over its embedded NATS.
func writeFreight(b *testing.B, url, seedFile string) {
	b.Helper()
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(url, opt)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, string(state.Freight))
	if err != nil {
		b.Fatal(err)
	}
	per := rssFreight / rssWarehouses
	stagesPer := rssStages / rssWarehouses
	now := time.Now()
	for i := range rssFreight {
		w := i / per
		f := &model.Freight{
			TypeMeta:   model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
			ObjectMeta: model.ObjectMeta{Namespace: "rss", CreationTimestamp: model.NewTime(now.Add(time.Duration(i-rssFreight) * time.Second))},
			Origin:     model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: fmt.Sprintf("w%03d", w)},
			Alias:      fmt.Sprintf("f-%05d", i),
			Images:     []model.Image{{RepoURL: fmt.Sprintf("127.0.0.1:9/app%03d", w), Tag: fmt.Sprintf("1.0.%d", i), Digest: fmt.Sprintf("sha256:%064d", i)}},
		}
		f.Name = f.GenerateID()
		f.Status.VerifiedIn = map[string]model.VerifiedStage{}
		for j := range 3 {
			f.Status.VerifiedIn[fmt.Sprintf("s%04d", w*stagesPer+j)] = model.VerifiedStage{VerifiedAt: model.NewTime(now)}
		}
		raw, err := json.Marshal(f)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := kv.Put(ctx, state.Key("rss", f.Name), raw); err != nil {
			b.Fatal(err)
		}
	}
}
