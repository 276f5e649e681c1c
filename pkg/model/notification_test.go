package model

import (
	"strings"
	"testing"
)

func TestNotificationValidation(t *testing.T) {
	t.Parallel()
	const head = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: shop}\n---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\nspec:\n  notifications:\n"
	tests := []struct {
		name, yaml, field string
	}{
		{name: "valid", yaml: `  - name: ce
    events: [PromotionSucceeded, VerificationFailed, Rollback]
    cloudEvents: {url: "https://hooks.example.com/ce", mode: binary, secretRef: {name: hook}}
    template: "{{.Type}} {{.Subject.Name}}"
  - name: chat
    events: [PromotionFailed]
    slack: {secretRef: {name: slack}}
  - name: hook
    events: [FreightDiscovered]
    webhook: {url: "http://10.0.0.1:8080/x", secretRef: {name: hook}}
    maxAttempts: 3`},
		{name: "unknown event", yaml: "  - {name: a, events: [PromotionStarted], slack: {url: \"https://x.example\"}}", field: "spec.notifications[0].events[0]"},
		{name: "no target", yaml: "  - {name: a, events: [Rollback]}", field: "spec.notifications[0]"},
		{name: "two targets", yaml: "  - {name: a, events: [Rollback], slack: {url: \"https://x.example\"}, webhook: {url: \"https://y.example\", secretRef: {name: s}}}", field: "spec.notifications[0]"},
		{name: "unsigned webhook", yaml: "  - {name: a, events: [Rollback], webhook: {url: \"https://y.example\"}}", field: "spec.notifications[0].webhook.secretRef.name"},
		{name: "relative url", yaml: "  - {name: a, events: [Rollback], cloudEvents: {url: \"/ce\"}}", field: "spec.notifications[0].cloudEvents.url"},
		{name: "bad mode", yaml: "  - {name: a, events: [Rollback], cloudEvents: {url: \"https://x.example\", mode: batch}}", field: "spec.notifications[0].cloudEvents.mode"},
		{name: "slack url and secret", yaml: "  - {name: a, events: [Rollback], slack: {url: \"https://x.example\", secretRef: {name: s}}}", field: "spec.notifications[0].slack"},
		{name: "bad template", yaml: "  - {name: a, events: [Rollback], slack: {url: \"https://x.example\"}, template: \"{{.Type\"}", field: "spec.notifications[0].template"},
		{name: "attempts", yaml: "  - {name: a, events: [Rollback], slack: {url: \"https://x.example\"}, maxAttempts: 99}", field: "spec.notifications[0].maxAttempts"},
		{name: "duplicate", yaml: "  - {name: a, events: [Rollback], slack: {url: \"https://x.example\"}}\n  - {name: a, events: [Rollback], slack: {url: \"https://x.example\"}}", field: "spec.notifications[1].name"},
		{name: "bad name", yaml: "  - {name: A_b, events: [Rollback], slack: {url: \"https://x.example\"}}", field: "spec.notifications[0].name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dec, err := Decode([]byte(head + tc.yaml + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			issues := Validate(dec.Documents, nil)
			if tc.field == "" {
				if len(issues) > 0 {
					t.Fatalf("issues: %v", issues)
				}
				return
			}
			for _, is := range issues {
				if is.Field == tc.field {
					return
				}
			}
			t.Fatalf("no issue on %s: %v", tc.field, issues)
		})
	}
}

func TestNotificationTemplateSecretURLNotEchoed(t *testing.T) {
	t.Parallel()
	const doc = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: shop}\n---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: shop, namespace: shop}\nspec:\n  notifications:\n  - {name: a, events: [Rollback], slack: {url: \"ftp://hooks.example/T0/B0/tok3n\"}}\n"
	dec, err := Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	issues := Validate(dec.Documents, nil)
	if len(issues) != 1 || strings.Contains(issues[0].Message, "tok3n") {
		t.Fatalf("issues %v: want one, not naming the URL", issues)
	}
}
