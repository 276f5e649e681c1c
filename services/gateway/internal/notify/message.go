package notify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
)

// Message is what a subscription's template is executed over: the
// notification's event and the usual fields of its payload, each empty
// when the event has none.
type Message struct {
	// Type is the notification event (PromotionSucceeded, Rollback, …).
	Type model.NotificationEvent
	// ID is the id of the event the notification comes from.
	ID      string
	Project string
	Subject events.Ref
	Time    time.Time
	// Stage, Freight, Promotion, Alias, Phase and Message come from the
	// event's payload; Origin is "Kind/name" of discovered freight; Reason
	// is why a rollback was made.
	Stage, Freight, Promotion, Alias, Phase, Message, Origin, Reason string
	// Payload is the whole event payload.
	Payload map[string]any
}

// defaults are the message templates of subscriptions that set none.
var defaults = map[model.NotificationEvent]string{
	model.NotifyPromotionSucceeded: `[{{.Project}}] promotion {{.Promotion}} of freight {{or .Alias .Freight}} into {{.Stage}} succeeded`,
	model.NotifyPromotionFailed:    `[{{.Project}}] promotion {{.Promotion}} into {{.Stage}} ended {{.Phase}}{{with .Message}}: {{.}}{{end}}`,
	model.NotifyVerificationFailed: `[{{.Project}}] verification of {{.Stage}} (freight {{.Freight}}) ended {{.Phase}}{{with .Message}}: {{.}}{{end}}`,
	model.NotifyFreightDiscovered:  `[{{.Project}}] new freight {{.Freight}}{{with .Alias}} ({{.}}){{end}} from {{.Origin}}`,
	model.NotifyWindowOpened:       `[{{.Project}}] promotion windows of {{.Stage}} opened{{with .Reason}} (was closed: {{.}}){{end}}`,
	model.NotifyRollback:           `[{{.Project}}] rolling {{.Stage}} back to freight {{.Freight}} ({{.Promotion}}){{with .Reason}}: {{.}}{{end}}`,
}

// newMessage builds the message of event ev from env.
func newMessage(ev model.NotificationEvent, env events.Envelope, reason string) Message {
	m := Message{Type: ev, ID: env.ID, Project: env.Project, Subject: env.Subject, Time: env.Time, Reason: reason}
	_ = json.Unmarshal(env.Payload, &m.Payload)
	str := func(k string) string {
		s, _ := m.Payload[k].(string)
		return s
	}
	m.Stage, m.Freight, m.Promotion, m.Alias, m.Phase, m.Message = str("stage"), str("freight"), str("promotion"), str("alias"), str("phase"), str("message")
	if o, ok := m.Payload["origin"].(map[string]any); ok {
		m.Origin = fmt.Sprintf("%v/%v", o["kind"], o["name"])
	}
	if m.Reason == "" {
		m.Reason = str("reason")
	}
	if ev == model.NotifyVerificationFailed && m.Message == "" {
		m.Message = str("summary")
	}
	return m
}

// render executes the subscription's template (or the event's default)
// over m.
func render(sub *model.NotificationSubscription, m Message) (string, error) {
	text := sub.Template
	if text == "" {
		text = defaults[m.Type]
	}
	t, err := model.ParseNotificationTemplate(sub.Name, text)
	if err != nil {
		return "", fmt.Errorf("parse template: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, m); err != nil {
		return "", fmt.Errorf("execute template: %w", err)
	}
	return b.String(), nil
}
