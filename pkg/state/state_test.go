package state_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/state"
	"github.com/caravan-cd/caravan/pkg/testenv"
)

func open(t *testing.T) *state.Store {
	t.Helper()
	return openOn(t, testenv.NATS(t))
}

// openOn is open on srv.
func openOn(t *testing.T, srv *testenv.Server) *state.Store {
	t.Helper()
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Setup(t.Context(), js, 1); err != nil {
		t.Fatal(err)
	}
	sealer, err := state.NewSealer(bytes.Repeat([]byte{7}, state.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	s, err := state.Open(t.Context(), js, sealer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type stageStatus struct {
	Promotions int      `json:"promotions"`
	Writers    []string `json:"writers"`
}

// TestUpdateNoLostUpdates runs 50 concurrent writers of one stage status:
// compare-and-set with retry must keep every update.
func TestUpdateNoLostUpdates(t *testing.T) {
	t.Parallel()
	s := open(t)
	kv := s.KV(state.Stages)
	key := state.Key("demo", "prod")
	const writers = 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, _, err := state.Update(t.Context(), kv, key, func(cur stageStatus, exists bool) (stageStatus, error) {
				cur.Promotions++
				cur.Writers = append(cur.Writers[:len(cur.Writers):len(cur.Writers)], fmt.Sprint(i))
				return cur, nil
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := state.Get[stageStatus](t.Context(), kv, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.Promotions != writers || len(got.Writers) != writers {
		t.Errorf("promotions = %d, writers = %d; want %d each (lost updates)", got.Promotions, len(got.Writers), writers)
	}
}

func TestCRUD(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	kv := s.KV(state.Resources)
	key := state.ResourceKey("demo", "Stage", "prod.eu")
	if key != "demo.Stage.prod_eu" {
		t.Errorf("key = %q", key)
	}
	if _, _, err := state.Get[stageStatus](ctx, kv, key); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	rev, err := state.Create(ctx, kv, key, stageStatus{Promotions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.Create(ctx, kv, key, stageStatus{}); !errors.Is(err, state.ErrExists) {
		t.Errorf("second create: %v", err)
	}
	_, rev2, err := state.Update(ctx, kv, key, func(cur stageStatus, _ bool) (stageStatus, error) {
		return cur, state.ErrNoChange
	})
	if err != nil || rev2 != rev {
		t.Errorf("no-change update: rev %d → %d, %v", rev, rev2, err)
	}
	if err := state.Delete(ctx, kv, key, rev+100); !errors.Is(err, state.ErrConflict) {
		t.Errorf("delete at a stale revision: %v", err)
	}
	if err := state.Delete(ctx, kv, key, rev); err != nil {
		t.Fatal(err)
	}
	if _, _, err := state.Get[stageStatus](ctx, kv, key); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("get deleted: %v", err)
	}
	if _, err := state.Create(ctx, kv, key, stageStatus{}); err != nil {
		t.Errorf("create after delete: %v", err)
	}
	if got := state.LastToken(key); got != "prod.eu" {
		t.Errorf("LastToken = %q", got)
	}
}

func TestListPaginates(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	kv := s.KV(state.Freight)
	for i := range 25 {
		if _, err := state.Put(ctx, kv, state.Key("demo", fmt.Sprintf("f%02d", i)), stageStatus{Promotions: i}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := state.Put(ctx, kv, state.Key("other", "f00"), stageStatus{}); err != nil {
		t.Fatal(err)
	}
	var all []int
	cont := ""
	pages := 0
	for {
		items, next, err := state.List[stageStatus](ctx, kv, state.Prefix("demo"), 10, cont)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, it := range items {
			all = append(all, it.Value.Promotions)
		}
		if next == "" {
			break
		}
		cont = next
	}
	if pages != 3 || len(all) != 25 {
		t.Fatalf("pages = %d, items = %d", pages, len(all))
	}
	for i, v := range all {
		if v != i {
			t.Fatalf("item %d = %d: out of order", i, v)
		}
	}
}

func TestSecretsAreSealed(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := t.Context()
	type secret struct {
		Password string `json:"password"`
	}
	key := state.Key("demo", "git-creds")
	if _, err := s.PutSecret(ctx, key, secret{Password: "hunter2-very-secret"}); err != nil {
		t.Fatal(err)
	}
	e, err := s.KV(state.Secrets).Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(e.Value(), []byte("hunter2")) {
		t.Fatal("secret stored in plain text")
	}
	var got secret
	if _, err := s.GetSecret(ctx, key, &got); err != nil || got.Password != "hunter2-very-secret" {
		t.Fatalf("GetSecret = %+v, %v", got, err)
	}
	// A sealed value moved to another key does not open.
	other := state.Key("demo", "stolen")
	if _, err := s.KV(state.Secrets).Put(ctx, other, e.Value()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSecret(ctx, other, &got); !errors.Is(err, state.ErrUnseal) {
		t.Errorf("moved secret opened: %v", err)
	}
	keys, err := s.SecretKeys(ctx, state.Prefix("demo"))
	if err != nil || len(keys) != 2 {
		t.Errorf("SecretKeys = %v, %v", keys, err)
	}
	if err := s.DeleteSecret(ctx, other); err != nil {
		t.Fatal(err)
	}
}

func TestLoadKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "secret.key")
	k1, created, err := state.LoadKey("", path)
	if err != nil || !created || len(k1) != state.KeySize {
		t.Fatalf("generate: %d bytes, created %v, %v", len(k1), created, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", info.Mode().Perm())
	}
	k2, created, err := state.LoadKey("", path)
	if err != nil || created || !bytes.Equal(k1, k2) {
		t.Errorf("reload: created %v, same %v, %v", created, bytes.Equal(k1, k2), err)
	}
	env := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	if k, _, err := state.LoadKey(env, path); err != nil || k[0] != 1 {
		t.Errorf("from env: %v", err)
	}
	for _, bad := range []string{"not base64!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		if _, _, err := state.LoadKey(bad, path); err == nil {
			t.Errorf("LoadKey(%q) accepted a bad key", bad)
		}
	}
}

func TestSealerRejectsTampering(t *testing.T) {
	t.Parallel()
	s, err := state.NewSealer(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal([]byte("token"), []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := s.Open(sealed, []byte("k")); !errors.Is(err, state.ErrUnseal) {
		t.Errorf("tampered value opened: %v", err)
	}
	if _, err := state.NewSealer([]byte("short")); err == nil {
		t.Error("short key accepted")
	}
}
