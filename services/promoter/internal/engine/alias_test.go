package engine

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

// runFreightIndex runs a freight index of store's bucket until the test
// ends and returns it loaded.
func runFreightIndex(t testing.TB, store *state.Store) *freightindex.Index {
	t.Helper()
	ix := freightindex.New(store.KV(state.Freight), nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ready := make(chan struct{})
	go ix.Run(ctx, ready, 10*time.Millisecond)
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("freight index not loaded")
	}
	return ix
}

func aliasedFreight(project, name, alias string) *model.Freight {
	return &model.Freight{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight},
		ObjectMeta: model.ObjectMeta{Name: name, Namespace: project, Labels: map[string]string{model.LabelAlias: alias}},
		Alias:      alias, Origin: model.FreightOrigin{Kind: model.FreightOriginKindWarehouse, Name: "app"},
		Images: []model.Image{{RepoURL: imageRepo, Tag: name, Digest: "sha256:" + name}}}
}

// SetFreightAlias refuses an alias another freight of the project uses and
// sets any other, answering the check from the freight index (the
// promoter's way), from the project's freight listed from KV (no index,
// the way it replaced) and from KV when the index is not current (never
// run): all three alike, each in a project of its own.
func TestSetFreightAlias(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	ix := runFreightIndex(t, store)
	var indexLog testenv.SyncBuffer // the index way must not read KV
	ways := []struct {
		name string
		ix   *freightindex.Index
		log  *slog.Logger
	}{
		{"index", ix, slog.New(slog.NewTextHandler(&indexLog, nil))},
		{"kv", nil, nil},
		{"index not current", freightindex.New(store.KV(state.Freight), nil), nil},
	}
	for i, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			e, err := New(Options{DataDir: t.TempDir(), Store: store, Freight: w.ix, Logger: w.log})
			if err != nil {
				t.Fatal(err)
			}
			project := fmt.Sprintf("p%d", i)
			for _, f := range []*model.Freight{aliasedFreight(project, "a", "red-fox"), aliasedFreight(project, "b", "blue-owl"), aliasedFreight("other", "z"+project, "green-elk")} {
				if _, err := store.PutObject(ctx, f, 0); err != nil {
					t.Fatal(err)
				}
			}
			steps := []struct {
				name           string
				before         func() // another writer's change
				freight, alias string
				wantErr        string // "" : set
			}{
				{"a free alias", nil, "b", "grey-elk", ""},
				{"another freight's alias", nil, "b", "red-fox", `alias "red-fox" is used by freight a`},
				{"its own alias", nil, "a", "red-fox", ""},
				{"an alias used in another project only", nil, "b", "green-elk", ""},
				{"an alias freed by another writer", func() {
					if _, _, err := state.Update(ctx, store.KV(state.Freight), state.Key(project, "a"), func(f model.Freight, _ bool) (model.Freight, error) {
						f.Alias = "new-fox"
						return f, nil
					}); err != nil {
						t.Fatal(err)
					}
					// As every alias writer does after a rename.
					if err := store.ReleaseAlias(ctx, project, "red-fox", "a"); err != nil {
						t.Fatal(err)
					}
				}, "b", "red-fox", ""},
				{"an alias another writer reserved", func() {
					if err := store.ReserveAlias(ctx, project, "pink-emu", "d"); err != nil {
						t.Fatal(err)
					}
				}, "b", "pink-emu", `alias "pink-emu" is taken by freight d`},
				{"a free alias, after b's first was released", func() {
					// b left grey-elk for green-elk: another freight may
					// take it at once.
					if err := store.ReserveAlias(ctx, project, "grey-elk", "e"); err != nil {
						t.Fatal(err)
					}
				}, "a", "plum-yak", ""},
				{"an alias taken by another writer", func() {
					if _, err := store.PutObject(ctx, aliasedFreight(project, "c", "tan-cat"), 0); err != nil {
						t.Fatal(err)
					}
				}, "b", "tan-cat", `alias "tan-cat" is used by freight c`},
			}
			for _, st := range steps {
				if st.before != nil {
					st.before()
				}
				prev, _, err := state.GetAs[*model.Freight](ctx, store, project, model.KindFreight, st.freight)
				if err != nil {
					t.Fatal(err)
				}
				err = e.SetFreightAlias(ctx, project, st.freight, st.alias)
				got, _, gerr := state.GetAs[*model.Freight](ctx, store, project, model.KindFreight, st.freight)
				if gerr != nil {
					t.Fatal(gerr)
				}
				switch {
				case st.wantErr == "" && err != nil:
					t.Errorf("%s: %v", st.name, err)
				case st.wantErr != "" && (err == nil || !strings.Contains(err.Error(), st.wantErr)):
					t.Errorf("%s: error %v, want %q", st.name, err, st.wantErr)
				case st.wantErr == "" && (got.Alias != st.alias || got.Labels[model.LabelAlias] != st.alias):
					t.Errorf("%s: alias %q (label %q), want %q", st.name, got.Alias, got.Labels[model.LabelAlias], st.alias)
				case st.wantErr != "" && got.Alias != prev.Alias:
					t.Errorf("%s: alias changed to %q though refused", st.name, got.Alias)
				}
			}
		})
	}
	t.Cleanup(func() {
		if out := indexLog.String(); out != "" {
			t.Errorf("the index way read KV: %s", out)
		}
	})
}
