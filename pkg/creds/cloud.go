package creds

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"

	"github.com/caravan-cd/caravan/pkg/model"
)

// ecrHost matches ECR registry hosts: <account>.dkr.ecr[-fips].<region>.<domain>.
var ecrHost = regexp.MustCompile(`^[0-9]{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|sc2s\.sgov\.gov|c2s\.ic\.gov)(?::[0-9]+)?$`)

// registryHost is the host of an image or OCI chart repository URL.
func registryHost(repoURL string) string {
	u := strings.TrimSpace(repoURL)
	for _, p := range []string{"oci://", "https://", "http://"} {
		u = strings.TrimPrefix(u, p)
	}
	host, _, _ := strings.Cut(u, "/")
	return strings.ToLower(host)
}

// ecr exchanges AWS access keys for an ECR authorization token (the ECR
// API's GetAuthorizationToken, through the AWS SDK), valid 12 hours.
func (f *Finder) ecr(ctx context.Context, s *model.Secret, repoURL string) (*Credentials, error) {
	keyID, secret := value(s, KeyAWSAccessKeyID), value(s, KeyAWSSecretAccessKey)
	if keyID == "" {
		return nil, fmt.Errorf("field %s: missing", KeyAWSAccessKeyID)
	}
	if secret == "" {
		return nil, fmt.Errorf("field %s: missing", KeyAWSSecretAccessKey)
	}
	region := value(s, KeyAWSRegion)
	if region == "" {
		m := ecrHost.FindStringSubmatch(registryHost(repoURL))
		if m == nil {
			return nil, fmt.Errorf("field %s: missing, and repoURL %q is no ECR registry to take the region from", KeyAWSRegion, repoURL)
		}
		region = m[1]
	}
	id := secretID("ecr", s, KeyAWSAccessKeyID, KeyAWSSecretAccessKey)
	c, err := f.ecrToken(ctx, id, region, credentials.NewStaticCredentialsProvider(keyID, secret, ""))
	if err != nil {
		return nil, err
	}
	c.Secret = s.Namespace + "/" + s.Name
	return c, nil
}

// ecrToken exchanges AWS credentials for an ECR authorization token of
// region, cached under id.
func (f *Finder) ecrToken(ctx context.Context, id, region string, provider aws.CredentialsProvider) (*Credentials, error) {
	tok, err := f.tokens.get(ctx, id+"\x00"+region, func(ctx context.Context) (token, error) {
		client := ecr.NewFromConfig(aws.Config{
			Region:           region,
			Credentials:      provider,
			HTTPClient:       f.o.HTTPClient,
			RetryMaxAttempts: 3,
		}, func(o *ecr.Options) {
			if f.o.ECREndpoint != "" {
				o.BaseEndpoint = aws.String(f.o.ECREndpoint)
			}
		})
		out, err := client.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
		if err != nil {
			return token{}, fmt.Errorf("ECR authorization token (region %s): %w", region, err)
		}
		if len(out.AuthorizationData) == 0 || out.AuthorizationData[0].AuthorizationToken == nil {
			return token{}, errors.New("ECR authorization token: answer without token")
		}
		d := out.AuthorizationData[0]
		raw, err := base64.StdEncoding.DecodeString(*d.AuthorizationToken)
		user, pass, ok := strings.Cut(string(raw), ":")
		if err != nil || !ok {
			return token{}, errors.New("ECR authorization token: not base64 of user:password")
		}
		exp := f.o.Now().Add(12 * time.Hour)
		if d.ExpiresAt != nil {
			exp = *d.ExpiresAt
		}
		return token{username: user, password: pass, expires: exp}, nil
	})
	if err != nil {
		return nil, err
	}
	return &Credentials{Username: tok.username, Password: tok.password, id: id}, nil
}

// garConfig reads the service account key (base64 of its JSON, or the
// JSON itself).
func garConfig(s *model.Secret) (*jwt.Config, error) {
	raw := value(s, KeyGCPServiceAccountKey)
	keyJSON, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		if !strings.HasPrefix(raw, "{") {
			return nil, fmt.Errorf("field %s: not base64 of a service account key", KeyGCPServiceAccountKey)
		}
		keyJSON = []byte(raw)
	}
	conf, err := google.JWTConfigFromJSON(keyJSON, garScope)
	if err != nil {
		return nil, fmt.Errorf("field %s: not a service account key (JSON with client_email and private_key)", KeyGCPServiceAccountKey)
	}
	return conf, nil
}

// garScope is the OAuth scope of Artifact Registry access tokens.
const garScope = "https://www.googleapis.com/auth/cloud-platform"

// garUser is the user name that goes with an access token.
const garUser = "oauth2accesstoken"

// gar exchanges a GCP service account key (base64 of its JSON) for an
// OAuth access token (the service account JWT bearer grant at the key's
// token_uri, through golang.org/x/oauth2/google), valid an hour.
func (f *Finder) gar(ctx context.Context, s *model.Secret) (*Credentials, error) {
	conf, err := garConfig(s)
	if err != nil {
		return nil, err
	}
	id := secretID("gar", s, KeyGCPServiceAccountKey)
	tok, err := f.tokens.get(ctx, id, func(ctx context.Context) (token, error) {
		t, err := conf.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, f.o.HTTPClient)).Token()
		if err != nil {
			return token{}, fmt.Errorf("GCP access token for %s: %w", conf.Email, err)
		}
		exp := t.Expiry
		if exp.IsZero() {
			exp = f.o.Now().Add(time.Hour)
		}
		return token{username: garUser, password: t.AccessToken, expires: exp}, nil
	})
	if err != nil {
		return nil, err
	}
	return &Credentials{Username: tok.username, Password: tok.password, Secret: s.Namespace + "/" + s.Name, id: id}, nil
}
