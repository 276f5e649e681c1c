package autopromote

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Work runs evaluations in the background, partitioned by project: each
// project has its own queue, worked in order by one goroutine at a time,
// and at most a fixed number of projects are worked at once, so a project
// with a burst of events delays others by one task at most, never by its
// whole queue.
//
// A task is named by a key: one added while a task of the same key waits
// is dropped (it would do the same work, as it reads the state when it
// runs); one added while it runs runs again afterwards. A task that fails
// is tried again with a growing delay, up to maxAttempts times; the
// reconcile pass (Pass) stays the backstop of a task given up or lost
// with the process.
type Work struct {
	log *slog.Logger
	sem chan struct{}

	mu       sync.Mutex
	projects map[string]*projectWork
	wg       sync.WaitGroup
}

type projectWork struct {
	queue   []task
	pending map[string]bool
	active  bool
}

type task struct {
	ctx     context.Context // the event's: its trace, and the service's end
	key     string
	run     func(context.Context) error
	attempt int
}

// Retries of a failed task.
const (
	maxAttempts  = 10
	retryBackoff = 500 * time.Millisecond
	maxBackoff   = 30 * time.Second
)

// NewWork returns a Work that works at most workers projects at once.
func NewWork(workers int, log *slog.Logger) *Work {
	return &Work{log: log, sem: make(chan struct{}, max(workers, 1)), projects: map[string]*projectWork{}}
}

// Add queues run under key on the project's queue. It never blocks;
// the task runs with ctx (ended: the task is dropped).
func (w *Work) Add(ctx context.Context, project, key string, run func(context.Context) error) {
	w.add(project, task{ctx: ctx, key: key, run: run})
}

func (w *Work) add(project string, t task) {
	if t.ctx.Err() != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	pw := w.projects[project]
	if pw == nil {
		pw = &projectWork{pending: map[string]bool{}}
		w.projects[project] = pw
	}
	if pw.pending[t.key] {
		return
	}
	pw.pending[t.key] = true
	pw.queue = append(pw.queue, t)
	if !pw.active {
		pw.active = true
		w.wg.Add(1)
		go w.drain(project, pw)
	}
}

// drain works a project's queue until it is empty.
func (w *Work) drain(project string, pw *projectWork) {
	defer w.wg.Done()
	for {
		w.mu.Lock()
		if len(pw.queue) == 0 {
			pw.active = false
			if w.projects[project] == pw {
				delete(w.projects, project)
			}
			w.mu.Unlock()
			return
		}
		t := pw.queue[0]
		pw.queue[0] = task{}
		pw.queue = pw.queue[1:]
		delete(pw.pending, t.key)
		w.mu.Unlock()

		ctx := t.ctx
		if ctx.Err() != nil {
			continue // stopping: dropped
		}
		select {
		case w.sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		err := t.run(ctx)
		<-w.sem
		if err == nil || ctx.Err() != nil {
			continue
		}
		t.attempt++
		if t.attempt >= maxAttempts {
			w.log.Warn("auto-promotion: giving up until the next reconcile pass", "project", project, "task", t.key, "attempts", t.attempt, "err", err)
			continue
		}
		w.log.Debug("auto-promotion: retrying", "project", project, "task", t.key, "attempt", t.attempt, "err", err)
		delay := min(retryBackoff<<(t.attempt-1), maxBackoff)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			timer := time.NewTimer(delay)
			defer timer.Stop()
			select {
			case <-ctx.Done():
			case <-timer.C:
				w.add(project, t)
			}
		}()
	}
}

// Wait waits until every queue is empty (once the tasks' ctx ended, they
// are dropped) and every retry is queued or dropped.
func (w *Work) Wait() {
	w.wg.Wait()
}
