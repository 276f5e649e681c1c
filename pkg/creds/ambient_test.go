package creds

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/aws/aws-sdk-go-v2/aws"
	"golang.org/x/oauth2"

	"github.com/caravan-cd/caravan/pkg/model"
)

// fakeAzure stands in for the process's Azure identity (Azure Workload
// Identity cannot run here): a fake azcore.TokenCredential, as
// azidentity's credentials are, handing out numbered Entra tokens.
type fakeAzure struct {
	mu     sync.Mutex
	n      int
	scopes [][]string
}

func (f *fakeAzure) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.scopes = append(f.scopes, o.Scopes)
	return azcore.AccessToken{Token: fmt.Sprintf("entra-token-%d", f.n), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// unsignedJWT is a JWT with claims and no valid signature (ACR refresh
// tokens are JWTs; the client only reads exp).
func unsignedJWT(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

// TestACRAmbient exchanges the process's Microsoft Entra token for an ACR
// refresh token at a server speaking ACR's documented exchange
// (https://github.com/Azure/acr/blob/main/docs/AAD-OAuth.md, "Exchanging
// AAD token for ACR refresh token": POST /oauth2/exchange, form
// grant_type=access_token, service=<registry host>, access_token=<Entra
// token>, tenant optional; answer {"refresh_token": <JWT>}), used as the
// password of user 00000000-0000-0000-0000-000000000000 and kept until
// shortly before the refresh token's exp. The Entra token comes from a
// fake credential (fakeAzure). A Secret for the repository wins, and
// ambient identity is used only when the operator enabled it.
func TestACRAmbient(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Now()}
	srv := startTokenAPI(t, func(r *http.Request, n int64) tokenAnswer {
		if err := r.ParseForm(); err != nil || r.Method != http.MethodPost || r.URL.Path != "/oauth2/exchange" ||
			r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || r.PostForm.Get("grant_type") != "access_token" ||
			r.PostForm.Get("service") != "caravan.azurecr.io" || !strings.HasPrefix(r.PostForm.Get("access_token"), "entra-token-") {
			t.Errorf("exchange %s %s %v", r.Method, r.URL.Path, r.PostForm)
			return refuse(http.StatusUnauthorized, `{"errors":[{"code":"UNAUTHORIZED"}]}`)
		}
		b, _ := json.Marshal(map[string]string{"refresh_token": unsignedJWT(map[string]any{
			"exp": clk.now().Add(3 * time.Hour).Unix(), "grant_type": "refresh_token", "jti": fmt.Sprint(n)})})
		return tokenAnswer{contentType: "application/json", body: string(b)}
	})
	az := &fakeAzure{}
	repo := "caravan.azurecr.io/team/app"
	f := NewFinder(lister{}, Options{Now: clk.now, Ambient: Ambient{Clouds: []string{CloudACR}, Azure: az, ACREndpoint: srv.URL}})
	var first string
	for i := range 3 {
		if i == 2 {
			clk.add(2*time.Hour + 56*time.Minute) // less than five minutes left
		}
		c, err := f.Find(t.Context(), "demo", model.CredTypeImage, repo)
		if err != nil {
			t.Fatal(err)
		}
		if c == nil || c.Username != "00000000-0000-0000-0000-000000000000" || c.Password == "" {
			t.Fatalf("find %d: %+v", i, c)
		}
		if i == 0 {
			first = c.Password
		}
		if (c.Password == first) != (i < 2) {
			t.Errorf("find %d: refresh token renewed %v, want only near expiry", i, c.Password != first)
		}
	}
	if srv.issued.Load() != 2 || len(az.scopes) != 2 || az.scopes[0][0] != "https://containerregistry.azure.net/.default" {
		t.Errorf("%d exchanges, Entra scopes %v; want 2 of https://containerregistry.azure.net/.default", srv.issued.Load(), az.scopes)
	}
	// oci:// chart references on the registry too.
	if c, err := f.Find(t.Context(), "demo", model.CredTypeHelm, "oci://caravan.azurecr.io/charts/app"); err != nil || c == nil {
		t.Fatalf("helm: %v %+v", err, c)
	}

	// A Secret wins; another registry, git, or a Finder without ACR enabled
	// get nothing from the ambient identity.
	withSecret := NewFinder(lister{"demo": {secret("acr", model.CredTypeImage, map[string]string{"repoURL": repo, "username": "token-name", "password": "token-pw"})}},
		Options{Ambient: Ambient{Clouds: []string{CloudACR}, Azure: az, ACREndpoint: srv.URL}})
	if c, err := withSecret.Find(t.Context(), "demo", model.CredTypeImage, repo); err != nil || c.Username != "token-name" {
		t.Fatalf("the Secret does not win: %v %+v", err, c)
	}
	for _, tc := range []struct {
		clouds       []string
		typ, repoURL string
	}{
		{nil, model.CredTypeImage, repo},
		{[]string{CloudECR, CloudGAR}, model.CredTypeImage, repo},
		{[]string{CloudACR}, model.CredTypeImage, "ghcr.io/acme/app"},
		{[]string{CloudACR}, model.CredTypeGit, "https://caravan.azurecr.io/x.git"},
	} {
		g := NewFinder(lister{}, Options{Ambient: Ambient{Clouds: tc.clouds, Azure: az, ACREndpoint: srv.URL}})
		if c, err := g.Find(t.Context(), "demo", tc.typ, tc.repoURL); err != nil || c != nil {
			t.Errorf("%v %s %s: %v %+v, want nothing", tc.clouds, tc.typ, tc.repoURL, err, c)
		}
	}
	if srv.issued.Load() != 2 {
		t.Errorf("%d exchanges, want 2 (one token serves every repository of the registry)", srv.issued.Load())
	}
}

// TestACRAmbientRefused: a registry refusing the exchange is an error
// naming the registry and the status, never the Entra token.
func TestACRAmbientRefused(t *testing.T) {
	t.Parallel()
	srv := startTokenAPI(t, func(*http.Request, int64) tokenAnswer {
		return refuse(http.StatusUnauthorized, `{"errors":[{"code":"UNAUTHORIZED","message":"identity has no AcrPull role"}]}`)
	})
	f := NewFinder(lister{}, Options{Ambient: Ambient{Clouds: []string{CloudACR}, Azure: &fakeAzure{}, ACREndpoint: srv.URL}})
	_, err := f.Find(t.Context(), "demo", model.CredTypeImage, "caravan.azurecr.io/app")
	if err == nil || !strings.Contains(err.Error(), "caravan.azurecr.io") || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "entra-token") {
		t.Fatalf("error %v", err)
	}
}

// TestECRAmbient assumes the project's role kargo-project-<project> in
// the registry's account with the process's AWS identity (a static
// provider standing in for IRSA or EKS Pod Identity, which cannot run
// here), at fakes of STS AssumeRole
// (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html:
// POST form Action=AssumeRole, Version=2011-06-15, RoleArn,
// RoleSessionName; XML AssumeRoleResponse with Credentials) and ECR
// GetAuthorizationToken (as TestECR) signed with the role's keys.
func TestECRAmbient(t *testing.T) {
	t.Parallel()
	ecr := startTokenAPI(t, func(r *http.Request, _ int64) tokenAnswer {
		authz := r.Header.Get("Authorization")
		if r.Header.Get("X-Amz-Target") != ecrTargetGetAuthorizationToken ||
			!strings.Contains(authz, "Credential=ASIAPROJECT/") || r.Header.Get("X-Amz-Security-Token") != "session-token" {
			t.Errorf("ECR %q signed with %q", r.Header.Get("X-Amz-Target"), authz)
		}
		return ecrToken("ecr-ambient-pw", time.Now().Add(12*time.Hour))
	})
	sts := startTokenAPI(t, func(r *http.Request, _ int64) tokenAnswer {
		authz := r.Header.Get("Authorization")
		if err := r.ParseForm(); err != nil || r.PostForm.Get("Action") != "AssumeRole" || !strings.Contains(authz, "Credential=AKIDBASE/") ||
			r.PostForm.Get("RoleArn") != "arn:aws:iam::123456789012:role/kargo-project-demo" || r.PostForm.Get("RoleSessionName") != "caravan-demo" {
			t.Errorf("STS %v authorization %q", r.PostForm, authz)
			return refuse(http.StatusForbidden, "")
		}
		return tokenAnswer{contentType: "text/xml", body: fmt.Sprintf(`<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>ASIAPROJECT</AccessKeyId><SecretAccessKey>role-secret</SecretAccessKey><SessionToken>session-token</SessionToken><Expiration>%s</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/kargo-project-demo/caravan-demo</Arn><AssumedRoleId>AROA:caravan-demo</AssumedRoleId></AssumedRoleUser>
</AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))}
	})
	base := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIDBASE", SecretAccessKey: "base-secret"}, nil
	})
	f := NewFinder(lister{}, Options{ECREndpoint: ecr.URL, Ambient: Ambient{Clouds: []string{CloudECR}, AWS: base, STSEndpoint: sts.URL}})
	for range 2 {
		c, err := f.Find(t.Context(), "demo", model.CredTypeImage, "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app")
		if err != nil {
			t.Fatal(err)
		}
		if c == nil || c.Username != "AWS" || c.Password != "ecr-ambient-pw" {
			t.Fatalf("%+v", c)
		}
	}
	if sts.issued.Load() != 1 || ecr.issued.Load() != 1 {
		t.Errorf("%d AssumeRole, %d GetAuthorizationToken; want 1 each (cached)", sts.issued.Load(), ecr.issued.Load())
	}
}

// TestGARAmbient impersonates kargo-project-<project>@<gcp
// project>.iam.gserviceaccount.com with the process's Application Default
// Credentials (a static token source standing in for GKE Workload
// Identity Federation, which cannot run here), at a server speaking the
// IAM Credentials API's generateAccessToken
// (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken:
// POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken, bearer
// of the caller, JSON {"scope": [...]}; answer accessToken, expireTime).
func TestGARAmbient(t *testing.T) {
	t.Parallel()
	srv := startTokenAPI(t, func(r *http.Request, _ int64) tokenAnswer {
		var body struct {
			Scope []string `json:"scope"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		if strings.Contains(r.URL.Path, "kargo-project-other@") {
			return refuse(http.StatusForbidden, `{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied"}}`)
		}
		if r.Method != http.MethodPost || r.URL.Path != "/v1/projects/-/serviceAccounts/kargo-project-demo@my-gcp.iam.gserviceaccount.com:generateAccessToken" ||
			r.Header.Get("Authorization") != "Bearer adc-token" || len(body.Scope) != 1 || body.Scope[0] != "https://www.googleapis.com/auth/cloud-platform" {
			t.Errorf("%s %s %q %v", r.Method, r.URL.Path, r.Header.Get("Authorization"), body.Scope)
			return refuse(http.StatusForbidden, `{"error":{"code":403}}`)
		}
		return tokenAnswer{contentType: "application/json", body: fmt.Sprintf(`{"accessToken":"ya29.impersonated","expireTime":%q}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))}
	})
	adc := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "adc-token"})
	f := NewFinder(lister{}, Options{Ambient: Ambient{Clouds: []string{CloudGAR}, GCP: adc, IAMCredentialsEndpoint: srv.URL}})
	for range 2 {
		c, err := f.Find(t.Context(), "demo", model.CredTypeHelm, "oci://europe-west1-docker.pkg.dev/my-gcp/charts/app")
		if err != nil {
			t.Fatal(err)
		}
		if c == nil || c.Username != "oauth2accesstoken" || c.Password != "ya29.impersonated" {
			t.Fatalf("%+v", c)
		}
	}
	if srv.issued.Load() != 1 {
		t.Errorf("%d impersonations, want 1 (cached)", srv.issued.Load())
	}
	if _, err := f.Find(t.Context(), "demo", model.CredTypeImage, "europe-west1-docker.pkg.dev/X%2F..%2F/app"); err == nil || !strings.Contains(err.Error(), "names no GCP project") {
		t.Errorf("a malformed GCP project: %v", err)
	}
	// Another project impersonates its own service account, and is refused here.
	if _, err := f.Find(t.Context(), "other", model.CredTypeHelm, "oci://europe-west1-docker.pkg.dev/my-gcp/charts/app"); err == nil ||
		!strings.Contains(err.Error(), "kargo-project-other@my-gcp.iam.gserviceaccount.com") {
		t.Errorf("project other: %v", err)
	}
}

func TestParseClouds(t *testing.T) {
	t.Parallel()
	if c, err := ParseClouds(" ECR, acr ,"); err != nil || strings.Join(c, ",") != "ecr,acr" {
		t.Errorf("%v %v", c, err)
	}
	if _, err := ParseClouds("ecr,azure"); err == nil || !strings.Contains(err.Error(), `"azure"`) {
		t.Errorf("unknown cloud: %v", err)
	}
}
