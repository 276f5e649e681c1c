package creds

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/caravan-cd/caravan/pkg/model"
)

// Clouds whose registries ambient identity can reach (Ambient.Clouds).
const (
	CloudECR = "ecr"
	CloudGAR = "gar"
	CloudACR = "acr"
)

// Ambient is the process's own cloud identity (workload identity), used
// for a cloud registry's image and chart repositories that no Secret of
// the project or of the shared-resources project matches, as Kargo does:
//
//   - ECR: the AWS SDK's default credential chain (EKS Pod Identity,
//     IRSA, environment) assumes the role kargo-project-<project> of the
//     registry's account and exchanges it for a registry token;
//   - GAR: Application Default Credentials (GKE Workload Identity
//     Federation, a metadata server) impersonate the service account
//     kargo-project-<project>@<gcp project>.iam.gserviceaccount.com of the
//     repository's GCP project for an access token;
//   - ACR: azidentity's default credential chain (Azure Workload Identity,
//     managed identity, environment) gets a Microsoft Entra token that the
//     registry exchanges for an ACR refresh token. As in Kargo, there is
//     no project-specific identity: every project reaches what the
//     process's identity may.
//
// The identity's own requests (instance metadata, the workload identity
// token file, Entra, STS's web identity exchange) bypass the egress
// policy, which refuses metadata addresses: they are the process's, not a
// project's. The exchanges with registries and the AssumeRole and
// impersonation calls go through it (Options.HTTPClient).
//
// Off unless a cloud is listed.
type Ambient struct {
	// Clouds lists the clouds whose ambient identity is used: "ecr",
	// "gar", "acr".
	Clouds []string

	// AWS, GCP and Azure replace the default credential chains (tests).
	AWS   aws.CredentialsProvider
	GCP   oauth2.TokenSource
	Azure azcore.TokenCredential
	// STSEndpoint, IAMCredentialsEndpoint and ACREndpoint replace the
	// endpoints of AWS STS, Google's IAM Credentials API and every ACR
	// registry (tests).
	STSEndpoint, IAMCredentialsEndpoint, ACREndpoint string
}

// ParseClouds reads a comma-separated list of clouds (CARAVAN_AMBIENT_CREDENTIALS).
func ParseClouds(s string) ([]string, error) {
	var out []string
	for _, c := range strings.Split(s, ",") {
		c = strings.ToLower(strings.TrimSpace(c))
		switch c {
		case "":
		case CloudECR, CloudGAR, CloudACR:
			out = append(out, c)
		default:
			return nil, fmt.Errorf("unknown cloud %q (ecr, gar or acr)", c)
		}
	}
	return out, nil
}

func (a *Ambient) enabled(cloud string) bool {
	for _, c := range a.Clouds {
		if c == cloud {
			return true
		}
	}
	return false
}

var (
	// garHost matches Artifact Registry hosts: <location>-docker.pkg.dev.
	garHost = regexp.MustCompile(`^[a-z0-9-]+-docker\.pkg\.dev$`)
	// acrHost matches ACR registry hosts in Azure's public and sovereign
	// clouds.
	acrHost = regexp.MustCompile(`^[a-z0-9]+\.azurecr\.(?:io|cn|us)$`)
	// gcpProject matches GCP project IDs.
	gcpProject = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
)

// ambient returns credentials of the process's cloud identity for
// project's repoURL, nil when its registry is of no cloud enabled.
func (f *Finder) ambient(ctx context.Context, project, credType, repoURL string) (*Credentials, error) {
	if credType == model.CredTypeGit || len(f.o.Ambient.Clouds) == 0 {
		return nil, nil
	}
	host := registryHost(repoURL)
	switch {
	case f.o.Ambient.enabled(CloudECR) && ecrHost.MatchString(host):
		return f.ecrAmbient(ctx, project, host)
	case f.o.Ambient.enabled(CloudGAR) && garHost.MatchString(host):
		return f.garAmbient(ctx, project, repoURL)
	case f.o.Ambient.enabled(CloudACR) && acrHost.MatchString(host):
		return f.acrAmbient(ctx, host)
	}
	return nil, nil
}

// ecrAmbient assumes the project's role in the registry's account with the
// process's AWS identity and exchanges it for a registry token.
func (f *Finder) ecrAmbient(ctx context.Context, project, host string) (*Credentials, error) {
	m := ecrHost.FindStringSubmatch(host)
	account, region := strings.SplitN(host, ".", 2)[0], m[1]
	role := fmt.Sprintf("arn:aws:iam::%s:role/kargo-project-%s", account, project)
	base := f.o.Ambient.AWS
	if base == nil {
		cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
		if err != nil {
			return nil, fmt.Errorf("ambient AWS identity: %w", err)
		}
		base = cfg.Credentials
	}
	stsClient := sts.NewFromConfig(aws.Config{Region: region, Credentials: base, HTTPClient: f.o.HTTPClient, RetryMaxAttempts: 3}, func(o *sts.Options) {
		if f.o.Ambient.STSEndpoint != "" {
			o.BaseEndpoint = aws.String(f.o.Ambient.STSEndpoint)
		}
	})
	assumed := aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(stsClient, role, func(o *stscreds.AssumeRoleOptions) {
		o.RoleSessionName = "caravan-" + project
	}))
	c, err := f.ecrToken(ctx, "ecr-ambient:"+role, region, assumed)
	if err != nil {
		return nil, fmt.Errorf("ambient ECR credentials (role %s): %w", role, err)
	}
	c.Secret = "ambient AWS identity"
	return c, nil
}

// iamCredentialsURL is Google's IAM Credentials API.
const iamCredentialsURL = "https://iamcredentials.googleapis.com"

// garAmbient impersonates the project's service account in the
// repository's GCP project (IAM Credentials API generateAccessToken) with
// the process's Application Default Credentials.
func (f *Finder) garAmbient(ctx context.Context, project, repoURL string) (*Credentials, error) {
	u := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(repoURL), "oci://"), "https://")
	parts := strings.Split(u, "/")
	if len(parts) < 2 || !gcpProject.MatchString(parts[1]) {
		return nil, fmt.Errorf("ambient GAR credentials: repoURL %q names no GCP project (<location>-docker.pkg.dev/<project>/...)", repoURL)
	}
	sa := fmt.Sprintf("kargo-project-%s@%s.iam.gserviceaccount.com", project, parts[1])
	id := "gar-ambient:" + sa
	tok, err := f.tokens.get(ctx, id, func(ctx context.Context) (token, error) {
		ts := f.o.Ambient.GCP
		if ts == nil {
			creds, err := google.FindDefaultCredentials(ctx, garScope)
			if err != nil {
				return token{}, fmt.Errorf("application default credentials: %w", err)
			}
			ts = creds.TokenSource
		}
		base, err := ts.Token()
		if err != nil {
			return token{}, fmt.Errorf("application default credentials: %w", err)
		}
		endpoint := iamCredentialsURL
		if f.o.Ambient.IAMCredentialsEndpoint != "" {
			endpoint = f.o.Ambient.IAMCredentialsEndpoint
		}
		body, _ := json.Marshal(map[string]any{"scope": []string{garScope}})
		var out struct {
			AccessToken string    `json:"accessToken"`
			ExpireTime  time.Time `json:"expireTime"`
		}
		if err := f.postJSON(ctx, endpoint+"/v1/projects/-/serviceAccounts/"+url.PathEscape(sa)+":generateAccessToken", "Bearer "+base.AccessToken, "application/json", strings.NewReader(string(body)), &out); err != nil {
			return token{}, fmt.Errorf("impersonate %s: %w", sa, err)
		}
		if out.AccessToken == "" {
			return token{}, fmt.Errorf("impersonate %s: answer without accessToken", sa)
		}
		exp := out.ExpireTime
		if exp.IsZero() {
			exp = f.o.Now().Add(time.Hour)
		}
		return token{username: garUser, password: out.AccessToken, expires: exp}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("ambient GAR credentials: %w", err)
	}
	return &Credentials{Username: tok.username, Password: tok.password, Secret: "ambient GCP identity", id: id}, nil
}

// acrScope is the Microsoft Entra scope of tokens for ACR.
const acrScope = "https://containerregistry.azure.net/.default"

// acrUser is the user name that goes with an ACR refresh token.
const acrUser = "00000000-0000-0000-0000-000000000000"

// acrAmbient gets a Microsoft Entra access token for the process's Azure
// identity and exchanges it at the registry (POST /oauth2/exchange,
// grant_type=access_token) for an ACR refresh token, the password of the
// null-GUID user.
func (f *Finder) acrAmbient(ctx context.Context, host string) (*Credentials, error) {
	id := "acr-ambient:" + host
	tok, err := f.tokens.get(ctx, id, func(ctx context.Context) (token, error) {
		cred := f.o.Ambient.Azure
		if cred == nil {
			c, err := azidentity.NewDefaultAzureCredential(nil)
			if err != nil {
				return token{}, fmt.Errorf("default Azure credential: %w", err)
			}
			cred = c
		}
		aad, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{acrScope}})
		if err != nil {
			return token{}, fmt.Errorf("get Microsoft Entra token: %w", err)
		}
		endpoint := "https://" + host
		if f.o.Ambient.ACREndpoint != "" {
			endpoint = f.o.Ambient.ACREndpoint
		}
		form := url.Values{"grant_type": {"access_token"}, "service": {host}, "access_token": {aad.Token}}
		var out struct {
			RefreshToken string `json:"refresh_token"`
		}
		if err := f.postJSON(ctx, endpoint+"/oauth2/exchange", "", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), &out); err != nil {
			return token{}, fmt.Errorf("ACR token exchange at %s: %w", host, err)
		}
		if out.RefreshToken == "" {
			return token{}, fmt.Errorf("ACR token exchange at %s: answer without refresh_token", host)
		}
		return token{username: acrUser, password: out.RefreshToken, expires: jwtExpiry(out.RefreshToken, f.o.Now().Add(3*time.Hour))}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("ambient ACR credentials: %w", err)
	}
	return &Credentials{Username: tok.username, Password: tok.password, Secret: "ambient Azure identity", id: id}, nil
}

// postJSON POSTs body and decodes a 200 answer's JSON into out; another
// status is an error quoting the answer's start (never the request).
func (f *Finder) postJSON(ctx context.Context, u, authorization, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := f.o.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return fmt.Errorf("%s: %s", resp.Status, msg)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	return nil
}

// jwtExpiry reads a JWT's exp claim without checking its signature (the
// issuer checks it; we only need to know when to renew), else fallback.
func jwtExpiry(jwt string, fallback time.Time) time.Time {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return fallback
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fallback
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(b, &claims); err != nil || claims.Exp == 0 {
		return fallback
	}
	return time.Unix(claims.Exp, 0)
}
