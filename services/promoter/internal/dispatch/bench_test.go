package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// BenchmarkHoldCheck measures the auto-promotion hold check of a
// hand-made promotion into an auto-promoted stage (is freight newer than
// the promoted one available?) in a project of 10,000 freight all
// verified upstream, the promoted one 100 behind the newest: with the
// freight index (the promoter's way) beside reading all of the project's
// freight from KV (the way it replaced, still the fallback when the index
// is not current), in the same run. Reported: time per check
// (ms/check-*), NATS requests per check (requests/check-*: KV gets, key
// lists, the index's stream-info request) and their ratios.
func BenchmarkHoldCheck(b *testing.B) {
	const n, behind = 10000, 100
	srv := testenv.NATS(b)
	common := service.Common{DataDir: b.TempDir(), StreamConfig: events.DefaultStreamConfig()}
	ctx := context.Background()
	nc := srv.Conn(b)
	env, err := service.Provision(ctx, nc, "bench", common, nil)
	if err != nil {
		b.Fatal(err)
	}
	ixConn := srv.Conn(b) // the index's traffic, counted apart from the watch
	ixEnv, err := service.Provision(ctx, ixConn, "bench-index", common, nil)
	if err != nil {
		b.Fatal(err)
	}
	const project = "big"
	stage := &model.Stage{TypeMeta: kargo(model.KindStage), ObjectMeta: model.ObjectMeta{Name: "staging", Namespace: project},
		Spec: model.StageSpec{RequestedFreight: []model.FreightRequest{{Origin: app, Sources: model.FreightSources{Stages: []string{"dev"}}}}}}
	var promoted, newest *model.Freight
	for i := range n {
		f := testFreight(project, fmt.Sprintf("1.0.%d", i), app, n-i, "dev")
		f.Name = fmt.Sprintf("%040d", i)
		if _, err := env.Store.PutObject(ctx, f, 0); err != nil {
			b.Fatal(err)
		}
		switch i {
		case n - 1 - behind:
			promoted = f
		case n - 1:
			newest = f
		}
	}
	ix := freightindex.New(ixEnv.Store.KV(state.Freight), nil)
	ictx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel)
	ready := make(chan struct{})
	go ix.Run(ictx, ready, time.Second)
	<-ready

	log := slog.New(slog.DiscardHandler)
	listed := New(Options{Store: env.Store, Logger: log})
	indexed := New(Options{Store: env.Store, Logger: log, Freight: ix})
	// Requests: the check's, and the index's stream-info request (Sync).
	// The index's watch delivers on ixConn as messages in, not out.
	sent := func() uint64 { return nc.Stats().OutMsgs + ixConn.Stats().OutMsgs }
	measure := func(d *Dispatcher) (time.Duration, uint64) {
		before := sent()
		start := time.Now()
		got, err := d.newerAvailable(ctx, project, stage, promoted, epoch)
		if err != nil {
			b.Fatal(err)
		}
		if got == nil || got.Name != newest.Name {
			b.Fatalf("newer available freight %v, want %s", got, newest.Name)
		}
		return time.Since(start), sent() - before
	}
	testenv.CompareIndexed(b, "check", 20,
		func() (time.Duration, uint64) { return measure(listed) },
		func() (time.Duration, uint64) { return measure(indexed) })
}
