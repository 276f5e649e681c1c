package server_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/server"
)

// TestNotificationsFromTheServer runs caravan server with the documented
// settings (CARAVAN_NOTIFY_BACKOFF, CARAVAN_EGRESS_ALLOW for a receiver on
// this host): a promotion window that ends a few seconds after it is applied
// opens, and a real HTTP receiver gets one signed WindowOpened webhook.
func TestNotificationsFromTheServer(t *testing.T) {
	const secret = "server-test-hmac-secret"
	var mu sync.Mutex
	var got [][]byte
	var sigs []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, sigs = append(got, b), append(sigs, r.Header.Get("X-Caravan-Signature-256"))
		mu.Unlock()
	}))
	t.Cleanup(recv.Close)
	r := start(t, t.TempDir(), func(c *server.Config) {
		c.NotifyBackoff = 200 * time.Millisecond
		c.Egress.Allow = "127.0.0.1"
	})
	defer r.stop(t)
	now := time.Now().UTC()
	const ical = "20060102T150405Z"
	doc := pipeline + `---
apiVersion: v1
kind: Secret
metadata: {name: hook, namespace: demo}
stringData: {secret: ` + secret + `}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: demo, namespace: demo}
spec:
  promotionWindows:
  - {name: freeze, kind: Deny, dtstart: "` + now.Add(-time.Minute).Format(ical) + `", dtend: "` + now.Add(4*time.Second).Format(ical) + `"}
  notifications:
  - name: ops
    events: [WindowOpened]
    webhook: {url: "` + recv.URL + `/hook", secretRef: {name: hook}}
`
	if code, body := r.do(t, http.MethodPost, "/v1/resources", doc); code != http.StatusOK {
		t.Fatalf("apply: %d %v", code, body)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, body := r.do(t, http.MethodGet, "/v1/projects/demo/notifications?status=sent", "")
		if items, _ := body["items"].([]any); len(items) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification sent: %v", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests", len(got))
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(got[0])
	if sigs[0] != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
		t.Errorf("signature %q does not match", sigs[0])
	}
	var ev struct{ Event, Project, Message string }
	if err := json.Unmarshal(got[0], &ev); err != nil || ev.Event != "WindowOpened" || ev.Project != "demo" || ev.Message == "" {
		t.Errorf("webhook body %s (%v)", got[0], err)
	}
}
