package discovery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/lease"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
	"github.com/caravan-cd/caravan/services/discovery"
)

// BenchmarkLeases10kWarehouses runs three discovery replicas (production
// lease TTL and reconcile interval) over 10,000 Warehouses on an embedded
// NATS server and, once ownership settled, watches a steady window
// (CARAVAN_BENCH_WINDOW, default 1m): lease writes per second (heartbeats
// and leases changing hands, read off the lease bucket's stream), handovers
// (target: 0, no flapping), the busiest 10 s against the window's mean
// (target: flat, ~1) and all NATS messages of the replicas per second
// (leases, watches and the reconciler's reads).
//
// The baseline, measured in the same run on the same server, is the
// previous design's scan of one replica: list every Warehouse, then a Get
// and a compare-and-set for each of its third of the leases, every third
// of the TTL. Its figures: the scan's duration against that period (above
// 1 the leases expire before they are renewed, and flap) and the lease
// operations per second three replicas would make; x-old is the ratio of
// the ring's lease writes to them.
func BenchmarkLeases10kWarehouses(b *testing.B) {
	const n, replicas = 10000, 3
	window := time.Minute
	if v := os.Getenv("CARAVAN_BENCH_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("CARAVAN_BENCH_WINDOW: %v", err)
		}
		window = d
	}
	srv := testenv.NATS(b)
	gw := newGateway(b, srv)
	ctx := b.Context()
	names := make([]string, n)
	now := time.Now()
	for i := range n {
		names[i] = fmt.Sprintf("w-%05d", i)
		w := imageWarehouse(names[i], model.ImageSubscription{RepoURL: "registry.invalid/team/app"})
		w.Generation = 1
		w.Spec.Interval = model.Duration{Duration: time.Hour}
		gw.put(b, w)
		// Discovered a moment ago: taking it over discovers nothing.
		st := model.WarehouseStatus{ObservedGeneration: 1, LastRunAt: model.NewTime(now),
			Conditions: []model.Condition{{Type: discovery.ConditionReady, Status: model.ConditionTrue}}}
		if _, err := state.Put(ctx, gw.env.Store.KV(state.Warehouses), state.Key(project, names[i]), st); err != nil {
			b.Fatal(err)
		}
	}

	// Baseline: one replica's scan as the previous design made it.
	defaultTTL := 6 * time.Second
	oldKV, err := gw.env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench-old-leases", Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	old := lease.New(oldKV, "old", defaultTTL)
	scan := func() time.Duration {
		start := time.Now()
		keys, err := state.Keys(ctx, gw.env.Store.KV(state.Resources), "*.Warehouse.*")
		if err != nil || len(keys) != n {
			b.Fatalf("list: %d keys, %v", len(keys), err)
		}
		for i := 0; i < n; i += replicas {
			if _, err := old.Acquire(ctx, state.Key(project, names[i])); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	scan() // takes the leases
	oldScan := scan()
	period := defaultTTL / 3
	oldOpsPerSec := float64(replicas*2*(n/replicas)) / max(oldScan, period).Seconds()

	// The ring: three replicas, production lease TTL and reconcile interval.
	leases := gw.env.Store.KV(state.DiscoveryLeases)
	var mu sync.Mutex
	holders := map[string]string{}
	handovers := 0
	watch, err := leases.Watch(ctx, "*.*")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = watch.Stop() }()
	go func() {
		for e := range watch.Updates() {
			if e == nil || strings.HasPrefix(e.Key(), lease.MembersToken+".") {
				continue
			}
			var rec lease.Record
			_ = json.Unmarshal(e.Value(), &rec)
			mu.Lock()
			if prev, ok := holders[e.Key()]; ok && prev != rec.Holder {
				handovers++
			}
			holders[e.Key()] = rec.Holder
			mu.Unlock()
		}
	}()
	ids := []string{"r1", "r2", "r3"}
	var reps []*replica
	b.ResetTimer()
	for _, id := range ids {
		reps = append(reps, startReplica(b, srv, id, func(c *discovery.Config) { c.LeaseTTL, c.ReconcileInterval = 0, 0 }))
	}
	settled := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, name := range names {
			key := state.Key(project, name)
			if holders[key] != lease.Rendezvous(ids, key) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(5 * time.Minute)
	for !settled() {
		if time.Now().After(deadline) {
			b.Fatal("ownership did not settle")
		}
		time.Sleep(200 * time.Millisecond)
	}
	settle := b.Elapsed()

	// The steady window, in 10 s slices.
	stream := "KV_" + string(state.DiscoveryLeases)
	lastSeq := func() uint64 {
		s, err := gw.env.JS.Stream(context.WithoutCancel(ctx), stream)
		if err != nil {
			b.Fatal(err)
		}
		return s.CachedInfo().State.LastSeq
	}
	msgs := func() uint64 {
		var total uint64
		for _, r := range reps {
			st := r.nc.Stats()
			total += st.InMsgs + st.OutMsgs
		}
		return total
	}
	mu.Lock()
	handovers = 0
	mu.Unlock()
	seq0, msgs0 := lastSeq(), msgs()
	slice := min(10*time.Second, window)
	var busiest float64
	start := time.Now()
	for time.Since(start) < window {
		s0, t0 := lastSeq(), time.Now()
		time.Sleep(min(slice, window-time.Since(start)))
		busiest = max(busiest, float64(lastSeq()-s0)/time.Since(t0).Seconds())
	}
	elapsed := time.Since(start).Seconds()
	writes := float64(lastSeq()-seq0) / elapsed
	mu.Lock()
	moved := handovers
	mu.Unlock()
	b.StopTimer()

	b.ReportMetric(writes, "lease-writes/s")
	b.ReportMetric(float64(moved), "handovers")
	b.ReportMetric(busiest/max(writes, 1e-9), "busiest-10s/mean")
	b.ReportMetric(float64(msgs()-msgs0)/elapsed, "replica-nats-msgs/s")
	b.ReportMetric(settle.Seconds(), "s-to-settle")
	b.ReportMetric(oldScan.Seconds()/period.Seconds(), "old-scan/renew-period")
	b.ReportMetric(oldOpsPerSec, "old-lease-ops/s")
	b.ReportMetric(writes/oldOpsPerSec, "x-old")
}
