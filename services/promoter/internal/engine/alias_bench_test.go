package engine

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// BenchmarkAliasCheck measures set-freight-alias's check that no other
// freight of the project uses the alias, in a project of 10,000 freight:
// with the freight index (the promoter's way) beside listing the
// project's freight from KV (the way it replaced, still the fallback when
// the index is not current), in the same run. Reported: time per check
// (ms/check-*), NATS requests per check (requests/check-*: KV gets, key
// lists, the index's stream-info request) and their ratios.
func BenchmarkAliasCheck(b *testing.B) {
	const n = 10000
	srv := testenv.NATS(b)
	ctx := context.Background()
	open := func() (*state.Store, func() uint64) {
		nc := srv.Conn(b)
		js, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}
		if err := state.Setup(ctx, js, 1); err != nil {
			b.Fatal(err)
		}
		sealer, err := state.NewSealer(bytes.Repeat([]byte{7}, state.KeySize))
		if err != nil {
			b.Fatal(err)
		}
		s, err := state.Open(ctx, js, sealer)
		if err != nil {
			b.Fatal(err)
		}
		return s, func() uint64 { return nc.Stats().OutMsgs }
	}
	store, sentStore := open()
	ixStore, sentIndex := open() // the index's own connection
	const project = "big"
	for i := range n {
		if _, err := store.PutObject(ctx, aliasedFreight(project, fmt.Sprintf("f%05d", i), fmt.Sprintf("alias-%05d", i)), 0); err != nil {
			b.Fatal(err)
		}
	}
	ix := runFreightIndex(b, ixStore)
	listed, err := New(Options{DataDir: b.TempDir(), Store: store})
	if err != nil {
		b.Fatal(err)
	}
	indexed, err := New(Options{DataDir: b.TempDir(), Store: store, Freight: ix})
	if err != nil {
		b.Fatal(err)
	}
	sent := func() uint64 { return sentStore() + sentIndex() }
	measure := func(e *Engine) (time.Duration, uint64) {
		before := sent()
		start := time.Now()
		other, err := e.aliasedOther(ctx, project, "f09999", "alias-00000")
		if err != nil {
			b.Fatal(err)
		}
		if other != "f00000" {
			b.Fatalf("alias used by %q, want f00000", other)
		}
		return time.Since(start), sent() - before
	}
	testenv.CompareIndexed(b, "check", 20,
		func() (time.Duration, uint64) { return measure(listed) },
		func() (time.Duration, uint64) { return measure(indexed) })
}
