package promoter

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/caravan-cd/caravan/pkg/events"
)

// wakePrefix is the core NATS subject prefix on which every replica takes
// wakes for the promotions waiting for a pull request:
// <prefix>.<project token>.
//
// PullRequestClosed reaches one replica (the durable
// promoter-pull-request-closed is shared), but the promotion waiting for the
// pull request may run on any replica: the replica that takes the event
// passes it on to all of them here. A wake lost on the way (a replica
// reconnecting) costs one poll interval, not the promotion.
const wakePrefix = "caravan.promoter.wake"

// wakeMessage is the data of a wake.
type wakeMessage struct {
	Project string `json:"project"`
	RepoURL string `json:"repoURL"`
}

// waker wakes the promotions of project waiting for a pull request of
// repoURL (the step engine).
type waker interface {
	Wake(project, repoURL string)
}

// pullRequestClosed passes the event on to every replica. Publishing the
// wake again for a redelivered event is harmless.
func (h handlers) pullRequestClosed(ctx context.Context, ev events.PullRequestClosed) error {
	env, _ := events.FromContext(ctx)
	data, err := json.Marshal(wakeMessage{Project: env.Project, RepoURL: ev.RepoURL})
	if err != nil {
		return events.Permanent(err)
	}
	if err := h.nc.Publish(wakePrefix+"."+events.Token(env.Project), data); err != nil {
		return fmt.Errorf("publish wake: %w", err)
	}
	return nil
}

// subscribeWakes hands every replica's wakes to w until the subscription
// is unsubscribed.
func subscribeWakes(nc *nats.Conn, w waker, log *slog.Logger) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(wakePrefix+".*", func(m *nats.Msg) {
		var msg wakeMessage
		if err := json.Unmarshal(m.Data, &msg); err != nil {
			log.Warn("bad wake message", "subject", m.Subject, "err", err)
			return
		}
		w.Wake(msg.Project, msg.RepoURL)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", wakePrefix, err)
	}
	return sub, nil
}
