// Package auth applies Argo Rollouts' metric provider authentication
// (provider.<web|prometheus>.authentication) to an HTTP client: basicAuth,
// oauth2 (the client-credentials grant, RFC 6749 §4.4) and sigv4 (AWS
// Signature Version 4, as Amazon Managed Prometheus expects).
package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/caravan-cd/caravan/services/verifier/internal/providers/remote"
)

// Config is provider.<name>.authentication.
type Config struct {
	BasicAuth *Basic  `json:"basicAuth,omitempty"`
	OAuth2    *OAuth2 `json:"oauth2,omitempty"`
	Sigv4     *Sigv4  `json:"sigv4,omitempty"`
}

// Basic is HTTP basic authentication.
type Basic struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// OAuth2 is the client-credentials grant: a token from TokenURL is sent as
// "Authorization: Bearer".
type OAuth2 struct {
	TokenURL     string   `json:"tokenUrl"`
	ClientID     string   `json:"clientId"`
	ClientSecret string   `json:"clientSecret"`
	Scopes       []string `json:"scopes,omitempty"`
}

// Sigv4 signs requests with AWS credentials from the default chain
// (environment, shared files for Profile, web identity), assuming RoleARN
// when set.
type Sigv4 struct {
	Region  string `json:"region,omitempty"`
	Profile string `json:"profile,omitempty"`
	RoleARN string `json:"roleArn,omitempty"`
}

// Decode reads an authentication block; nil when it is empty.
func Decode(settings map[string]any) (*Config, error) {
	if len(settings) == 0 {
		return nil, nil
	}
	var c Config
	if err := remote.Decode(settings, &c); err != nil {
		return nil, fmt.Errorf("authentication: %w", err)
	}
	n := 0
	for _, set := range []bool{c.BasicAuth != nil, c.OAuth2 != nil, c.Sigv4 != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("authentication: exactly one of basicAuth, oauth2, sigv4 must be set")
	}
	if o := c.OAuth2; o != nil {
		switch {
		case o.TokenURL == "":
			return nil, errors.New("authentication.oauth2.tokenUrl must be set")
		case o.ClientID == "":
			return nil, errors.New("authentication.oauth2.clientId must be set")
		}
	}
	return &c, nil
}

// Options tune Client.
type Options struct {
	// Service is the AWS service name sigv4 signs for ("aps" for Amazon
	// Managed Prometheus).
	Service string
	// AWS replaces the default credential chain (tests).
	AWS aws.CredentialsProvider
	// Now replaces the clock of sigv4 signatures (tests).
	Now func() time.Time
}

// Client returns base authenticating as c (base itself when c is nil).
// Token requests go through base, so they pass the same egress policy.
// The client is meant for one measurement: an oauth2 token is fetched
// with ctx on first use.
func (c *Config) Client(ctx context.Context, base *http.Client, opts Options) (*http.Client, error) {
	if c == nil {
		return base, nil
	}
	rt := base.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	out := *base
	switch {
	case c.BasicAuth != nil:
		out.Transport = basic{c.BasicAuth.Username, c.BasicAuth.Password, rt}
	case c.OAuth2 != nil:
		cc := clientcredentials.Config{ClientID: c.OAuth2.ClientID, ClientSecret: c.OAuth2.ClientSecret, TokenURL: c.OAuth2.TokenURL, Scopes: c.OAuth2.Scopes}
		tokenCtx := context.WithValue(ctx, oauth2.HTTPClient, base)
		out.Transport = &oauth2.Transport{Source: oauth2.ReuseTokenSource(nil, cc.TokenSource(tokenCtx)), Base: rt}
	case c.Sigv4 != nil:
		creds := opts.AWS
		region := c.Sigv4.Region
		if creds == nil {
			load := []func(*config.LoadOptions) error{config.WithHTTPClient(base)}
			if region != "" {
				load = append(load, config.WithRegion(region))
			}
			if c.Sigv4.Profile != "" {
				load = append(load, config.WithSharedConfigProfile(c.Sigv4.Profile))
			}
			cfg, err := config.LoadDefaultConfig(ctx, load...)
			if err != nil {
				return nil, fmt.Errorf("authentication.sigv4: load AWS configuration: %w", err)
			}
			creds = cfg.Credentials
			if c.Sigv4.RoleARN != "" {
				creds = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), c.Sigv4.RoleARN))
			}
			if region == "" {
				region = cfg.Region
			}
		}
		if region == "" {
			return nil, errors.New("authentication.sigv4.region must be set (or AWS_REGION)")
		}
		now := opts.Now
		if now == nil {
			now = time.Now
		}
		out.Transport = &sigv4{creds: creds, region: region, service: opts.Service, now: now, next: rt, signer: v4.NewSigner()}
	}
	return &out, nil
}

type basic struct {
	user, password string
	next           http.RoundTripper
}

func (b basic) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.SetBasicAuth(b.user, b.password)
	return b.next.RoundTrip(req)
}

type sigv4 struct {
	creds           aws.CredentialsProvider
	region, service string
	now             func() time.Time
	next            http.RoundTripper
	signer          *v4.Signer
}

func (s *sigv4) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	sum := sha256.Sum256(body)
	creds, err := s.creds.Retrieve(req.Context())
	if err != nil {
		return nil, fmt.Errorf("sigv4: AWS credentials: %w", err)
	}
	if err := s.signer.SignHTTP(req.Context(), creds, req, hex.EncodeToString(sum[:]), s.service, s.region, s.now()); err != nil {
		return nil, fmt.Errorf("sigv4: sign: %w", err)
	}
	return s.next.RoundTrip(req)
}
