package creds

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tokenAPI is a fake of a cloud token API that cannot run here (AWS STS
// and ECR, Google IAM Credentials and OAuth, ACR's OAuth exchange): an
// httptest server whose answers follow the API reference named by the
// test that starts it.
type tokenAPI struct {
	URL    string
	issued atomic.Int64 // requests answered with a token
}

// tokenAnswer is a tokenAPI's answer to one request: a token (status 0)
// or a refusal (an error status and the API's error body).
type tokenAnswer struct {
	status      int
	contentType string
	body        string
}

// refuse answers with status and body, as http.Error does.
func refuse(status int, body string) tokenAnswer {
	return tokenAnswer{status: status, body: body}
}

// startTokenAPI starts a tokenAPI, closed at cleanup. answer gets each
// request in turn and n, the number of the token it would issue (1 for
// the first); a refusal issues none. answer checks the request itself
// and fails the test (t.Errorf) on one the client should not have sent.
func startTokenAPI(t *testing.T, answer func(r *http.Request, n int64) tokenAnswer) *tokenAPI {
	t.Helper()
	api := &tokenAPI{}
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		a := answer(r, api.issued.Load()+1)
		if a.status != 0 {
			http.Error(w, a.body, a.status)
			return
		}
		api.issued.Add(1)
		w.Header().Set("Content-Type", a.contentType)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(srv.Close)
	api.URL = srv.URL
	return api
}

// ecrTargetGetAuthorizationToken is the X-Amz-Target of ECR's
// GetAuthorizationToken.
const ecrTargetGetAuthorizationToken = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"

// ecrToken is ECR GetAuthorizationToken's answer
// (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html:
// AWS JSON 1.1, authorizationData with authorizationToken = base64 of
// AWS:<password>, expiresAt in epoch seconds).
func ecrToken(password string, expires time.Time) tokenAnswer {
	tok := base64.StdEncoding.EncodeToString([]byte("AWS:" + password))
	return tokenAnswer{contentType: "application/x-amz-json-1.1", body: fmt.Sprintf(
		`{"authorizationData":[{"authorizationToken":%q,"expiresAt":%d}]}`,
		tok, expires.Unix())}
}
