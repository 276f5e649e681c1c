package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/client"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

func (a *app) newWatch() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Show the project's events as they happen",
		Long: `Show the project's events as they happen: discovery, promotions and their
steps, verification. -o json prints each event's envelope on one line.
Reconnects (resuming where it stopped) if the connection drops; stop it with
Ctrl-C.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != formatTable && output != formatJSON {
				return usagef("-o %q: want table or json", output)
			}
			c, project, err := a.projectClient()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			lastID := ""
			backoff := time.Second
			for {
				s, err := c.Events(ctx, project, lastID)
				if err != nil {
					var apiErr *client.Error
					if errors.As(err, &apiErr) || ctx.Err() != nil {
						return ignoreCancel(ctx, err)
					}
					fmt.Fprintf(a.errOut, "watch: %v; retrying in %s\n", err, backoff)
					if !sleep(ctx, backoff) {
						return nil
					}
					backoff = min(2*backoff, 30*time.Second)
					continue
				}
				backoff = time.Second
				readErr := a.printEvents(s, out, output)
				lastID = s.LastID()
				_ = s.Close()
				if ctx.Err() != nil {
					return nil //nolint:nilerr // Ctrl-C: a normal end
				}
				if !errors.Is(readErr, io.EOF) {
					fmt.Fprintf(a.errOut, "watch: %v; reconnecting\n", readErr)
				}
				if !sleep(ctx, backoff) {
					return nil
				}
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", formatTable, "output format: table (one line per event) or json")
	return cmd
}

func (a *app) printEvents(s *client.Stream, out io.Writer, format string) error {
	for {
		ev, err := s.Next()
		if err != nil {
			return err
		}
		if format == formatJSON {
			b, err := json.Marshal(ev.Envelope)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s\n", b)
			continue
		}
		fmt.Fprintln(out, describeEvent(ev))
	}
}

// describeEvent is one line: time, type, subject, then the payload's fields.
func describeEvent(ev client.Event) string {
	env := ev.Envelope
	when := env.Time.Local().Format("15:04:05")
	subject := env.Subject.Kind + "/" + env.Subject.Name
	var fields map[string]any
	_ = json.Unmarshal(env.Payload, &fields)
	keys := make([]string, 0, len(fields))
	for k, v := range fields {
		if s, ok := v.(string); ok && (s == "" || s == env.Subject.Name) {
			continue
		}
		if k == "startedAt" || k == "finishedAt" {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-28s %s", when, ev.Type, subject)
	for _, k := range keys {
		v := fields[k]
		switch x := v.(type) {
		case string:
			if strings.ContainsAny(x, " \t\"") {
				fmt.Fprintf(&b, " %s=%q", k, x)
			} else {
				fmt.Fprintf(&b, " %s=%s", k, x)
			}
		default:
			j, _ := json.Marshal(x)
			fmt.Fprintf(&b, " %s=%s", k, j)
		}
	}
	return b.String()
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ignoreCancel drops err when ctx was cancelled (Ctrl-C is a normal end).
func ignoreCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil //nolint:nilerr // see above
	}
	return err
}

// waiter follows one promotion: from the event stream when the server has
// one, and by reading the promotion now and then in any case, so that a
// missed event (or a server without the stream) only delays the answer.
type waiter struct {
	a       *app
	c       *client.Client
	project string
	stream  *client.Stream
	events  chan client.Event
	// PollInterval is how often the promotion is read.
	poll    time.Duration
	printed map[int]bool
	tty     bool
}

func (a *app) newWaiter(ctx context.Context, c *client.Client, project string) *waiter {
	w := &waiter{a: a, c: c, project: project, poll: 2 * time.Second, printed: map[int]bool{}, tty: isTerminal(a.out)}
	s, err := c.Events(ctx, project, "")
	if err != nil {
		// No stream (an older server, a proxy): polling alone still works.
		w.poll = time.Second
		return w
	}
	w.stream = s
	w.events = make(chan client.Event, 64)
	go func() {
		defer close(w.events)
		for {
			ev, err := s.Next()
			if err != nil {
				return
			}
			select {
			case w.events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return w
}

func (w *waiter) close() {
	if w.stream != nil {
		_ = w.stream.Close()
	}
}

// wait follows p until it ends; it returns an error naming the failing
// step when the promotion did not succeed.
func (w *waiter) wait(ctx context.Context, out io.Writer, p *model.Promotion) error {
	name := p.Name
	fmt.Fprintf(out, "Waiting for promotion %s of stage %s to freight %s …\n", name, p.Spec.Stage, short(p.Spec.Freight))
	tick := time.NewTicker(w.poll)
	defer tick.Stop()
	var failedStep *events.PromotionStepFinished
	evs := w.events
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting; promotion %s continues (caravan get promotion %s -p %s)", name, name, w.project)
		case ev, ok := <-evs:
			if !ok {
				evs = nil // stream gone: keep polling
				continue
			}
			if !aboutPromotion(ev, name) {
				continue
			}
			switch ev.Type {
			case string(events.TypePromotionStarted):
				fmt.Fprintf(out, "Promotion %s started\n", name)
			case string(events.TypePromotionStepFinished):
				var sf events.PromotionStepFinished
				if ev.Decode(&sf) == nil {
					w.printStep(out, sf)
					if isFailure(sf.Status) {
						failedStep = &sf
					}
				}
			case string(events.TypePromotionSucceeded):
				w.succeeded(out, name)
				return nil
			case string(events.TypePromotionFailed):
				var pf events.PromotionFailed
				_ = ev.Decode(&pf)
				return w.failed(ctx, out, name, pf.Phase, pf.Message, failedStep)
			}
		case <-tick.C:
			cur, err := w.c.Promotion(ctx, w.project, name)
			if err != nil {
				if ctx.Err() != nil {
					continue
				}
				fmt.Fprintf(w.a.errOut, "Warning: read promotion: %v\n", err)
				continue
			}
			if !cur.Status.Phase.IsTerminal() {
				continue
			}
			// The stream may lag or be absent: report from the stored status.
			w.printStored(out, cur)
			if cur.Status.Phase == model.PromotionPhaseSucceeded {
				w.succeeded(out, name)
				return nil
			}
			return w.failed(ctx, out, name, string(cur.Status.Phase), cur.Status.Message, failedStep)
		}
	}
}

func aboutPromotion(ev client.Event, name string) bool {
	var ref struct {
		Promotion string `json:"promotion"`
	}
	if json.Unmarshal(ev.Envelope.Payload, &ref) != nil {
		return false
	}
	return ref.Promotion == name
}

func isFailure(status string) bool {
	switch model.PromotionStepStatus(status) {
	case model.PromotionStepStatusFailed, model.PromotionStepStatusErrored, model.PromotionStepStatusAborted:
		return true
	}
	return false
}

func (w *waiter) printStep(out io.Writer, sf events.PromotionStepFinished) {
	if w.printed[sf.Step] {
		return
	}
	w.printed[sf.Step] = true
	name := firstOf(sf.Alias, fmt.Sprintf("step-%d", sf.Step))
	uses := ""
	if sf.Uses != "" && sf.Uses != name {
		uses = " (" + sf.Uses + ")"
	}
	dur := ""
	if !sf.StartedAt.IsZero() && !sf.FinishedAt.IsZero() {
		// Stored times have whole seconds: a quick step shows as <1s.
		if d := sf.FinishedAt.Sub(sf.StartedAt).Round(time.Millisecond); d > 0 {
			dur = " in " + d.String()
		} else {
			dur = " in <1s"
		}
	}
	mark := ""
	if w.tty {
		mark = "✓ "
		if isFailure(sf.Status) {
			mark = "✗ "
		} else if sf.Status == string(model.PromotionStepStatusSkipped) {
			mark = "- "
		}
	}
	fmt.Fprintf(out, "  %s%s%s: %s%s\n", mark, name, uses, sf.Status, dur)
	if sf.Message != "" && isFailure(sf.Status) {
		fmt.Fprintf(out, "      %s\n", sf.Message)
	}
}

// printStored prints the steps of the stored status not printed yet.
func (w *waiter) printStored(out io.Writer, p *model.Promotion) {
	for i, m := range p.Status.StepExecutionMetadata {
		sf := events.PromotionStepFinished{Promotion: p.Name, Step: i, Alias: m.Alias, Status: string(m.Status), Message: m.Message}
		if i < len(p.Spec.Steps) {
			sf.Uses = p.Spec.Steps[i].Uses
		}
		if m.StartedAt != nil {
			sf.StartedAt = m.StartedAt.Time
		}
		if m.FinishedAt != nil {
			sf.FinishedAt = m.FinishedAt.Time
		}
		if sf.Status == "" || sf.Status == string(model.PromotionStepStatusRunning) {
			continue
		}
		w.printStep(out, sf)
	}
}

func (w *waiter) succeeded(out io.Writer, name string) {
	fmt.Fprintf(out, "Promotion %s succeeded\n", name)
}

// failed builds the error of a failed promotion, naming the failing step
// and its message (from the event, or else from the stored promotion).
func (w *waiter) failed(ctx context.Context, out io.Writer, name, phase, message string, step *events.PromotionStepFinished) error {
	if step == nil {
		if p, err := w.c.Promotion(ctx, w.project, name); err == nil {
			w.printStored(out, p)
			for i, m := range p.Status.StepExecutionMetadata {
				if isFailure(string(m.Status)) {
					step = &events.PromotionStepFinished{Step: i, Alias: m.Alias, Status: string(m.Status), Message: m.Message}
				}
			}
			message = firstOf(message, p.Status.Message)
			phase = firstOf(phase, string(p.Status.Phase))
		}
	}
	phase = firstOf(phase, string(model.PromotionPhaseFailed))
	if step != nil {
		return fmt.Errorf("promotion %s %s at step %s: %s", name, strings.ToLower(phase),
			firstOf(step.Alias, fmt.Sprintf("step-%d", step.Step)), firstOf(step.Message, message, step.Status))
	}
	return fmt.Errorf("promotion %s %s: %s", name, strings.ToLower(phase), firstOf(message, "no message"))
}
