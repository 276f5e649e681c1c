package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// PurgeProject removes every event of project from the event stream, and
// its dead letters, so that a project created again under the same name
// starts without the old one's history: a client resuming an event stream
// with an old Last-Event-ID sees none of it. Durable consumers skip what
// is purged.
func (b *Bus) PurgeProject(ctx context.Context, project string) error {
	if project == "" || project == ClusterProject {
		return errors.New("purge project: no project named")
	}
	stream, err := b.js.Stream(ctx, StreamEvents)
	if err != nil {
		return fmt.Errorf("purge events of project %q: %w", project, err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(ProjectFilter(project))); err != nil {
		return fmt.Errorf("purge events of project %q: %w", project, err)
	}
	kv, err := b.js.KeyValue(ctx, BucketDeadLetters)
	if err != nil {
		return fmt.Errorf("purge dead letters of project %q: %w", project, err)
	}
	lister, err := kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("purge dead letters of project %q: %w", project, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // gone meanwhile
		}
		var d struct {
			Project string `json:"project"`
		}
		if json.Unmarshal(e.Value(), &d) != nil || d.Project != project {
			continue
		}
		if err := kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("purge dead letter %s: %w", k, err)
		}
	}
	return nil
}
