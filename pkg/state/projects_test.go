package state_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

func TestProjectOfKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		bucket  state.Bucket
		key     string
		project string
	}{
		{state.Resources, "demo.Stage.dev", "demo"},
		{state.Resources, "a_b.Stage.dev", "a.b"},
		{state.Resources, "_.Project.demo", ""},
		{state.Resources, "_.ClusterPromotionTask.x", ""},
		{state.Secrets, "demo.creds", "demo"},
		{state.Freight, "demo.f0123", "demo"},
		{state.Tokens, "demo.ci", "demo"},
		{state.DiscoveryLeases, "demo.app", "demo"},
		{state.DiscoveryLeases, "_replicas.host-1", ""},
		{state.Promoter, "queue.demo.dev", "demo"},
		{state.Promoter, "wake.demo.dev", "demo"},
		{state.Promoter, "job.gc", ""},
		{state.Verifications, "run.demo.dev.p1", "demo"},
		{state.Verifications, "stage.demo.dev", "demo"},
		{state.Notifications, "pending.demo.chat.01J", "demo"},
		{state.Notifications, "dead.demo.chat.01J", "demo"},
		{state.Notifications, "window.demo.dev", "demo"},
		{state.WebhookDeliveries, "0a1b2c", ""},
		{state.Stages, "demo", ""},
	}
	for _, tt := range tests {
		got, ok := state.ProjectOfKey(tt.bucket, tt.key)
		if got != tt.project || ok != (tt.project != "") {
			t.Errorf("ProjectOfKey(%s, %q) = %q, %v; want %q", tt.bucket, tt.key, got, ok, tt.project)
		}
	}
	// Every bucket's project keys are matched by its ProjectFilters.
	for _, b := range state.Buckets {
		if b != state.WebhookDeliveries && len(state.ProjectFilters(b, "demo")) == 0 {
			t.Errorf("bucket %s has no project filter", b)
		}
	}
}

// seedProject writes one key of project into every bucket that has
// project keys, the way the services lay them out.
func seedProject(t *testing.T, s *state.Store, project string) {
	t.Helper()
	ctx := context.Background()
	obj := func(o model.Object) {
		if _, err := s.PutObject(ctx, o, 0); err != nil {
			t.Fatal(err)
		}
	}
	obj(&model.Project{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindProject}, ObjectMeta: model.ObjectMeta{Name: project}})
	obj(&model.Stage{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindStage}, ObjectMeta: model.ObjectMeta{Name: "dev", Namespace: project}})
	obj(&model.Secret{TypeMeta: model.TypeMeta{APIVersion: model.CoreAPIVersion, Kind: model.KindSecret}, ObjectMeta: model.ObjectMeta{Name: "creds", Namespace: project}, StringData: map[string]string{"k": "v"}})
	obj(&model.Freight{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindFreight}, ObjectMeta: model.ObjectMeta{Name: "f1", Namespace: project}})
	obj(&model.Promotion{TypeMeta: model.TypeMeta{APIVersion: model.KargoAPIVersion, Kind: model.KindPromotion}, ObjectMeta: model.ObjectMeta{Name: "p1", Namespace: project}})
	for b, key := range map[state.Bucket]string{
		state.Stages: state.Key(project, "dev"), state.Warehouses: state.Key(project, "app"),
		state.Tokens: state.Key(project, "ci"), state.DiscoveryLeases: state.Key(project, "app"),
		state.Promoter: "queue." + state.Key(project, "dev"), state.Verifications: "run." + state.Key(project, "dev", "p1"),
		state.Notifications: "sent." + state.Key(project, "chat", "01J"),
	} {
		if _, err := state.Put(ctx, s.KV(b), key, map[string]string{"x": "y"}); err != nil {
			t.Fatal(err)
		}
	}
}

// keysOf lists every key of every bucket that belongs to project.
func keysOf(t *testing.T, s *state.Store, project string) []string {
	t.Helper()
	var out []string
	for _, b := range state.Buckets {
		keys, err := state.Keys(context.Background(), s.KV(b), ">")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if p, ok := state.ProjectOfKey(b, k); ok && p == project {
				out = append(out, string(b)+" "+k)
			}
		}
	}
	return out
}

func TestDeleteProject(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	seedProject(t, s, "a.b")
	seedProject(t, s, "other")
	if n := len(keysOf(t, s, "a.b")); n != 11 {
		t.Fatalf("seeded %d keys: %v", n, keysOf(t, s, "a.b"))
	}
	n, err := s.DeleteProject(ctx, "a.b")
	if err != nil {
		t.Fatal(err)
	}
	if n != 11 || len(keysOf(t, s, "a.b")) != 0 {
		t.Errorf("purged %d, left %v", n, keysOf(t, s, "a.b"))
	}
	if got := len(keysOf(t, s, "other")); got != 11 {
		t.Errorf("the other project lost keys: %d left", got)
	}
	// The Project object is the caller's.
	if _, _, err := s.GetObject(ctx, "", model.KindProject, "a.b"); err != nil {
		t.Errorf("Project deleted: %v", err)
	}
	if n, err := s.DeleteProject(ctx, "a.b"); n != 0 || err != nil {
		t.Errorf("second delete: %d %v", n, err)
	}
	if _, err := s.DeleteProject(ctx, ">"); err == nil {
		t.Error("a filter was taken for a project name")
	}
}

func TestSweepOrphans(t *testing.T) {
	t.Parallel()
	s := open(t)
	ctx := context.Background()
	seedProject(t, s, "gone")
	seedProject(t, s, "live")
	if err := s.DeleteObject(ctx, "", model.KindProject, "gone"); err != nil {
		t.Fatal(err)
	}
	// Recent entries are left: they may belong to a project being applied.
	swept, err := s.SweepOrphans(ctx, time.Now().Add(-time.Hour))
	if err != nil || len(swept) != 0 {
		t.Fatalf("sweep with a grace: %v %v", swept, err)
	}
	swept, err = s.SweepOrphans(ctx, time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(swept, []string{"gone"}) || len(keysOf(t, s, "gone")) != 0 {
		t.Errorf("swept %v, left %v", swept, keysOf(t, s, "gone"))
	}
	if got := len(keysOf(t, s, "live")); got != 11 {
		t.Errorf("the live project lost keys: %d left", got)
	}
	// Keys of no project stay.
	if _, err := state.Put(ctx, s.KV(state.Promoter), "job.gc", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SweepOrphans(ctx, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := state.Get[int](ctx, s.KV(state.Promoter), "job.gc"); err != nil {
		t.Errorf("job lease swept: %v", err)
	}
}
