package gateway_test

import (
	"net/http"
	"strings"
	"testing"
)

// Credentials Secrets that cannot work are refused at apply with 422,
// naming the Secret and the field, never quoting the value; nothing is
// stored.
func TestBadCredentialSecretsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(readFile(t, "testdata/pipeline.yaml"))
	const value = "not-a-key-but-a-s3cret"
	body := []byte(`apiVersion: v1
kind: Secret
metadata:
  name: deploy-key
  namespace: demo
  labels:
    kargo.akuity.io/cred-type: git
stringData:
  repoURL: git@github.com:example/gitops.git
  sshPrivateKey: ` + value + `
---
apiVersion: v1
kind: Secret
metadata:
  name: ecr
  namespace: demo
  labels:
    kargo.akuity.io/cred-type: image
stringData:
  repoURL: 123456789012.dkr.ecr.us-west-2.amazonaws.com/app
  awsAccessKeyID: AKIA` + value + `
`)
	status, _, e := h.apply(http.MethodPost, body)
	if status != http.StatusUnprocessableEntity && status != http.StatusBadRequest {
		t.Fatalf("status %d %+v", status, e)
	}
	var fields []string
	for _, d := range e.Details {
		if strings.Contains(d.Message, value) || strings.Contains(e.Message, value) {
			t.Fatalf("the answer quotes the value: %+v", e)
		}
		fields = append(fields, d.Name+" "+d.Field)
	}
	if got := strings.Join(fields, ","); got != "deploy-key data.sshPrivateKey,ecr data.awsSecretAccessKey" {
		t.Fatalf("issues %q (%+v)", got, e)
	}
	if status := h.get("/v1/projects/demo/secrets/deploy-key", nil); status != http.StatusNotFound {
		t.Fatalf("the refused Secret was stored: GET %d", status)
	}
}
