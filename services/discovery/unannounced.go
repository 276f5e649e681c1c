package discovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// unannouncedToken starts the key of a marker written to the discovery
// leases bucket before a Freight is created and deleted once its
// FreightDiscovered is published and marked: "_unannounced.<project>.<freight>".
// Three tokens, so the lease watch ("*.*") never sees it.
//
// A run that stops between creating a Freight and marking it announced
// republishes it on its next run only while that Freight is still the
// Warehouse's newest; after a burst of pushes it is not, and nothing else
// would announce it. The reconcile pass (sweepUnannounced) finds the
// markers such runs left and finishes their announcement.
const unannouncedToken = "_unannounced"

func unannouncedKey(project, freight string) string {
	return unannouncedToken + "." + project + "." + freight
}

// markUnannounced records that f is about to be created and announced.
func (d *discoverer) markUnannounced(ctx context.Context, f *model.Freight) error {
	if _, err := d.store.KV(state.DiscoveryLeases).Put(ctx, unannouncedKey(f.Namespace, f.Name), nil); err != nil {
		return fmt.Errorf("mark freight %s/%s unannounced: %w", f.Namespace, f.Name, err)
	}
	return nil
}

// clearUnannounced removes f's marker once f is marked announced.
func (d *discoverer) clearUnannounced(ctx context.Context, project, freight string) error {
	if err := d.store.KV(state.DiscoveryLeases).Delete(ctx, unannouncedKey(project, freight)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("clear unannounced mark of freight %s/%s: %w", project, freight, err)
	}
	return nil
}

// sweepUnannounced announces the Freight whose markers are older than
// grace (their run stopped or failed before it marked them): it publishes
// FreightDiscovered with the Freight's deterministic event ID (a repeat is
// dropped by the stream) unless the Freight is marked already, and clears
// the marker. A marker of a Freight that was never created is cleared.
// Every replica may sweep: the outcome is the same whoever does it.
func (d *discoverer) sweepUnannounced(ctx context.Context, grace time.Duration) error {
	kv := d.store.KV(state.DiscoveryLeases)
	lister, err := kv.ListKeysFiltered(ctx, unannouncedToken+".>")
	if err != nil {
		return fmt.Errorf("list unannounced freight: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	var errs []error
	for _, k := range keys {
		parts := strings.SplitN(k, ".", 3)
		if len(parts) != 3 {
			continue
		}
		project, name := parts[1], parts[2]
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if d.now().Sub(e.Created()) < grace {
			continue // its run may still be working on it
		}
		f, _, err := state.Get[model.Freight](ctx, d.store.KV(state.Freight), state.Key(project, name))
		switch {
		case errors.Is(err, state.ErrNotFound):
		case err != nil:
			errs = append(errs, err)
			continue
		case f.Annotations[AnnouncedAnnotation] == "":
			if err := d.publish(ctx, &f); err != nil {
				errs = append(errs, fmt.Errorf("announce freight %s/%s: %w", project, name, err))
				continue
			}
		}
		if err := d.clearUnannounced(ctx, project, name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
