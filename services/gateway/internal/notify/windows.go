package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/state"
)

// TypeWindowOpened is the type of the envelope a WindowOpened
// notification is made from: promotion windows publish no event, so the
// sender derives it from the stored windows.
const TypeWindowOpened events.Type = "WindowOpened"

// windowState is what the sender last saw of a stage's windows (key
// window.<project>.<stage>).
type windowState struct {
	Closed bool   `json:"closed"`
	Reason string `json:"reason,omitempty"`
	// Since is when the stage was first seen in this state.
	Since time.Time `json:"since"`
}

// WindowOpened is the payload of a derived WindowOpened envelope.
type WindowOpened struct {
	Stage string `json:"stage"`
	// Reason is why the stage was closed.
	Reason    string      `json:"reason,omitempty"`
	NextClose *model.Time `json:"nextClose,omitempty"`
}

// windows looks at the promotion windows of the stages of every project
// with a WindowOpened subscription and records a notification for each
// stage that was closed at the last look and is open now. It is
// level-triggered: the state of each stage is in the bucket, so a restart
// (or another replica) goes on from it; the notification's id is derived
// from the stage and the time the window was seen to open, and recording it
// is a create, so two replicas record it once.
func (n *Notifier) windows(ctx context.Context) error {
	projects, err := n.o.Store.Projects(ctx)
	if err != nil {
		return err
	}
	for _, project := range projects {
		if err := n.projectWindows(ctx, project); err != nil {
			return fmt.Errorf("project %q: %w", project, err)
		}
	}
	return nil
}

func (n *Notifier) projectWindows(ctx context.Context, project string) error {
	pol, err := state.LoadPolicies(ctx, n.o.Store, project)
	if err != nil || pol.Config == nil {
		return err
	}
	wanted := false
	for i := range pol.Config.Spec.Notifications {
		wanted = wanted || pol.Config.Spec.Notifications[i].Wants(model.NotifyWindowOpened)
	}
	if !wanted {
		return nil
	}
	stages, err := state.ListAll[*model.Stage](ctx, n.o.Store, project, model.KindStage)
	if err != nil {
		return err
	}
	now := n.o.Now().UTC()
	for _, st := range stages {
		ws := model.WindowStatus(pol.Windows(st), now)
		cur := windowState{Since: now}
		if ws != nil {
			cur.Closed, cur.Reason = ws.Closed, ws.Reason
		}
		var prev windowState
		var seen bool
		k := "window." + state.Token(project) + "." + state.Token(st.Name)
		if _, _, err := state.Update(ctx, n.kv, k, func(old windowState, exists bool) (windowState, error) {
			prev, seen = old, exists
			if exists && old.Closed == cur.Closed {
				return old, state.ErrNoChange
			}
			return cur, nil
		}); err != nil {
			return fmt.Errorf("record windows of stage %q: %w", st.Name, err)
		}
		if !seen || !prev.Closed || cur.Closed {
			continue
		}
		ev := WindowOpened{Stage: st.Name, Reason: prev.Reason}
		if ws != nil {
			ev.NextClose = ws.NextClose
		}
		payload, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		env := events.Envelope{
			ID: fmt.Sprintf("window-%s-%d", state.Token(st.Name), now.Unix()), Type: TypeWindowOpened, Version: 1, Time: now,
			Source: "gateway", Project: project, Subject: events.Ref{Kind: model.KindStage, Name: st.Name}, Payload: payload,
		}
		if err := n.record(ctx, pol.Config, model.NotifyWindowOpened, env, ""); err != nil {
			return err
		}
	}
	return nil
}
