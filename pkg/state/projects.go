package state

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/model"
)

// recordTypes lists, for the buckets whose keys start with a record type
// and name the project second (queue.<project>.<stage>), those record
// types. Every other bucket but WebhookDeliveries names the project first.
var recordTypes = map[Bucket][]string{
	Promoter:      {"queue", "wake"},
	Verifications: {"run", "stage"},
	Notifications: {"pending", "sent", "dead", "window"},
}

// projectOrder is the order DeleteProject empties the buckets in: specs
// first (discovery and health stop finding the project's Warehouses and
// Stages), then the coordination records (a running promotion can no
// longer save, a running verification loses its lease, a discovery its
// lease), then the rest.
var projectOrder = []Bucket{Resources, Promoter, Verifications, DiscoveryLeases, Tokens, Secrets, Stages, Warehouses, Freight, Promotions, Notifications, Aliases}

// ProjectFilters returns the key filters that match every key of project
// in b; none for WebhookDeliveries, whose keys are hashes that expire.
func ProjectFilters(b Bucket, project string) []string {
	if b == WebhookDeliveries || project == "" {
		return nil
	}
	if types, ok := recordTypes[b]; ok {
		out := make([]string, len(types))
		for i, t := range types {
			out[i] = Key(t, project) + ".>"
		}
		return out
	}
	return []string{Prefix(project)}
}

// ProjectOfKey returns the project a key of b belongs to; ok is false for
// keys of no project: cluster-scoped objects, leases of periodic jobs and
// of replicas, webhook deliveries.
func ProjectOfKey(b Bucket, key string) (string, bool) {
	if b == WebhookDeliveries {
		return "", false
	}
	tokens := strings.Split(key, ".")
	i := 0
	if types, ok := recordTypes[b]; ok {
		if !slices.Contains(types, tokens[0]) {
			return "", false
		}
		i = 1
	}
	if len(tokens) < i+2 || tokens[i] == ClusterProject {
		return "", false
	}
	project := Untoken(tokens[i])
	if !model.IsDNS1123Subdomain(project) {
		return "", false
	}
	return project, true
}

// DeleteProject purges every key of project from every bucket (see
// projectOrder) and returns how many it purged. The Project object itself,
// a cluster-scoped key, is the caller's to delete, before: once it is gone
// nothing new is applied to the project. It is idempotent.
func (s *Store) DeleteProject(ctx context.Context, project string) (int, error) {
	if !model.IsDNS1123Subdomain(project) {
		return 0, fmt.Errorf("delete project %q: not a project name", project)
	}
	n := 0
	for _, b := range projectOrder {
		for _, filter := range ProjectFilters(b, project) {
			keys, err := Keys(ctx, s.kvs[b], filter)
			if err != nil {
				return n, fmt.Errorf("delete project %q: %w", project, err)
			}
			for _, k := range keys {
				if err := purge(ctx, s.kvs[b], k); err != nil {
					return n, fmt.Errorf("delete project %q: %w", project, err)
				}
				n++
			}
		}
	}
	return n, nil
}

func purge(ctx context.Context, kv jetstream.KeyValue, key string) error {
	if err := kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("purge %s %s: %w", kv.Bucket(), key, err)
	}
	return nil
}

// Projects returns the names of the projects that exist.
func (s *Store) Projects(ctx context.Context) ([]string, error) {
	keys, err := Keys(ctx, s.kvs[Resources], Prefix(ClusterProject, model.KindProject))
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, LastToken(k))
	}
	return out, nil
}

// SweepOrphans purges the keys of projects that do not exist — left by a
// project deletion that was interrupted, or written by work that raced
// it — from every bucket. Entries written at or after before are left
// alone: an apply writes a project's objects in document order, so they
// may be there a moment before their Project. It returns the projects
// whose keys it purged.
func (s *Store) SweepOrphans(ctx context.Context, before time.Time) ([]string, error) {
	projects, err := s.Projects(ctx)
	if err != nil {
		return nil, fmt.Errorf("sweep orphans: %w", err)
	}
	live := make(map[string]bool, len(projects))
	for _, p := range projects {
		live[p] = true
	}
	swept := map[string]bool{}
	for _, b := range projectOrder {
		kv := s.kvs[b]
		keys, err := Keys(ctx, kv, ">")
		if err != nil {
			return nil, fmt.Errorf("sweep orphans: %w", err)
		}
		for _, k := range keys {
			project, ok := ProjectOfKey(b, k)
			if !ok || live[project] {
				continue
			}
			e, err := kv.Get(ctx, k)
			if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("sweep orphans: get %s %s: %w", b, k, err)
			}
			if !e.Created().Before(before) {
				continue
			}
			if err := purge(ctx, kv, k); err != nil {
				return nil, fmt.Errorf("sweep orphans: %w", err)
			}
			swept[project] = true
		}
	}
	out := make([]string, 0, len(swept))
	for p := range swept {
		out = append(out, p)
	}
	slices.Sort(out)
	return out, nil
}
