// Package partition runs the promoter's periodic passes (reconcile,
// control flow) one project at a time per project and several projects at
// once, so that a project with much to do delays the others' backstop by
// nothing more than a worker, never by its whole pass. The event-driven
// evaluations are partitioned the same way by autopromote.Work.
package partition

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Workers is how many projects a pass works at once by default (as many
// as autopromote.Work works for events).
const Workers = 8

// Projects calls fn once for each project, in a goroutine of its own, at
// most workers (Workers when not positive) at once, in the order given as
// workers free up, and returns when every call has returned: the errors
// joined, each naming its project. When ctx ends, projects not started
// yet are skipped and ctx's error is among those returned.
func Projects(ctx context.Context, projects []string, workers int, fn func(ctx context.Context, project string) error) error {
	if workers <= 0 {
		workers = Workers
	}
	sem := make(chan struct{}, workers)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	canceled := func() error {
		wg.Wait()
		return errors.Join(append(errs, ctx.Err())...)
	}
	for _, p := range projects {
		if ctx.Err() != nil {
			return canceled()
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return canceled()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, p); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("project %s: %w", p, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
