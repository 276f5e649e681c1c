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
steps, verification, auto-promotion holds. Freight is shown by its alias.
-o json prints each event's envelope on one line.

It says on stderr when it is connected; if the connection drops or the
server shuts down, it says so, reconnects and resumes where it stopped.
Stop it with Ctrl-C.`,
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
			p := &eventPrinter{out: out, format: output, project: project, aliases: map[string]string{}}
			lastID := ""
			backoff := time.Second
			connected := false
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
				p.loadAliases(ctx, c)
				if !connected {
					fmt.Fprintf(a.errOut, "Watching the events of project %s on %s (Ctrl-C to stop)\n", project, c.Server())
				} else {
					fmt.Fprintf(a.errOut, "watch: reconnected to %s%s\n", c.Server(), resumeNote(lastID))
				}
				connected = true
				backoff = time.Second
				readErr := p.print(s)
				lastID = s.LastID()
				_ = s.Close()
				if ctx.Err() != nil {
					return nil //nolint:nilerr // Ctrl-C: a normal end
				}
				switch {
				case errors.Is(readErr, client.ErrShutdown):
					fmt.Fprintf(a.errOut, "watch: the server is shutting down; reconnecting\n")
				case errors.Is(readErr, io.EOF):
					fmt.Fprintf(a.errOut, "watch: the server ended the stream; reconnecting\n")
				default:
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

func resumeNote(lastID string) string {
	if lastID == "" {
		return ""
	}
	return "; resuming after event " + lastID
}

// eventPrinter prints events, naming freight by alias.
type eventPrinter struct {
	out     io.Writer
	format  string
	project string
	// aliases maps freight IDs to aliases: listed at each (re)connection,
	// learnt from FreightDiscovered and FreightUpdated since.
	aliases map[string]string
}

// loadAliases lists the project's freight; a failure leaves IDs shown
// shortened.
func (p *eventPrinter) loadAliases(ctx context.Context, c *client.Client) {
	items, err := c.List(ctx, client.ProjectPath(p.project, "freight"), nil)
	if err != nil {
		return
	}
	fs, err := decodeAll[model.Freight](items)
	if err != nil {
		return
	}
	for _, f := range fs {
		if f.Alias != "" {
			p.aliases[f.Name] = f.Alias
		}
	}
}

func (p *eventPrinter) print(s *client.Stream) error {
	for {
		ev, err := s.Next()
		if err != nil {
			return err
		}
		p.learn(ev)
		if p.format == formatJSON {
			b, err := json.Marshal(ev.Envelope)
			if err != nil {
				return err
			}
			fmt.Fprintf(p.out, "%s\n", b)
			continue
		}
		fmt.Fprintln(p.out, describeEvent(ev, p.aliases, p.project))
	}
}

// learn records the alias an event names.
func (p *eventPrinter) learn(ev client.Event) {
	var f struct {
		Freight string `json:"freight"`
		Alias   string `json:"alias"`
	}
	if ev.Type != string(events.TypeFreightDiscovered) && ev.Type != string(events.TypeFreightUpdated) {
		return
	}
	if json.Unmarshal(ev.Envelope.Payload, &f) == nil && f.Freight != "" && f.Alias != "" {
		p.aliases[f.Freight] = f.Alias
	}
}

// describeEvent is one line: time, type, subject, then the payload's
// fields, with freight named by alias (or a short ID).
func describeEvent(ev client.Event, aliases map[string]string, project string) string {
	env := ev.Envelope
	when := env.Time.Local().Format("15:04:05")
	name := env.Subject.Name
	if env.Subject.Kind == "Freight" {
		name = freightName(name, aliases)
	}
	subject := env.Subject.Kind + "/" + name
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
		if k == "alias" && env.Subject.Kind == "Freight" && aliases[env.Subject.Name] == v {
			continue // the subject shows it
		}
		if f, ok := v.(string); ok && k == "freight" {
			fields[k] = freightName(f, aliases)
		}
		if o, ok := v.(map[string]any); ok && k == "origin" && o["kind"] != nil && o["name"] != nil {
			fields[k] = fmt.Sprintf("%v/%v", o["kind"], o["name"])
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
	if ev.Type == string(events.TypeAutoPromotionHeld) {
		fmt.Fprintf(&b, "  → auto-promotion of %s is held; lift it: caravan resume stage %s -p %s", env.Subject.Name, env.Subject.Name, project)
	}
	return b.String()
}

// freightName is a freight's alias when known, else its ID shortened.
func freightName(id string, aliases map[string]string) string {
	if a := aliases[id]; a != "" {
		return a
	}
	return short(id)
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
	// total is the number of steps, tasks inflated (0: not known yet).
	total int
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
	freight := short(p.Spec.Freight)
	if f, err := w.c.Freight(ctx, w.project, p.Spec.Freight); err == nil && f.Alias != "" {
		freight = f.Alias
	}
	fmt.Fprintf(out, "Waiting for promotion %s of stage %s to freight %s …\n", name, p.Spec.Stage, freight)
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
					if w.total == 0 {
						w.learnTotal(ctx, name)
					}
					w.printStep(out, sf)
					if isFailure(sf.Status) {
						failedStep = &sf
					}
				}
			case string(events.TypePromotionSucceeded):
				w.succeeded(ctx, out, name, nil)
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
				w.succeeded(ctx, out, name, cur)
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

// learnTotal reads how many steps the promotion runs (tasks inflated).
func (w *waiter) learnTotal(ctx context.Context, name string) {
	if p, err := w.c.Promotion(ctx, w.project, name); err == nil {
		w.total = stepTotal(p)
	}
}

// stepTotal is the number of steps of p with tasks inflated, once the
// promoter started it (the spec's steps before).
func stepTotal(p *model.Promotion) int {
	return max(len(p.Status.StepExecutionMetadata), len(p.Spec.Steps))
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
	counter := fmt.Sprintf("[%d] ", sf.Step+1)
	if w.total > 0 {
		counter = fmt.Sprintf("[%d/%d] ", sf.Step+1, max(w.total, sf.Step+1))
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
	fmt.Fprintf(out, "  %s%s%s%s: %s%s\n", mark, counter, name, uses, sf.Status, dur)
	if sf.Message != "" && isFailure(sf.Status) {
		fmt.Fprintf(out, "      %s\n", sf.Message)
	}
}

// printStored prints the steps of the stored status not printed yet.
func (w *waiter) printStored(out io.Writer, p *model.Promotion) {
	w.total = stepTotal(p)
	for i, m := range p.Status.StepExecutionMetadata {
		sf := events.PromotionStepFinished{Promotion: p.Name, Step: i, Alias: m.Alias, Uses: m.Uses, Status: string(m.Status), Message: m.Message}
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

// succeeded says so, and whether the promotion held the stage's
// auto-promotion (p: the promotion as read, nil to read it).
func (w *waiter) succeeded(ctx context.Context, out io.Writer, name string, p *model.Promotion) {
	fmt.Fprintf(out, "Promotion %s succeeded\n", name)
	if p == nil {
		var err error
		if p, err = w.c.Promotion(ctx, w.project, name); err != nil {
			return
		}
	}
	if h := p.Status.AutoPromotionHold; h != nil {
		fmt.Fprintf(out, "Auto-promotion of stage %s from %s is now held: %s.\nLift the hold with: caravan resume stage %s -p %s\n",
			p.Spec.Stage, h.Origin, h.Reason, p.Spec.Stage, w.project)
	}
}

// failed builds the error of a failed promotion, naming the failing step
// and its message (from the event, or else from the stored promotion).
func (w *waiter) failed(ctx context.Context, out io.Writer, name, phase, message string, step *events.PromotionStepFinished) error {
	if step == nil {
		if p, err := w.c.Promotion(ctx, w.project, name); err == nil {
			w.printStored(out, p)
			for i, m := range p.Status.StepExecutionMetadata {
				if isFailure(string(m.Status)) && step == nil {
					step = &events.PromotionStepFinished{Step: i, Alias: m.Alias, Uses: m.Uses, Status: string(m.Status), Message: m.Message}
				}
			}
			message = firstOf(message, p.Status.Message)
			phase = firstOf(phase, string(p.Status.Phase))
		}
	}
	phase = firstOf(phase, string(model.PromotionPhaseFailed))
	if step != nil {
		where := firstOf(step.Alias, fmt.Sprintf("step-%d", step.Step))
		if step.Uses != "" && step.Uses != where {
			where += " (" + step.Uses + ")"
		}
		if w.total > 0 {
			where = fmt.Sprintf("%d/%d %s", step.Step+1, max(w.total, step.Step+1), where)
		}
		return fmt.Errorf("promotion %s %s at step %s: %s", name, strings.ToLower(phase), where, firstOf(step.Message, message, step.Status))
	}
	return fmt.Errorf("promotion %s %s: %s", name, strings.ToLower(phase), firstOf(message, "no message"))
}
