package model

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"text/template"
)

// NotificationEvent names what a subscription is notified of.
type NotificationEvent string

// Notification events. The first three carry the name of the event they
// come from (pkg/events); the others are derived: VerificationFailed from a
// StageVerified that ended Failed or Error, Rollback from the request of a
// Promotion that auto-rollback made.
const (
	NotifyPromotionSucceeded NotificationEvent = "PromotionSucceeded"
	NotifyPromotionFailed    NotificationEvent = "PromotionFailed"
	NotifyFreightDiscovered  NotificationEvent = "FreightDiscovered"
	NotifyVerificationFailed NotificationEvent = "VerificationFailed"
	NotifyRollback           NotificationEvent = "Rollback"
	NotifyWindowOpened       NotificationEvent = "WindowOpened"
)

// NotificationEvents lists every event a subscription may name.
var NotificationEvents = []NotificationEvent{NotifyPromotionSucceeded, NotifyPromotionFailed, NotifyFreightDiscovered, NotifyVerificationFailed, NotifyRollback, NotifyWindowOpened}

// DefaultNotificationAttempts is how many times a notification is tried
// before it is dead-lettered, unless a subscription says otherwise.
const DefaultNotificationAttempts = 5

// NotificationSubscription sends a project's events of the named types to
// one receiver: exactly one of cloudEvents, slack or webhook is set
// (Caravan addition).
type NotificationSubscription struct {
	// Name identifies the subscription in delivery records (a DNS label).
	Name string `json:"name"`
	// Events are the events sent (at least one).
	Events []NotificationEvent `json:"events"`
	// CloudEvents posts a CloudEvent (JSON, HTTP binding).
	CloudEvents *CloudEventsTarget `json:"cloudEvents,omitempty"`
	// Slack posts {"text": message} to a Slack-compatible incoming webhook.
	Slack *SlackTarget `json:"slack,omitempty"`
	// Webhook posts the event as JSON, signed with HMAC-SHA256.
	Webhook *WebhookTarget `json:"webhook,omitempty"`
	// Template is the message text: a Go text/template over the event
	// (empty: a one-line default per event).
	Template string `json:"template,omitempty"`
	// MaxAttempts is how many times a notification is tried before it is
	// dead-lettered (default 5, at most 20).
	MaxAttempts int `json:"maxAttempts,omitempty"`
}

// CloudEventsTarget is an HTTP receiver of CloudEvents.
type CloudEventsTarget struct {
	URL string `json:"url"`
	// Mode is the HTTP binding's content mode: structured (default) or
	// binary.
	Mode string `json:"mode,omitempty"`
	// SecretRef, when set, names a Secret whose key "secret" signs each
	// request (X-Caravan-Signature-256).
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
}

// SlackTarget is a Slack-compatible incoming webhook. Its URL is a secret
// itself: give it as url, or as the key "url" of the Secret secretRef names.
type SlackTarget struct {
	URL       string                `json:"url,omitempty"`
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
}

// WebhookTarget is a generic webhook; the key "secret" of the Secret
// secretRef names signs each request (X-Caravan-Signature-256).
type WebhookTarget struct {
	URL       string               `json:"url"`
	SecretRef LocalObjectReference `json:"secretRef"`
}

// Kinds of notification targets.
const (
	TargetCloudEvents = "cloudEvents"
	TargetSlack       = "slack"
	TargetWebhook     = "webhook"
)

// Target returns the kind of target set on the subscription ("" when none
// or several are).
func (n *NotificationSubscription) Target() string {
	var kinds []string
	if n.CloudEvents != nil {
		kinds = append(kinds, TargetCloudEvents)
	}
	if n.Slack != nil {
		kinds = append(kinds, TargetSlack)
	}
	if n.Webhook != nil {
		kinds = append(kinds, TargetWebhook)
	}
	if len(kinds) != 1 {
		return ""
	}
	return kinds[0]
}

// Attempts is how many times a notification is tried.
func (n *NotificationSubscription) Attempts() int {
	if n.MaxAttempts > 0 {
		return n.MaxAttempts
	}
	return DefaultNotificationAttempts
}

// Wants says whether the subscription is sent ev.
func (n *NotificationSubscription) Wants(ev NotificationEvent) bool {
	return slices.Contains(n.Events, ev)
}

// NotificationFuncs are the functions a message template may call besides
// text/template's own.
var NotificationFuncs = template.FuncMap{
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
}

// ParseNotificationTemplate parses a subscription's message template.
func ParseNotificationTemplate(name, text string) (*template.Template, error) {
	return template.New(name).Funcs(NotificationFuncs).Option("missingkey=zero").Parse(text)
}

func (v *validator) notifications(subs []NotificationSubscription) {
	names := map[string]bool{}
	for i, n := range subs {
		f := fmt.Sprintf("spec.notifications[%d]", i)
		switch {
		case n.Name == "":
			v.add(f+".name", "must not be empty")
		case len(n.Name) > 63 || !dnsLabel.MatchString(n.Name):
			v.add(f+".name", "%q is not a valid name: lower-case letters, digits and '-', at most 63 characters", n.Name)
		case names[n.Name]:
			v.add(f+".name", "duplicate subscription name %q", n.Name)
		}
		names[n.Name] = true
		if len(n.Events) == 0 {
			v.add(f+".events", "must name at least one event")
		}
		for j, ev := range n.Events {
			if !slices.Contains(NotificationEvents, ev) {
				v.add(fmt.Sprintf("%s.events[%d]", f, j), "unknown event %q: one of %s", ev, joinEvents(NotificationEvents))
			}
		}
		if n.Target() == "" {
			v.add(f, "exactly one of cloudEvents, slack or webhook must be set")
		}
		if n.CloudEvents != nil {
			v.notifyURL(f+".cloudEvents.url", n.CloudEvents.URL, false)
			if n.CloudEvents.Mode != "" && n.CloudEvents.Mode != "structured" && n.CloudEvents.Mode != "binary" {
				v.add(f+".cloudEvents.mode", "must be structured or binary, got %q", n.CloudEvents.Mode)
			}
			if n.CloudEvents.SecretRef != nil && n.CloudEvents.SecretRef.Name == "" {
				v.add(f+".cloudEvents.secretRef.name", "must not be empty")
			}
		}
		if n.Slack != nil {
			if (n.Slack.URL == "") == (n.Slack.SecretRef == nil) {
				v.add(f+".slack", "exactly one of url or secretRef must be set")
			}
			v.notifyURL(f+".slack.url", n.Slack.URL, true)
			if n.Slack.SecretRef != nil && n.Slack.SecretRef.Name == "" {
				v.add(f+".slack.secretRef.name", "must not be empty")
			}
		}
		if n.Webhook != nil {
			v.notifyURL(f+".webhook.url", n.Webhook.URL, false)
			if n.Webhook.SecretRef.Name == "" {
				v.add(f+".webhook.secretRef.name", "must not be empty: generic webhooks are always signed")
			}
		}
		if _, err := ParseNotificationTemplate(n.Name, n.Template); err != nil {
			v.add(f+".template", "%v", err)
		}
		if n.MaxAttempts < 0 || n.MaxAttempts > 20 {
			v.add(f+".maxAttempts", "must be between 1 and 20, got %d", n.MaxAttempts)
		}
	}
}

func (v *validator) notifyURL(f, raw string, allowEmpty bool) {
	if raw == "" {
		if !allowEmpty {
			v.add(f, "must not be empty")
		}
		return
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(f, "must be an absolute http or https URL")
	}
}

func joinEvents(evs []NotificationEvent) string {
	s := make([]string, len(evs))
	for i, e := range evs {
		s[i] = string(e)
	}
	return strings.Join(s, ", ")
}
