package state_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

func TestReserveAlias(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	freight := func(name, alias string) {
		t.Helper()
		f := &model.Freight{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
			ObjectMeta: model.ObjectMeta{Name: name, Namespace: "shop"}, Alias: alias}
		_, rev, _ := s.GetObject(ctx, "shop", model.KindFreight, name)
		if _, err := s.PutObject(ctx, f, rev); err != nil {
			t.Fatal(err)
		}
	}

	// Eight writers at once: one alias, one winner.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = s.ReserveAlias(ctx, "shop", "brave-fox", fmt.Sprintf("f%d", i)) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("f%d and f%d both reserved the alias", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, state.ErrAliasTaken):
			t.Fatalf("f%d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("nobody reserved the alias")
	}
	holder := fmt.Sprintf("f%d", winner)
	if err := s.ReserveAlias(ctx, "shop", "brave-fox", holder); err != nil {
		t.Fatalf("the holder again: %v", err)
	}
	// Within the grace the holder need not show the alias yet.
	other := "f9"
	if err := s.ReserveAlias(ctx, "shop", "brave-fox", other); !errors.Is(err, state.ErrAliasTaken) || err.Error() != `alias "brave-fox" is taken by freight `+holder+`: alias taken` {
		t.Fatalf("another freight within the grace: %v", err)
	}
	// Another project is another name space.
	if err := s.ReserveAlias(ctx, "other", "brave-fox", other); err != nil {
		t.Fatal(err)
	}

	// A release by someone else does nothing; the holder's frees it at once.
	if err := s.ReleaseAlias(ctx, "shop", "brave-fox", other); err != nil {
		t.Fatal(err)
	}
	if err := s.ReserveAlias(ctx, "shop", "brave-fox", other); !errors.Is(err, state.ErrAliasTaken) {
		t.Fatalf("after a stranger's release: %v", err)
	}
	if err := s.ReleaseAlias(ctx, "shop", "brave-fox", holder); err != nil {
		t.Fatal(err)
	}
	if err := s.ReserveAlias(ctx, "shop", "brave-fox", other); err != nil {
		t.Fatalf("after the holder's release: %v", err)
	}

	// Past the grace, a reservation holds while its freight shows the
	// alias, and is taken over once it does not.
	old := func(alias, holder string) {
		t.Helper()
		if _, err := state.Put(ctx, s.KV(state.Aliases), state.Key("shop", alias),
			map[string]any{"freight": holder, "since": time.Now().Add(-2 * state.AliasGrace)}); err != nil {
			t.Fatal(err)
		}
	}
	freight("held", "calm-owl")
	old("calm-owl", "held")
	if err := s.ReserveAlias(ctx, "shop", "calm-owl", "late"); !errors.Is(err, state.ErrAliasTaken) {
		t.Fatalf("a held alias: %v", err)
	}
	freight("held", "new-name") // renamed, its release lost
	if err := s.ReserveAlias(ctx, "shop", "calm-owl", "late"); err != nil {
		t.Fatalf("a stale reservation: %v", err)
	}
	old("gone-cat", "deleted") // its freight never existed
	if err := s.ReserveAlias(ctx, "shop", "gone-cat", "late"); err != nil {
		t.Fatalf("a reservation of a missing freight: %v", err)
	}

	// A generated alias skips those reserved.
	taken := func(a string) bool { return false }
	seen := map[string]bool{}
	for i := range 20 {
		a, err := s.ReserveUniqueAlias(ctx, "shop", fmt.Sprintf("g%d", i), taken)
		if err != nil || seen[a] {
			t.Fatalf("generated %q: %v (seen: %t)", a, err, seen[a])
		}
		seen[a] = true
	}
}
