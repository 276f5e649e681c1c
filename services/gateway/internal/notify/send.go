package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/caravan-cd/caravan/pkg/egress"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/model"
	"github.com/caravan-cd/caravan/pkg/redact"
	"github.com/caravan-cd/caravan/pkg/state"
)

// Headers of the requests the notifier sends.
const (
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256 of the body,
	// keyed with the subscription's secret.
	HeaderSignature = "X-Caravan-Signature-256"
	// HeaderDelivery is the delivery's id ("<subscription>.<event id>"),
	// the same on every attempt: receivers deduplicate by it.
	HeaderDelivery = "X-Caravan-Delivery"
	// HeaderEvent is the notification event (PromotionSucceeded, …).
	HeaderEvent = "X-Caravan-Event"
)

// SecretKey is the key of a subscription's Secret that signs requests;
// SlackURLKey the key holding a Slack webhook URL.
const (
	SecretKey   = "secret"
	SlackURLKey = "url"
)

// EventTypePrefix prefixes the CloudEvents type of each notification event.
const EventTypePrefix = "dev.caravan."

// result is the outcome of one attempt.
type result struct {
	status    int
	errText   string
	permanent bool
	attempts  int
}

// send makes one attempt at d. Nothing it returns holds a secret.
func (n *Notifier) send(ctx context.Context, d Delivery) result {
	res := result{attempts: model.DefaultNotificationAttempts}
	fail := func(permanent bool, err error) result {
		res.errText, res.permanent = err.Error(), permanent
		return res
	}
	pc, _, err := state.GetAs[*model.ProjectConfig](ctx, n.o.Store, d.Project, model.KindProjectConfig, d.Project)
	if errors.Is(err, state.ErrNotFound) {
		return fail(true, errors.New("the project has no ProjectConfig any more"))
	}
	if err != nil {
		return fail(false, fmt.Errorf("load project config: %w", err))
	}
	i := indexOf(pc.Spec.Notifications, d.Subscription)
	if i < 0 {
		return fail(true, fmt.Errorf("subscription %q was removed", d.Subscription))
	}
	sub := &pc.Spec.Notifications[i]
	res.attempts = sub.Attempts()
	if d.Envelope == nil {
		return fail(true, errors.New("the delivery record holds no event"))
	}
	msg := newMessage(d.Event, *d.Envelope, d.Reason)
	text, err := render(sub, msg)
	if err != nil {
		return fail(true, fmt.Errorf("spec.notifications[%d].template: %w", i, err))
	}
	t, err := n.target(ctx, d.Project, sub)
	if err != nil {
		return fail(false, fmt.Errorf("spec.notifications[%d]: %w", i, err))
	}
	red := redact.New(t.secret)
	if sub.Slack != nil {
		red.Add(t.url) // a Slack webhook URL is a credential
	}
	req, err := n.request(ctx, sub, t, d, text)
	if err != nil {
		return fail(true, red.Error(fmt.Errorf("build request: %w", err)))
	}
	rctx, cancel := context.WithTimeout(ctx, n.o.Timeout)
	defer cancel()
	resp, err := n.client.Do(req.WithContext(rctx))
	if err != nil {
		return fail(errors.Is(err, egress.ErrRefused), red.Error(fmt.Errorf("post: %w", err)))
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	res.status = resp.StatusCode
	if resp.StatusCode/100 == 2 {
		return res
	}
	err = fmt.Errorf("receiver answered %s: %s", resp.Status, bytes.TrimSpace(body))
	// A 4xx other than 408 and 429 says the request itself is wrong:
	// sending it again gives the same answer.
	permanent := resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests
	return fail(permanent, red.Error(err))
}

func indexOf(subs []model.NotificationSubscription, name string) int {
	for i := range subs {
		if subs[i].Name == name {
			return i
		}
	}
	return -1
}

// target is where a subscription's requests go and what signs them.
type target struct {
	url, secret string
}

// target resolves a subscription's URL and signing secret from its Secret.
func (n *Notifier) target(ctx context.Context, project string, sub *model.NotificationSubscription) (target, error) {
	var t target
	var ref *model.LocalObjectReference
	var refKey, field string
	switch {
	case sub.CloudEvents != nil:
		t.url, ref, refKey, field = sub.CloudEvents.URL, sub.CloudEvents.SecretRef, SecretKey, "cloudEvents.secretRef"
	case sub.Slack != nil:
		t.url, ref, refKey, field = sub.Slack.URL, sub.Slack.SecretRef, SlackURLKey, "slack.secretRef"
	case sub.Webhook != nil:
		t.url, ref, refKey, field = sub.Webhook.URL, &sub.Webhook.SecretRef, SecretKey, "webhook.secretRef"
	default:
		return t, errors.New("no target")
	}
	if ref == nil {
		return t, nil
	}
	sec, _, err := state.GetAs[*model.Secret](ctx, n.o.Store, project, model.KindSecret, ref.Name)
	if errors.Is(err, state.ErrNotFound) {
		return t, fmt.Errorf("%s: Secret %q not found", field, ref.Name)
	}
	if err != nil {
		return t, fmt.Errorf("%s: load Secret %q: %w", field, ref.Name, err)
	}
	v, ok := sec.Value(refKey)
	if !ok || len(v) == 0 {
		return t, fmt.Errorf("%s: Secret %q has no key %q", field, ref.Name, refKey)
	}
	if refKey == SlackURLKey {
		t.url = string(v)
	} else {
		t.secret = string(v)
	}
	return t, nil
}

// cloudEvent is a CloudEvent in the JSON event format (structured mode).
type cloudEvent struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject,omitempty"`
	Time            string    `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            eventData `json:"data"`
}

// eventData is the data of a CloudEvent and the body of a generic webhook.
type eventData struct {
	ID      string                  `json:"id"`
	Event   model.NotificationEvent `json:"event"`
	Type    events.Type             `json:"type"`
	Project string                  `json:"project"`
	Subject events.Ref              `json:"subject"`
	Time    string                  `json:"time"`
	Reason  string                  `json:"reason,omitempty"`
	Payload json.RawMessage         `json:"payload"`
	// Message is the rendered template.
	Message string `json:"message"`
}

// request builds the HTTP request of one attempt.
func (n *Notifier) request(ctx context.Context, sub *model.NotificationSubscription, t target, d Delivery, text string) (*http.Request, error) {
	env := d.Envelope
	at := env.Time.UTC().Format("2006-01-02T15:04:05.999999999Z07:00")
	data := eventData{ID: env.ID, Event: d.Event, Type: env.Type, Project: env.Project, Subject: env.Subject, Time: at, Reason: d.Reason, Payload: env.Payload, Message: text}
	if len(data.Payload) == 0 {
		data.Payload = json.RawMessage("null")
	}
	header := http.Header{}
	var body []byte
	var err error
	switch {
	case sub.Slack != nil:
		body, err = json.Marshal(map[string]string{"text": text})
		header.Set("Content-Type", "application/json")
	case sub.Webhook != nil:
		body, err = json.Marshal(data)
		header.Set("Content-Type", "application/json")
	default:
		ce := cloudEvent{SpecVersion: "1.0", ID: d.ID, Source: n.o.Source + "/projects/" + env.Project, Type: EventTypePrefix + string(d.Event),
			Subject: env.Subject.Kind + "/" + env.Subject.Name, Time: at, DataContentType: "application/json", Data: data}
		if sub.CloudEvents.Mode == "binary" {
			body, err = json.Marshal(data)
			header.Set("Content-Type", "application/json")
			header.Set("Ce-Specversion", ce.SpecVersion)
			header.Set("Ce-Id", ce.ID)
			header.Set("Ce-Source", ce.Source)
			header.Set("Ce-Type", ce.Type)
			header.Set("Ce-Subject", ce.Subject)
			header.Set("Ce-Time", ce.Time)
		} else {
			body, err = json.Marshal(ce)
			header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
		}
	}
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = header
	req.Header.Set("User-Agent", "caravan-notifier")
	req.Header.Set(HeaderDelivery, d.ID)
	req.Header.Set(HeaderEvent, string(d.Event))
	req.Header.Set("Content-Length", strconv.Itoa(len(body)))
	if t.secret != "" {
		req.Header.Set(HeaderSignature, Sign([]byte(t.secret), body))
	}
	return req, nil
}

// Sign returns the X-Caravan-Signature-256 value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
