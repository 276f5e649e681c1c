package promoter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// Bounds of dry runs on one replica.
const (
	// defaultDryRunTimeout bounds a dry run whose request names none;
	// maxDryRunTimeout bounds any.
	defaultDryRunTimeout = 2 * time.Minute
	maxDryRunTimeout     = 10 * time.Minute
	// maxDryRuns is how many dry runs one replica runs at once; more wait
	// for a slot within their timeout.
	maxDryRuns = 4
)

// dryRunner runs a promotion's steps without effects (the step engine).
type dryRunner interface {
	DryRun(ctx context.Context, p *model.Promotion) (*model.PromotionDryRun, error)
}

// dryRuns answers the dry-run requests of events.DryRunSubject, one
// replica of the queue group each.
type dryRuns struct {
	nc  *nats.Conn
	run dryRunner
	log *slog.Logger
	sem chan struct{}
	wg  sync.WaitGroup
}

// serveDryRuns answers dry-run requests until ctx ends; the returned stop
// unsubscribes and waits for the dry runs under way (ctx must have ended
// for them to end early).
func serveDryRuns(ctx context.Context, nc *nats.Conn, run dryRunner, log *slog.Logger) (stop func(), err error) {
	d := &dryRuns{nc: nc, run: run, log: log, sem: make(chan struct{}, maxDryRuns)}
	sub, err := nc.QueueSubscribe(events.DryRunSubject, events.DryRunQueue, func(m *nats.Msg) {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.answer(ctx, m)
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", events.DryRunSubject, err)
	}
	return func() {
		_ = sub.Unsubscribe()
		d.wg.Wait()
	}, nil
}

func (d *dryRuns) answer(ctx context.Context, m *nats.Msg) {
	var req events.DryRunRequest
	reply := events.DryRunReply{}
	if err := json.Unmarshal(m.Data, &req); err != nil || req.Promotion == nil {
		reply.Error = "bad dry-run request: no promotion"
		d.respond(m, reply)
		return
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = defaultDryRunTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, min(timeout, maxDryRunTimeout))
	defer cancel()
	select {
	case d.sem <- struct{}{}:
		defer func() { <-d.sem }()
	case <-ctx.Done():
		reply.Error = "no dry-run slot free on the promoter before the timeout"
		d.respond(m, reply)
		return
	}
	p := req.Promotion
	res, err := d.run.DryRun(ctx, p)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		reply.Error = fmt.Sprintf("the dry run did not end within %s", min(timeout, maxDryRunTimeout))
	case err != nil:
		d.log.Warn("dry run", "project", p.Namespace, "stage", p.Spec.Stage, "freight", p.Spec.Freight, "err", err)
		reply.Error = "dry run: " + err.Error()
	default:
		reply.Result = res
		d.log.Info("dry run", "project", p.Namespace, "stage", p.Spec.Stage, "freight", p.Spec.Freight, "phase", res.Phase)
	}
	d.respond(m, reply)
}

func (d *dryRuns) respond(m *nats.Msg, reply events.DryRunReply) {
	data, err := json.Marshal(reply)
	if err == nil && int64(len(data)) > d.nc.MaxPayload() {
		data, err = json.Marshal(events.DryRunReply{Error: fmt.Sprintf("the dry run's result (%d bytes) is larger than a NATS message may be (%d)", len(data), d.nc.MaxPayload())})
	}
	if err != nil {
		d.log.Warn("encode dry-run reply", "err", err)
		return
	}
	if err := m.Respond(data); err != nil {
		d.log.Warn("answer dry run", "err", err)
	}
}
